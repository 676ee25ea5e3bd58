"""Shared machinery of the problems trained on a fixed data set with a held-out split.

A minibatch is `batch_size` row numbers of the training split, drawn with replacement from the
generator passed to `batch` (i.i.d. minibatches: no per-run epoch state to keep). Row numbers are
small to stack over R runs; `loss` gathers the rows on the problem's device in one indexing op.
`evaluate` runs over the whole training and held-out splits in chunks, so memory stays bounded for
any number of runs.
"""

from __future__ import annotations

import abc

import numpy as np
import torch
from torch import Tensor

from optarena.problems import _nn
from optarena.problems._checks import check_dtype, check_int

# Activations one evaluation chunk may hold, in elements (2**22 floats = 16 MiB in float32: chunks
# that stay in cache evaluate ~3x faster than 64 MiB ones).
EVAL_BUDGET = 2**22


class SupervisedProblem(abc.ABC):
    """Base class: subclasses set the data with `_set_data` and define `forward` (and `init_params`).

    `forward(params, x)` maps inputs of shape (R, B, ...) to outputs (R, B, ...). Classification by
    softmax cross-entropy is the default; binary problems override `example_loss` and `correct`.
    """

    name: str
    tags: frozenset[str]
    # Cross-entropy starts near log(classes) <= 2.3 here; 100 is reached only by a run that blew up.
    loss_bound: float = 100.0
    default_steps: int
    batch_size: int
    # Elements of activation per example of one run, to size evaluation chunks.
    activation_size: int = 1024

    example_loss = staticmethod(_nn.cross_entropy)
    correct = staticmethod(_nn.class_correct)

    def __init__(self, batch_size: int, dtype: torch.dtype, device: torch.device | str) -> None:
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.dtype = check_dtype(dtype)
        self.device = torch.device(device)

    def _set_data(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> None:
        def tensor(a: np.ndarray) -> Tensor:
            a = torch.tensor(a)  # a copy: the cached source arrays are read-only
            return a.to(self.device, self.dtype if a.is_floating_point() else torch.long)

        self.x_train, self.y_train = tensor(x_train), tensor(y_train)
        self.x_val, self.y_val = tensor(x_val), tensor(y_val)
        self.n_train, self.n_val = len(self.x_train), len(self.x_val)

    @abc.abstractmethod
    def forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """Outputs (R, B, ...) from inputs (R, B, ...)."""

    def batch(self, step: int, generator: torch.Generator) -> tuple[Tensor]:
        """(rows,): LongTensor (batch_size,) of training-split row numbers, on the CPU."""
        return (torch.randint(self.n_train, (self.batch_size,), generator=generator),)

    # The engine may pass one minibatch per distinct seed, (U, B), and each run's row of it (slot).
    accepts_grouped_batches = True

    def loss(self, params: dict[str, Tensor], batch: tuple[Tensor, ...], slot: Tensor | None = None) -> Tensor:
        x, y = self.examples(batch)
        if slot is None:
            return self.example_loss(self.forward(params, x), y).mean(-1)
        y = y.expand(len(slot), -1) if y.shape[0] == 1 else y[slot]
        return self.example_loss(self.forward_grouped(params, x, slot), y).mean(-1)

    def examples(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """(inputs, targets) of a minibatch: `batch` is (rows,), row numbers of the training split,
        or already the pair (inputs, targets) (what a sparse problem's ``restrict`` returns)."""
        if len(batch) == 2:
            return batch[0], batch[1]
        rows = batch[0].to(self.device)
        return self.x_train[rows], self.y_train[rows]

    def forward_grouped(self, params: dict[str, Tensor], x: Tensor, slot: Tensor) -> Tensor:
        """Outputs (R, B, ...) from one input batch per seed, x (U, B, ...); by default each run
        gets its own copy of its seed's batch. Problems override it where sharing pays."""
        return self.forward(params, x.expand(len(slot), *x.shape[1:]) if x.shape[0] == 1 else x[slot])

    def forward_shared(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """Outputs (R, N, ...) of every run on inputs x (N, ...) that all runs share (evaluation);
        by default a stride-0 expand of x. Problems override it where one matrix product pays."""
        runs = next(iter(params.values())).shape[0]
        return self.forward(params, x.expand(runs, *x.shape))

    def evaluate(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        with torch.no_grad():
            train_loss, _ = self._means(params, self.x_train, self.y_train, accuracy=False)
            val_loss, val_accuracy = self._means(params, self.x_val, self.y_val)
        return {"train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_accuracy}

    def _means(self, params: dict[str, Tensor], x: Tensor, y: Tensor, accuracy: bool = True) -> tuple[Tensor, Tensor]:
        """Mean loss and accuracy of every run over all of (x, y), in chunks of examples (`accuracy`
        False: the caller does not need it, a problem may skip it and return None)."""
        runs = next(iter(params.values())).shape[0]
        chunk = max(1, EVAL_BUDGET // (runs * self.activation_size))
        loss_sum = torch.zeros(runs, dtype=self.dtype, device=self.device)
        correct_sum = torch.zeros(runs, dtype=self.dtype, device=self.device)
        for start in range(0, len(x), chunk):
            xs, ys = x[start : start + chunk], y[start : start + chunk]
            out = self.forward_shared(params, xs)
            loss_sum += self.example_loss(out, ys).sum(-1)
            correct_sum += self.correct(out, ys).sum(-1)
        return loss_sum / len(x), correct_sum / len(x)


def stratified_split(labels: np.ndarray, n_val: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified split of row numbers into (train_rows, val_rows), each sorted."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    train_rows, val_rows = train_test_split(rows, test_size=n_val, stratify=labels, random_state=seed)
    return np.sort(train_rows), np.sort(val_rows)
