"""A user's own ``nn.Module`` and data as a Problem, so the engine trains it like a built-in one.

Batched execution. ``init_params(seeds)`` builds one fresh model per seed and stacks their
trainable parameters with ``torch.func.stack_module_state``; buffers (BatchNorm running statistics,
constants) and frozen parameters (``requires_grad=False``) are stacked the same way but kept apart,
never optimised. ``loss`` runs ``vmap(functional_call)`` over the run dimension (params, buffers and
a per-run batch at dim 0; a batch shared by all runs is passed once, unbatched).

Randomness. ``model()`` is called inside ``torch.random.fork_rng()`` after
``torch.manual_seed(seed_generator(seed, "init").initial_seed())``: run r's initial weights depend
on its seed alone, and the caller's global RNG state is left exactly as it was. A model that draws
random numbers in ``forward`` (dropout) gets, at every step, a noise seed drawn from the run's batch
generator; its forward runs under ``fork_rng`` seeded with it, and runs that share a seed (hence
their minibatches) are vmapped together with ``randomness="same"``. So the batched run r equals the
same run alone, dropout masks included.

Buffers updated in place (BatchNorm in training mode) are per-run state outside the parameters the
engine holds: they live here, created by ``init_params`` and found again from the parameters'
storage, so ``loss`` and ``evaluate`` see the buffers of the runs they are given.

Evaluation. "val_loss" is the mean over the whole held-out split; "train_loss" over a fixed subset
of EVAL_TRAIN_ROWS (512) training rows (all of them when fewer), drawn once with seed 0, so that the
~20 evaluations of every run cost the same for any training-set size. Both run in chunks of rows
sized from the model's activations, so memory stays bounded for any number of runs.

Modes. ``loss`` runs the model in training mode, ``evaluate`` in eval mode (dropout off, BatchNorm
on its running statistics), as a user's own loop would.

Fallback. At construction one vmapped forward + backward on a few training rows is checked against
the same computation run one model at a time (training and eval mode). Where vmap cannot serve
(data-dependent control flow, ``.item()``, unsupported ops) or the results differ,
``self.vmappable`` is False, a ``RuntimeWarning`` says once "falling back to one run at a time:
<reason>", and ``loss`` / ``evaluate`` loop over runs with ``functional_call``: the same interface,
so the engine is unchanged.

Data. ``(X, y)`` tensors (or arrays), or a ``torch.utils.data.Dataset`` of ``(x, y)`` pairs,
materialised once into tensors held on ``device``; each split must stay below ``MAX_DATA_BYTES``
(2 GiB). Floating-point inputs and float targets are cast to the model's parameter dtype, integer
targets to int64. Minibatches are ``batch_size`` row numbers drawn with replacement (i.i.d., no
epoch state, as in the built-in problems).

Loss. ``loss(output, target)`` must return the mean over the batch (a scalar), like
``reduction="mean"``. The default is cross-entropy for integer targets (then "val_accuracy" is
reported too) and mean squared error for float targets (an output with as many numbers per row as
the target, e.g. (B, 1) against (B,), is reshaped to the target's shape).

Divergence. ``loss_bound = 100 * |L0| + 1``, where L0 is the seed-0 model's initial loss on up to
256 training rows.

Identity. ``name`` is ``f"{name}-{fingerprint[:10]}"``: the fingerprint hashes the model's
architecture, its classes' source, its seed-0 initial weights, the data, the loss and the batch
size, so a store never hands back results of a model or data set that has since changed.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import math
import traceback
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from optarena.problems._checks import check_int
from optarena.problems.base import seed_generator

MAX_DATA_BYTES = 2**31
# Activations one evaluation chunk may hold, in elements (2**24 floats = 64 MiB in float32).
EVAL_BUDGET = 2**24
DEFAULT_STEPS = 500
DEFAULT_BATCH_SIZE = 128
# train_loss is measured on a fixed subset of this many training rows (all when fewer): evaluation
# runs ~20 times per run, and its cost must not grow with the training set.
EVAL_TRAIN_ROWS = 512
CHECK_ROWS = 8  # rows of the construction-time checks (BatchNorm needs more than one)
BOUND_ROWS = 256  # rows of the initial loss that sets loss_bound
# Per-run buffer states kept at once (one per engine stack in flight; old ones are dropped).
MAX_BUFFER_STATES = 16

LossFn = Callable[[Tensor, Tensor], Tensor]


class UserCodeError(ValueError):
    """The user's model, data or loss failed a check. ``str()`` names the function and the cause;
    ``__cause__`` holds the user's exception (with its traceback) where there is one."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def user_traceback(error: BaseException) -> str:
    """The traceback of `error` without the leading frames of optarena and importlib; "" when no
    frame is left (an error optarena raised itself, already said in the message)."""
    tb = error.__traceback__
    package = __file__.rsplit("problems", 1)[0]
    while tb is not None and (tb.tb_frame.f_code.co_filename.startswith(package)
                              or tb.tb_frame.f_code.co_filename.startswith("<frozen")):
        tb = tb.tb_next
    if tb is None:
        return ""
    return "".join(traceback.format_exception(type(error), error, tb))


def default_loss(output: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy for integer targets, mean squared error for float targets."""
    if not target.is_floating_point():
        return F.cross_entropy(output, target)
    if output.shape != target.shape and output.numel() == target.numel():
        output = output.reshape(target.shape)  # (B, 1) against (B,): the usual regression head
    if output.shape != target.shape:
        raise ValueError(
            f"the output shape {tuple(output.shape)} does not match the target shape {tuple(target.shape)}: "
            "mean squared error needs one output number per target number"
        )
    return F.mse_loss(output, target)


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _shape(t: Tensor) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')}"


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
        first = template.get_parameter(self.param_names[0])
        self.dtype = first.dtype

        train, val = self._splits(data)
        self.x_train, self.y_train = self._as_tensors(train, "train")
        self.x_val, self.y_val = self._as_tensors(val, "val")
        self.n_train, self.n_val = len(self.x_train), len(self.x_val)
        self.classification = not self.y_train.is_floating_point()
        if self.n_train > EVAL_TRAIN_ROWS:
            subset = torch.randperm(self.n_train, generator=torch.Generator().manual_seed(0))[:EVAL_TRAIN_ROWS]
            subset = subset.sort().values.to(self.device)
            self.x_train_eval, self.y_train_eval = self.x_train[subset], self.y_train[subset]
        else:
            self.x_train_eval, self.y_train_eval = self.x_train, self.y_train

        self.batch_size = check_int("batch_size", batch_size, 1) if batch_size is not None else min(DEFAULT_BATCH_SIZE, self.n_train)
        self.default_steps = check_int("steps", steps, 1) if steps is not None else DEFAULT_STEPS

        initial_loss = self._validate(template)
        self.loss_bound = 100.0 * abs(initial_loss) + 1.0
        self._buffer_states: OrderedDict[int, dict[str, Tensor]] = OrderedDict()
        self._check_training_step()
        self._has_buffers = bool(self._stack([template])[1])

        self.stochastic = False
        self.fallback_reason = self._check_vmap()
        self.vmappable = self.fallback_reason is None
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
                raise UserCodeError(f"model() raised {_describe(e)}") from e
        if not isinstance(module, nn.Module):
            raise UserCodeError(f"model() must return a torch.nn.Module, got {type(module).__name__}")
        return module.to(self.device)

    @staticmethod
    def _splits(data: Any) -> tuple[Any, Any]:
        if callable(data) and not isinstance(data, (tuple, list, torch.utils.data.Dataset)):
            try:
                data = data()
            except Exception as e:
                raise UserCodeError(f"data() raised {_describe(e)}") from e
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise UserCodeError(
                "data() must return (train, val), each a tuple (X, y) of tensors or a "
                f"torch.utils.data.Dataset; got {type(data).__name__}"
                + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else "")
            )
        return data[0], data[1]

    def _as_tensors(self, split: Any, which: str) -> tuple[Tensor, Tensor]:
        where = f"data(): the {which} split"
        if isinstance(split, (tuple, list)):
            if len(split) != 2:
                raise UserCodeError(f"{where} must be (X, y), got a {type(split).__name__} of length {len(split)}")
            try:
                x, y = (torch.as_tensor(a) for a in split)
            except Exception as e:
                raise UserCodeError(f"{where}: X and y must be tensors or arrays ({_describe(e)})") from e
        elif hasattr(split, "__getitem__") and hasattr(split, "__len__"):
            x, y = self._materialise(split, where)
        else:
            raise UserCodeError(f"{where} must be (X, y) or a torch.utils.data.Dataset, got {type(split).__name__}")
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y) or len(x) == 0:
            raise UserCodeError(f"{where}: X and y need the same number of rows (>= 1), got X {_shape(x)} and y {_shape(y)}")
        size = x.numel() * x.element_size() + y.numel() * y.element_size()
        if size > MAX_DATA_BYTES:
            raise UserCodeError(f"{where} holds {size / 2**30:.1f} GiB; the limit is {MAX_DATA_BYTES / 2**30:.0f} GiB (pass a subset)")
        x = x.to(self.device)
        if x.is_floating_point():
            x = x.to(self.dtype)
        if y.is_floating_point():
            y = y.to(self.device, self.dtype)
        elif y.dtype == torch.bool:
            y = y.to(self.device, self.dtype)
        else:
            y = y.to(self.device, torch.long)
        return x, y

    @staticmethod
    def _materialise(dataset: Any, where: str) -> tuple[Tensor, Tensor]:
        n = len(dataset)
        if n == 0:
            raise UserCodeError(f"{where} is an empty Dataset")
        xs, ys = [], []
        for i in range(n):
            try:
                item = dataset[i]
                x, y = item
                x, y = torch.as_tensor(x), torch.as_tensor(y)
            except Exception as e:
                raise UserCodeError(f"{where}: Dataset item {i} is not an (x, y) pair of tensors ({_describe(e)})") from e
            if i == 0 and n * (x.numel() * x.element_size() + y.numel() * y.element_size()) > MAX_DATA_BYTES:
                raise UserCodeError(f"{where}: the Dataset would take more than {MAX_DATA_BYTES / 2**30:.0f} GiB in memory (pass a subset)")
            xs.append(x)
            ys.append(y)
        try:
            return torch.stack(xs), torch.stack(ys)
        except Exception as e:
            raise UserCodeError(f"{where}: Dataset items differ in shape ({_describe(e)})") from e

    def _validate(self, template: nn.Module) -> float:
        """One forward and loss on a few training rows: shapes, dtypes and label range checked
        before any training. Returns the initial loss on up to BOUND_ROWS rows (sets loss_bound)."""
        module = copy.deepcopy(template).train()
        rows = min(BOUND_ROWS, self.n_train)
        x, y = self.x_train[:rows], self.y_train[:rows]
        try:
            with torch.random.fork_rng(devices=self._rng_devices), torch.no_grad():
                torch.manual_seed(0)
                output = module(x)
        except Exception as e:
            raise UserCodeError(f"model(X) raised {_describe(e)} on {rows} training rows, X {_shape(x)}") from e
        if not isinstance(output, Tensor):
            raise UserCodeError(f"model(X) must return a Tensor, got {type(output).__name__}")
        what = "loss(output, target)" if self._user_loss is not None else (
            "the default loss (cross-entropy for integer targets)" if self.classification
            else "the default loss (mean squared error for float targets)")
        shapes = f"model output {_shape(output)}, target {_shape(y)}"
        self.has_accuracy = (self.classification and output.ndim >= 2 and output.shape[0] == y.shape[0]
                             and output.shape[2:] == y.shape[1:])
        if self._user_loss is None and self.classification:
            if output.ndim < 2 or output.shape[0] != y.shape[0] or output.shape[2:] != y.shape[1:]:
                raise UserCodeError(f"{what} needs an output of shape (B, classes) for targets (B,): {shapes}")
            classes = output.shape[1]
            low, high = int(self.y_train.min()), int(max(self.y_train.max(), self.y_val.max()))
            if low < 0 or high >= classes:
                raise UserCodeError(f"{what}: labels run from {low} to {high} but the model outputs {classes} classes ({shapes})")
        try:
            with warnings.catch_warnings():
                # torch's silent broadcasting of mismatched shapes (e.g. mse_loss on (B, 1) vs (B,))
                warnings.filterwarnings("error", message=".*target size.*different to the input size.*")
                value = self._loss(output, y)
        except Exception as e:
            raise UserCodeError(f"{what} raised {_describe(e)}; {shapes}") from e
        if not isinstance(value, Tensor) or value.numel() != 1:
            got = _shape(value) if isinstance(value, Tensor) else type(value).__name__
            raise UserCodeError(f"{what} must return a scalar Tensor (the mean over the batch), got {got}; {shapes}")
        value = float(value)
        if not math.isfinite(value):
            raise UserCodeError(f"{what} is {value} for the initial model; {shapes}")
        self._activations_per_row = self._measure_activations(module, x[: min(CHECK_ROWS, rows)])
        return value

    @staticmethod
    def _measure_activations(module: nn.Module, x: Tensor) -> int:
        """Elements of all submodule outputs per row (sizes evaluation chunks)."""
        total = [0]

        def hook(_module, _inputs, output):
            if isinstance(output, Tensor):
                total[0] += output.numel()

        handles = [m.register_forward_hook(hook) for m in module.modules()]
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                module.eval()(x)
        finally:
            for h in handles:
                h.remove()
        return max(1, total[0] // max(1, len(x)))

    def _reference_step(self, params, buffers, x, y, noise_seed: int) -> list[tuple[Tensor, tuple]]:
        """Loss and gradients of each stacked model run alone with functional_call (training mode)."""
        self._module.train()
        reference = []
        for r in range(next(iter(params.values())).shape[0]):
            p = {k: v[r].detach().requires_grad_(True) for k, v in params.items()}
            b = {k: v[r].clone() for k, v in buffers.items()}
            try:
                with self._seeded(noise_seed):
                    value = self._run_loss(p, b, x, y)
                grads = torch.autograd.grad(value, list(p.values()), allow_unused=True)
            except Exception as e:
                raise UserCodeError(f"the training step (model(X), loss, backward) raised {_describe(e)}") from e
            reference.append((value.detach(), grads))
        return reference

    def _check_training_step(self) -> None:
        """Parameters that forward never uses get no gradient: they are frozen (with a warning),
        since the engine differentiates with respect to every trainable parameter."""
        rows = min(CHECK_ROWS, self.n_train)
        params, buffers = self._stack([self._build(0)])
        _, grads = self._reference_step(params, buffers, self.x_train[:rows], self.y_train[:rows], 0)[0]
        unused = [k for k, g in zip(params, grads) if g is None]
        if len(unused) == len(params):
            raise UserCodeError("the loss does not depend on any trainable parameter of the model")
        if unused:
            warnings.warn(f"parameters {unused} are not used by the model's forward pass; they are frozen",
                          RuntimeWarning, stacklevel=3)
            self.param_names = [k for k in self.param_names if k not in unused]

    def _check_vmap(self) -> str | None:
        """None when vmap serves this model (sets `stochastic`), else the reason it cannot."""
        rows = min(CHECK_ROWS, self.n_train)
        x, y = self.x_train[:rows], self.y_train[:rows]
        noise_seed = 12345
        params, buffers = self._stack([self._build(0), self._build(1)])
        reference = self._reference_step(params, buffers, x, y, noise_seed)
        p = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        b = {k: v.clone() for k, v in buffers.items()}
        self._module.train()
        try:
            try:
                losses = vmap(self._run_loss, in_dims=(0, 0, None, None))(p, b, x, y)
            except RuntimeError as e:
                if "randomness" not in str(e):
                    raise
                self.stochastic = True
                b = {k: v.clone() for k, v in buffers.items()}
                with self._seeded(noise_seed):
                    losses = vmap(self._run_loss, in_dims=(0, 0, None, None), randomness="same")(p, b, x, y)
            grads = torch.autograd.grad(losses.sum(), list(p.values()), allow_unused=True)
        except Exception as e:
            return f"vmap cannot run the model's training step ({_describe(e)})"
        for r in range(2):
            if not _close(losses[r], reference[r][0]):
                return f"the vmapped loss differs from the one-model loss ({float(losses[r]):.6g} vs {float(reference[r][0]):.6g})"
            for g, g_ref in zip(grads, reference[r][1]):
                if (g is None) != (g_ref is None) or (g is not None and not _close(g[r], g_ref)):
                    return "the vmapped gradient differs from the one-model gradient"
        self._module.eval()
        try:
            with torch.no_grad():
                outputs = vmap(lambda pp, bb, xx: functional_call(self._module, (pp, bb), (xx,)), in_dims=(0, 0, None))(params, buffers, x)
                for r in range(2):
                    alone = functional_call(self._module, ({k: v[r] for k, v in params.items()}, {k: v[r] for k, v in buffers.items()}), (x,))
                    if not _close(outputs[r], alone):
                        return "the vmapped eval-mode output differs from the one-model output"
        except Exception as e:
            return f"vmap cannot run the model in eval mode ({_describe(e)})"
        return None

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
        for t in (self.x_train, self.y_train, self.x_val, self.y_val):
            tensor(t)
        return h.hexdigest()

    # ---- the Problem protocol ----

    def init_params(self, seeds: Tensor) -> dict[str, Tensor]:
        seed_list = torch.as_tensor(seeds).reshape(-1).tolist()
        if not seed_list:
            raise ValueError("seeds must hold at least one seed, got an empty tensor")
        params, buffers = self._stack([self._build(int(s)) for s in seed_list])
        params = {k: v.detach() for k, v in params.items()}
        if buffers:
            self._buffer_states[self._state_key(params)] = buffers
            while len(self._buffer_states) > MAX_BUFFER_STATES:
                self._buffer_states.popitem(last=False)
        return params

    def batch(self, step: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(rows (batch_size,), noise (1,)): training-row numbers with replacement, and the seed of
        the forward pass's own random draws (dropout) at this step; both on the CPU."""
        rows = torch.randint(self.n_train, (self.batch_size,), generator=generator)
        noise = torch.randint(2**62, (1,), generator=generator)
        return rows, noise

    def loss(self, params: dict[str, Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
        rows, noise = batch[0].to(self.device), batch[1]
        buffers = self._buffers(params)
        self._module.train()
        if not self.vmappable:
            losses = []
            for r in range(rows.shape[0]):
                p = {k: v[r] for k, v in params.items()}
                b = {k: v[r] for k, v in buffers.items()}  # views: in-place updates reach the state
                with self._seeded(int(noise[r, 0])):
                    losses.append(self._run_loss(p, b, self.x_train[rows[r]], self.y_train[rows[r]]))
            return torch.stack(losses)
        if not self.stochastic:
            if rows.shape[0] == 1 or rows.stride(0) == 0:  # one batch shared by all runs
                x, y, dim = self.x_train[rows[0]], self.y_train[rows[0]], None
            else:
                x, y, dim = self.x_train[rows], self.y_train[rows], 0
            return vmap(self._run_loss, in_dims=(0, 0, dim, dim))(params, buffers, x, y)
        return self._grouped_loss(params, buffers, rows, noise[:, 0].tolist())

    def _grouped_loss(self, params, buffers, rows: Tensor, noise: list[int]) -> Tensor:
        """Runs that share a noise seed share their batch: one vmap(randomness="same") per seed."""
        groups: dict[int, list[int]] = {}
        for r, s in enumerate(noise):
            groups.setdefault(int(s), []).append(r)
        parts, order = [], []
        for s, members in groups.items():
            whole = len(groups) == 1
            idx = torch.tensor(members, device=self.device)
            p = params if whole else {k: v[idx] for k, v in params.items()}
            b = buffers if whole else {k: v[idx] for k, v in buffers.items()}
            r0 = rows[members[0]]
            with self._seeded(s):
                parts.append(vmap(self._run_loss, in_dims=(0, 0, None, None), randomness="same")(p, b, self.x_train[r0], self.y_train[r0]))
            if not whole:
                with torch.no_grad():
                    for k in buffers:
                        buffers[k][idx] = b[k]
            order.extend(members)
        losses = torch.cat(parts)
        return losses[torch.argsort(torch.tensor(order, device=losses.device))]

    def evaluate(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        buffers = self._buffers(params)
        self._module.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=self._rng_devices):
            torch.manual_seed(0)
            train_loss, _ = self._means(params, buffers, self.x_train_eval, self.y_train_eval)
            val_loss, val_accuracy = self._means(params, buffers, self.x_val, self.y_val)
        out = {"train_loss": train_loss, "val_loss": val_loss}
        if self.has_accuracy:
            out["val_accuracy"] = val_accuracy
        return out

    def _means(self, params, buffers, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
        """Mean loss (and accuracy) of every run over all of (x, y), in chunks of rows."""
        runs = next(iter(params.values())).shape[0]
        chunk = max(1, EVAL_BUDGET // (runs * self._activations_per_row))
        loss_sum = torch.zeros(runs, dtype=torch.float64, device=self.device)
        correct_sum = torch.zeros(runs, dtype=torch.float64, device=self.device)
        for start in range(0, len(x), chunk):
            xs, ys = x[start:start + chunk], y[start:start + chunk]
            if self.vmappable:
                loss, correct = vmap(self._run_metrics, in_dims=(0, 0, None, None))(params, buffers, xs, ys)
            else:
                pairs = [self._run_metrics({k: v[r] for k, v in params.items()}, {k: v[r] for k, v in buffers.items()}, xs, ys)
                         for r in range(runs)]
                loss, correct = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
            loss_sum += loss.to(torch.float64) * len(xs)
            correct_sum += correct.to(torch.float64)
        accuracy = correct_sum / len(x) if self.has_accuracy else None
        return (loss_sum / len(x)).to(self.dtype), None if accuracy is None else accuracy.to(self.dtype)

    # ---- pieces ----

    def _run_loss(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return self._loss(functional_call(self._module, (params, buffers), (x,)), y).reshape(())

    def _run_metrics(self, params, buffers, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        output = functional_call(self._module, (params, buffers), (x,))
        loss = self._loss(output, y).reshape(())
        if self.has_accuracy:
            correct = (output.argmax(1) == y).sum().to(loss.dtype) / max(1, y[0].numel())
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

    @staticmethod
    def _state_key(params: dict[str, Tensor]) -> int:
        # The engine detaches the returned tensors (same storage) and updates them in place.
        return next(iter(params.values())).untyped_storage().data_ptr()

    def _buffers(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """The per-run buffers of the runs holding `params` (see the module docstring)."""
        if not self._has_buffers:
            return {}
        key = self._state_key(params)
        state = self._buffer_states.get(key)
        runs = next(iter(params.values())).shape[0]
        if state is None or next(iter(state.values()), torch.empty(runs)).shape[0] != runs:
            # Parameters that did not come from init_params: start from seed 0's buffers.
            _, initial = self._stack([self._build(0)])
            state = {k: v.expand(runs, *v.shape[1:]).clone() for k, v in initial.items()}
            self._buffer_states[key] = state
        self._buffer_states.move_to_end(key)
        return state

    @contextmanager
    def _seeded(self, seed: int) -> Iterator[None]:
        """The global RNG seeded for one forward pass; the caller's RNG state restored after."""
        with torch.random.fork_rng(devices=self._rng_devices):
            torch.manual_seed(int(seed))
            yield


def _close(a: Tensor, b: Tensor) -> bool:
    return bool(torch.allclose(a.detach(), b.detach(), rtol=1e-4, atol=1e-6, equal_nan=True))


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return getattr(obj, "__qualname__", repr(obj))
