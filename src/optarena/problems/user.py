"""A user's own ``nn.Module`` and data as a Problem, so the engine trains it like a built-in one.

The pieces: `user_data` reads and checks the data, `user_loss` holds the default loss and the
output tensor it reads, `user_ops` the batchable stand-ins of the ops vmap cannot batch,
`user_vmap` names what keeps a model from being vmapped, `user_checks` runs the checks of the model,
loss and data at construction, `user_exec` the two ways of running the stacked models (batched or
one run at a time); this module builds the models, chooses the way to run them and implements the
Problem protocol.

Models. ``model()`` returns a fresh ``nn.Module``. Its inputs X are a tensor, a tuple of tensors
(``model(*X)``) or a dict of tensors (``model(**X)``); its output a Tensor, a tuple / list or a dict
(see `user_loss`: the user's loss receives the output as returned; the default loss and the accuracy
read ``output["logits"]`` of a dict, else the first tensor).

Batched execution. ``init_params(seeds)`` builds one fresh model per seed and stacks their
trainable parameters with ``torch.func.stack_module_state``; ``init_buffers(seeds)`` stacks the
buffers (BatchNorm running statistics, constants) and the frozen parameters (``requires_grad=False``)
the same way: the engine carries them beside the parameters and passes them to ``loss`` (which
updates them in place, as BatchNorm does in training mode) and ``evaluate``; they are never
optimised. ``loss`` runs ``vmap(functional_call)`` over the run dimension (params, buffers, the
run's noise key and a per-run batch at dim 0; a batch shared by all runs is passed once, unbatched).
Every forward pass, batched or alone, runs under `user_ops.BatchableOps`: dropout (attention
dropout included) draws its masks from a hash of the run's noise key, so one vmap serves runs of
different seeds and run r's masks equal those of the same run alone; attention, GRU / LSTM / RNN
and sparse embeddings run as batchable ops (sparse embeddings with dense gradients: the values of
the sparse gradient on the rows a batch touched, zeros elsewhere).

Randomness. ``model()`` is called inside ``torch.random.fork_rng()`` after
``torch.manual_seed(seed_generator(seed, "init").initial_seed())``: run r's initial weights depend
on its seed alone, and the caller's global RNG state is left exactly as it was. At every step the
run's batch generator also draws a noise seed: the key of its dropout masks, and the seed of torch's
global RNG for any other random draw in ``forward`` (``torch.randn``, ``Dropout2d``, ...). A model
with such draws is ``stochastic``: runs that share a noise seed (hence a run seed) are vmapped
together with ``randomness="same"``, one vmap per seed. So the batched run r equals the same run
alone, random draws included.

Evaluation. "val_loss" is the mean over the whole held-out split; "train_loss" over a fixed subset
of EVAL_TRAIN_ROWS (512) training rows (all of them when fewer), drawn once with seed 0, so that the
~20 evaluations of every run cost the same for any training-set size. Both run in chunks of rows
sized from the model's activations, so memory stays bounded for any number of runs.

Modes. ``loss`` runs the model in training mode, ``evaluate`` in eval mode (dropout off, BatchNorm
on its running statistics), as a user's own loop would.

Checks before any run (`UserCodeError` naming the function or split and the cause): the data of
both splits on every row (`user_data`: finite values, matching structure and target dtypes, labels
in range for the model's classes); one forward and loss on a few training rows (shapes, a scalar,
finite loss); the initial model's loss on the whole validation split (finite). A batch size larger
than the training split is a warning (minibatches then repeat rows).

Fallback. At construction one vmapped forward + backward on a few training rows is checked against
the same computation run one model at a time (training and eval mode). Where vmap cannot serve
(data-dependent control flow, ``.item()``, an op without a batching rule) or the results differ,
``self.vmappable`` is False, a ``RuntimeWarning`` says once "falling back to one run at a time:
<reason>", the reason naming the layer ("nn.GRU at encoder.rnn is not vmappable: ...", "attention
dropout in encoder.layers.0.self_attn: ..."), and ``loss`` / ``evaluate`` loop over runs with
``functional_call``: the same interface, so the engine is unchanged. Ops that vmap serves only by
running them once per run (no batching rule; torch's "performance drop" warning) are listed in
``looped_ops`` instead of warned about.

Data. See `user_data`: each split below ``MAX_DATA_BYTES`` (2 GiB), held on ``device``.
Minibatches are ``batch_size`` row numbers drawn with replacement (i.i.d., no epoch state, as in the
built-in problems).

Loss. ``loss(output, target)`` must return the mean over the batch (a scalar), like
``reduction="mean"``. The default is cross-entropy for integer targets (then "val_accuracy" is
reported too) and mean squared error for float targets (an output with as many numbers per row as
the target, e.g. (B, 1) against (B,), is reshaped to the target's shape).

Divergence. ``loss_bound = 100 * |L0| + 1``, where L0 is the seed-0 model's initial loss on up to
256 training rows.

Identity. ``name`` is ``f"{name}-{fingerprint[:10]}"``: the fingerprint hashes the model's
architecture, its classes' source, its seed-0 initial weights, the data, the loss, the batch size
and the version of the batchable ops, so a store never hands back results of a model, data set or
execution that has since changed.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from optarena.problems._checks import check_int
from optarena.problems.base import seed_generator
from optarena.problems.user_checks import check_training_step, check_vmap, validate
from optarena.problems.user_data import (
    MAX_DATA_BYTES,
    Inputs,
    call_args,
    check_finite,
    check_same_kind,
    n_rows,
    named_leaves,
    read_split,
    take,
)
from optarena.problems.user_errors import UserCodeError, describe, user_traceback
from optarena.problems.user_exec import EVAL_BUDGET, Batched, Execution, OneAtATime
from optarena.problems.user_loss import default_loss, primary_output
from optarena.problems.user_ops import BatchableOps

__all__ = ["UserProblem", "UserCodeError", "user_traceback", "default_loss", "primary_output", "MAX_DATA_BYTES"]

DEFAULT_STEPS = 500
DEFAULT_BATCH_SIZE = 128
# train_loss is measured on a fixed subset of this many training rows (all when fewer): evaluation
# runs ~20 times per run, and its cost must not grow with the training set.
EVAL_TRAIN_ROWS = 512
OPS_VERSION = "batchable-ops-1"  # part of the fingerprint: how dropout, attention, RNNs are computed

LossFn = Callable[[Any, Tensor], Tensor]


class UserProblem:
    """The Problem protocol (see `optarena.problems.base`) for ``model_fn() -> nn.Module`` and data.

    ``data`` is ``(train, val)``, each ``(X, y)`` or a Dataset of ``(x, y)`` pairs (or a
    function returning that pair). Bad input raises ``UserCodeError`` naming the function and
    the cause, with the user's exception as ``__cause__``.
    """

    tags = frozenset({"user"})

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        data: Any,
        loss: LossFn | None = None,
        batch_size: int | None = None,
        steps: int | None = None,
        name: str = "user",
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(model_fn, nn.Module) or not callable(model_fn):
            raise UserCodeError(
                f"model must be a function that returns a fresh nn.Module (e.g. model=lambda: Net()), "
                f"got {type(model_fn).__name__}"
            )
        if loss is not None and not callable(loss):
            raise UserCodeError(f"loss must be a function loss(output, target) -> Tensor, got {type(loss).__name__}")
        self.model_fn = model_fn
        self.device = torch.device(device)
        self._rng_devices = [self.device] if self.device.type == "cuda" else []
        self._user_loss = loss
        self._loss: LossFn = loss if loss is not None else default_loss
        self.loss_name = getattr(loss, "__name__", type(loss).__name__) if loss is not None else "default"

        template = self._build(0)
        self._module = copy.deepcopy(template)
        trainable = {k for k, p in template.named_parameters() if p.requires_grad}
        if not trainable:
            raise UserCodeError("model() returned a module with no trainable parameters")
        self.param_names = [k for k, _ in template.named_parameters() if k in trainable]
        self.dtype = template.get_parameter(self.param_names[0]).dtype

        train, val = self._splits(data)
        self.x_train, self.y_train = read_split(train, "train", self.dtype, self.device)
        self.x_val, self.y_val = read_split(val, "val", self.dtype, self.device)
        check_same_kind((self.x_train, self.y_train), (self.x_val, self.y_val))
        check_finite(self.x_train, self.y_train, "train")
        check_finite(self.x_val, self.y_val, "val")
        self.n_train, self.n_val = n_rows(self.x_train), n_rows(self.x_val)
        self.classification = not self.y_train.is_floating_point()
        if self.n_train > EVAL_TRAIN_ROWS:
            subset = torch.randperm(self.n_train, generator=torch.Generator().manual_seed(0))[:EVAL_TRAIN_ROWS]
            subset = subset.sort().values.to(self.device)
            self.x_train_eval, self.y_train_eval = take(self.x_train, subset), self.y_train[subset]
        else:
            self.x_train_eval, self.y_train_eval = self.x_train, self.y_train

        self.batch_size = check_int("batch_size", batch_size, 1) if batch_size is not None else min(DEFAULT_BATCH_SIZE, self.n_train)
        if self.batch_size > self.n_train:
            warnings.warn(f"batch_size {self.batch_size} is larger than the training split ({self.n_train} rows): "
                          f"minibatches draw rows with replacement, so every one repeats rows; "
                          f"use batch_size <= {self.n_train}", RuntimeWarning, stacklevel=2)
        self.default_steps = check_int("steps", steps, 1) if steps is not None else DEFAULT_STEPS

        initial_loss, self.has_accuracy, self._activations_per_row = validate(self, template)
        self.loss_bound = 100.0 * abs(initial_loss) + 1.0
        self.param_names = check_training_step(self)
        self._has_buffers = bool(self._stack([template])[1])
        self._built: tuple[list[int], dict[str, Tensor]] | None = None  # buffers of the last init_params

        # looped_ops: the ops vmap serves only by running them once per run (no batching rule)
        self.fallback_reason, self.stochastic, self.looped_ops = check_vmap(self)
        self.vmappable = self.fallback_reason is None
        self._execution: Execution = Batched(self) if self.vmappable else OneAtATime(self)
        self.fingerprint = self._fingerprint(template)
        self.n_parameters = sum(template.get_parameter(k).numel() for k in self.param_names)
        self.name = f"{name}-{self.fingerprint[:10]}"
        if not self.vmappable:
            warnings.warn(f"{self.name}: falling back to one run at a time: {self.fallback_reason}",
                          RuntimeWarning, stacklevel=2)

    # ---- construction ----

    def _build(self, seed: int) -> nn.Module:
        """model_fn() with the global RNG seeded from `seed` inside fork_rng (the caller's state is kept)."""
        with torch.random.fork_rng(devices=self._rng_devices):
            torch.manual_seed(seed_generator(seed, "init").initial_seed())
            try:
                module = self.model_fn()
            except Exception as e:
                raise UserCodeError(f"model() raised {describe(e)}") from e
        if not isinstance(module, nn.Module):
            raise UserCodeError(f"model() must return a torch.nn.Module, got {type(module).__name__}")
        return module.to(self.device)

    @staticmethod
    def _splits(data: Any) -> tuple[Any, Any]:
        if callable(data) and not isinstance(data, (tuple, list, torch.utils.data.Dataset)):
            try:
                data = data()
            except Exception as e:
                raise UserCodeError(f"data() raised {describe(e)}") from e
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise UserCodeError(
                "data() must return (train, val), each a tuple (X, y) of tensors or a "
                f"torch.utils.data.Dataset; got {type(data).__name__}"
                + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else "")
            )
        return data[0], data[1]

    def _fingerprint(self, template: nn.Module) -> str:
        h = hashlib.blake2b(digest_size=16)

        def text(s: str) -> None:
            h.update(s.encode())
            h.update(b"\0")

        def tensor(t: Tensor) -> None:
            text(f"{tuple(t.shape)}{t.dtype}")
            h.update(t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())

        text(repr(template))
        for cls in sorted({type(m) for m in template.modules()}, key=lambda c: c.__qualname__):
            if not cls.__module__.startswith("torch."):
                text(_source(cls))
        for k, v in template.state_dict().items():
            text(k)
            tensor(v)
        text(_source(self._user_loss) if self._user_loss is not None else "default_loss")
        text(str(self.batch_size))
        text(OPS_VERSION)
        for x, y in ((self.x_train, self.y_train), (self.x_val, self.y_val)):
            for leaf_name, t in named_leaves(x):
                if not isinstance(x, Tensor):
                    text(leaf_name)
                tensor(t)
            tensor(y)
        return h.hexdigest()

    # ---- the Problem protocol ----

    def init_params(self, seeds: Tensor) -> dict[str, Tensor]:
        seed_list = self._seed_list(seeds)
        params, buffers = self._stack([self._build(s) for s in seed_list])
        self._built = (seed_list, buffers) if buffers else None
        return {k: v.detach() for k, v in params.items()}

    def init_buffers(self, seeds: Tensor) -> dict[str, Tensor]:
        """The runs' buffers and frozen parameters, stacked (see the module docstring)."""
        seed_list = self._seed_list(seeds)
        if not self._has_buffers:
            return {}
        built, self._built = self._built, None
        if built is not None and built[0] == seed_list:
            return {k: v.clone() for k, v in built[1].items()}
        return self._stack([self._build(s) for s in seed_list])[1]

    def batch(self, step: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(rows (batch_size,), noise (1,)): training-row numbers with replacement, and the noise seed
        of the forward pass (the key of its dropout masks, the seed of other draws) at this step;
        both on the CPU."""
        rows = torch.randint(self.n_train, (self.batch_size,), generator=generator)
        noise = torch.randint(2**62, (1,), generator=generator)
        return rows, noise

    def loss(self, params: dict[str, Tensor], batch: tuple[Tensor, Tensor],
             buffers: dict[str, Tensor] | None = None) -> Tensor:
        """Each run's mean loss on its minibatch; `buffers` (from init_buffers) are updated in place.
        Without them every call starts from seed 0's initial buffers."""
        rows, noise = batch[0].to(self.device), batch[1].to(self.device)
        runs = rows.shape[0]
        buffers = self._initial_buffers(runs) if buffers is None else buffers
        keys = noise[:, 0]
        self._module.train()
        return self._execution.losses(params, buffers, rows, keys)

    def evaluate(self, params: dict[str, Tensor], buffers: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        runs = next(iter(params.values())).shape[0]
        buffers = self._initial_buffers(runs) if buffers is None else buffers
        self._module.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=self._rng_devices):
            torch.manual_seed(0)
            train_loss, _ = self._means(params, buffers, self.x_train_eval, self.y_train_eval)
            val_loss, val_accuracy = self._means(params, buffers, self.x_val, self.y_val)
        out = {"train_loss": train_loss, "val_loss": val_loss}
        if self.has_accuracy:
            out["val_accuracy"] = val_accuracy
        return out

    def _means(self, params, buffers, x: Inputs, y: Tensor) -> tuple[Tensor, Tensor | None]:
        """Mean loss (and accuracy) of every run over all of (x, y), in chunks of rows."""
        runs = next(iter(params.values())).shape[0]
        rows = n_rows(x)
        chunk = max(1, EVAL_BUDGET // (runs * self._activations_per_row))
        loss_sum = torch.zeros(runs, dtype=torch.float64, device=self.device)
        correct_sum = torch.zeros(runs, dtype=torch.float64, device=self.device)
        for start in range(0, rows, chunk):
            xs, ys = take(x, slice(start, start + chunk)), y[start:start + chunk]
            loss, correct = self._execution.metrics(params, buffers, xs, ys)
            loss_sum += loss.to(torch.float64) * len(ys)
            correct_sum += correct.to(torch.float64)
        accuracy = correct_sum / rows if self.has_accuracy else None
        return (loss_sum / rows).to(self.dtype), None if accuracy is None else accuracy.to(self.dtype)

    # ---- pieces ----

    def _forward(self, params: dict[str, Tensor], buffers: dict[str, Tensor], key: Tensor | None, x: Inputs) -> Any:
        args, kwargs = call_args(x)
        with BatchableOps(key):
            return functional_call(self._module, (params, buffers), args, kwargs)

    def _run_loss(self, params, buffers, key: Tensor | None, x: Inputs, y: Tensor) -> Tensor:
        return self._loss(self._forward(params, buffers, key, x), y).reshape(())

    def _run_primary(self, params, buffers, x: Inputs) -> Tensor:
        return primary_output(self._forward(params, buffers, None, x))

    def _run_metrics(self, params, buffers, x: Inputs, y: Tensor) -> tuple[Tensor, Tensor]:
        output = self._forward(params, buffers, None, x)
        loss = self._loss(output, y).reshape(())
        if self.has_accuracy:
            correct = (primary_output(output).argmax(1) == y).sum().to(loss.dtype) / max(1, y[0].numel())
        else:
            correct = torch.zeros((), dtype=loss.dtype, device=loss.device)
        return loss, correct

    def _stack(self, modules: list[nn.Module]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Stacked trainable parameters, and stacked buffers plus frozen parameters (never optimised)."""
        params, buffers = stack_module_state(modules)
        trainable = set(self.param_names)
        frozen = {k: v.detach() for k, v in params.items() if k not in trainable}
        params = {k: params[k] for k in self.param_names}
        return params, {**{k: v.detach() for k, v in buffers.items()}, **frozen}

    def _initial_buffers(self, runs: int) -> dict[str, Tensor]:
        """Seed 0's initial buffers for `runs` runs (for calls that pass none)."""
        if not self._has_buffers:
            return {}
        _, initial = self._stack([self._build(0)])
        return {k: v.expand(runs, *v.shape[1:]).clone() for k, v in initial.items()}

    @staticmethod
    def _seed_list(seeds: Tensor) -> list[int]:
        seed_list = [int(s) for s in torch.as_tensor(seeds).reshape(-1).tolist()]
        if not seed_list:
            raise ValueError("seeds must hold at least one seed, got an empty tensor")
        return seed_list

    @contextmanager
    def _seeded(self, seed: int) -> Iterator[None]:
        """The global RNG seeded for one forward pass; the caller's RNG state restored after."""
        with torch.random.fork_rng(devices=self._rng_devices):
            torch.manual_seed(int(seed))
            yield


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return getattr(obj, "__qualname__", repr(obj))
