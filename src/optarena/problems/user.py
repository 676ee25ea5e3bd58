"""A user's own ``nn.Module`` and data as a Problem, so the engine trains it like a built-in one.

The pieces: `user_data` reads and checks the data, `user_loss` holds the default loss and the
output tensor it reads, `user_ops` the batchable stand-ins of the ops vmap cannot batch,
`user_vmap` names what keeps a model from being vmapped; this module runs the model, batched or one
run at a time.

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
import math
import re
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from optarena.problems._checks import check_int
from optarena.problems.base import seed_generator
from optarena.problems.user_data import (
    MAX_DATA_BYTES,
    Inputs,
    call_args,
    call_text,
    check_finite,
    check_labels,
    check_same_kind,
    describe_inputs,
    n_rows,
    named_leaves,
    read_split,
    take,
)
from optarena.problems.user_errors import UserCodeError, describe, shape, user_traceback
from optarena.problems.user_loss import default_loss, primary_output
from optarena.problems.user_ops import BatchableOps
from optarena.problems.user_vmap import Watch, attention_with_dropout, is_randomness_error, largest_difference, layer

__all__ = ["UserProblem", "UserCodeError", "user_traceback", "default_loss", "primary_output", "MAX_DATA_BYTES"]

# Activations one evaluation chunk may hold, in elements (2**24 floats = 64 MiB in float32).
EVAL_BUDGET = 2**24
DEFAULT_STEPS = 500
DEFAULT_BATCH_SIZE = 128
# train_loss is measured on a fixed subset of this many training rows (all when fewer): evaluation
# runs ~20 times per run, and its cost must not grow with the training set.
EVAL_TRAIN_ROWS = 512
CHECK_ROWS = 8  # rows of the construction-time checks (BatchNorm needs more than one)
BOUND_ROWS = 256  # rows of the initial loss that sets loss_bound
OPS_VERSION = "batchable-ops-1"  # part of the fingerprint: how dropout, attention, RNNs are computed
CHECK_KEYS = (12345, 67890)  # noise keys of the two runs of the construction-time vmap check

LossFn = Callable[[Any, Tensor], Tensor]


class _NotVmappable(Exception):
    """Why vmap cannot serve the model (a sentence naming the layer or op)."""


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

        initial_loss = self._validate(template)
        self.loss_bound = 100.0 * abs(initial_loss) + 1.0
        self._check_training_step()
        self._has_buffers = bool(self._stack([template])[1])
        self._built: tuple[list[int], dict[str, Tensor]] | None = None  # buffers of the last init_params

        self.stochastic = False
        self.looped_ops: list[str] = []  # ops vmap runs once per run (no batching rule), if it serves
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.fallback_reason = self._check_vmap()
        self._sort_check_warnings(caught)
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

    def _validate(self, template: nn.Module) -> float:
        """One forward and loss on a few training rows: shapes, dtypes and label range (of both
        splits) checked before any training; then the initial loss on the whole validation split.
        Returns the initial loss on up to BOUND_ROWS training rows (sets loss_bound)."""
        module = copy.deepcopy(template).train()
        rows = min(BOUND_ROWS, self.n_train)
        x, y = take(self.x_train, slice(0, rows)), self.y_train[:rows]
        call = call_text(x)
        try:
            with torch.random.fork_rng(devices=self._rng_devices), torch.no_grad():
                torch.manual_seed(0)
                output = _call(module, x)
        except Exception as e:
            raise UserCodeError(f"{call} raised {describe(e)} on {rows} training rows, {describe_inputs(x)}") from e
        try:
            primary = primary_output(output)
        except TypeError as e:
            raise UserCodeError(f"{call} must return a Tensor, a tuple / list or a dict of tensors (the default "
                                f"loss reads output['logits'], else the first tensor): {e}") from e
        what = "loss(output, target)" if self._user_loss is not None else (
            "the default loss (cross-entropy for integer targets)" if self.classification
            else "the default loss (mean squared error for float targets)")
        shapes = f"model output {shape(primary)}, target {shape(y)}"
        self.has_accuracy = (self.classification and primary.ndim >= 2 and primary.shape[0] == y.shape[0]
                             and primary.shape[2:] == y.shape[1:])
        if self._user_loss is None and self.classification:
            if not self.has_accuracy:
                raise UserCodeError(f"{what} needs an output of shape (B, classes) for targets (B,): {shapes}")
            classes = primary.shape[1]
            check_labels(self.y_train, classes, "train", what)
            check_labels(self.y_val, classes, "val", what)
        try:
            with warnings.catch_warnings():
                # torch's silent broadcasting of mismatched shapes (e.g. mse_loss on (B, 1) vs (B,))
                warnings.filterwarnings("error", message=".*target size.*different to the input size.*")
                value = self._loss(output, y)
        except Exception as e:
            raise UserCodeError(f"{what} raised {describe(e)}; {shapes}") from e
        if not isinstance(value, Tensor) or value.numel() != 1:
            got = shape(value) if isinstance(value, Tensor) else type(value).__name__
            raise UserCodeError(f"{what} must return a scalar Tensor (the mean over the batch), got {got}; {shapes}")
        value = float(value)
        if not math.isfinite(value):
            raise UserCodeError(f"{what} is {value} for the initial model; {shapes}")
        self._activations_per_row = self._measure_activations(module, take(x, slice(0, CHECK_ROWS)))
        self._check_validation_loss(module, what)
        return value

    def _check_validation_loss(self, module: nn.Module, what: str) -> None:
        """The initial model's loss on every row of the validation split (eval mode) is finite."""
        module.eval()
        chunk = max(1, EVAL_BUDGET // self._activations_per_row)
        with torch.random.fork_rng(devices=self._rng_devices), torch.no_grad():
            torch.manual_seed(0)
            for start in range(0, self.n_val, chunk):
                stop = min(start + chunk, self.n_val)
                where = f"data(): the val split, rows {start} to {stop - 1}"
                try:
                    value = float(self._loss(_call(module, take(self.x_val, slice(start, stop))), self.y_val[start:stop]))
                except Exception as e:
                    raise UserCodeError(f"{where}: {what} raised {describe(e)} for the initial model") from e
                if not math.isfinite(value):
                    raise UserCodeError(f"{where}: {what} is {value} for the initial model")

    @staticmethod
    def _measure_activations(module: nn.Module, x: Inputs) -> int:
        """Elements of all submodule outputs per row (sizes evaluation chunks)."""
        total = [0]

        def hook(_module, _inputs, output):
            total[0] += sum(t.numel() for t in torch.utils._pytree.tree_leaves(output) if isinstance(t, Tensor))

        handles = [m.register_forward_hook(hook) for m in module.modules()]
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                _call(module.eval(), x)
        finally:
            for h in handles:
                h.remove()
        return max(1, total[0] // max(1, n_rows(x)))

    def _check_rows(self) -> tuple[Inputs, Tensor]:
        rows = min(CHECK_ROWS, self.n_train)
        return take(self.x_train, slice(0, rows)), self.y_train[:rows]

    def _sort_check_warnings(self, caught: list[warnings.WarningMessage]) -> None:
        """vmap's "performance drop" warnings of the check (an op without a batching rule, which vmap
        runs once per run: correct but slow) become `looped_ops`; every other warning is passed on."""
        for w in caught:
            found = re.search(r"batching rule for (\S+?)\.", str(w.message))
            if found and "performance drop" in str(w.message):
                if found.group(1) not in self.looped_ops:
                    self.looped_ops.append(found.group(1))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def _reference_step(self, params, buffers, keys: Tensor, x, y) -> list[tuple[Tensor, tuple]]:
        """Loss and gradients of each stacked model run alone with functional_call (training mode)."""
        self._module.train()
        reference = []
        for r in range(next(iter(params.values())).shape[0]):
            p = {k: v[r].detach().requires_grad_(True) for k, v in params.items()}
            b = {k: v[r].clone() for k, v in buffers.items()}
            try:
                with self._seeded(int(keys[r])):
                    value = self._run_loss(p, b, keys[r], x, y)
                grads = torch.autograd.grad(value, list(p.values()), allow_unused=True)
            except Exception as e:
                raise UserCodeError(f"the training step ({call_text(x)}, loss, backward) raised {describe(e)}") from e
            reference.append((value.detach(), grads))
        return reference

    def _check_training_step(self) -> None:
        """Parameters that forward never uses get no gradient: they are frozen (with a warning),
        since the engine differentiates with respect to every trainable parameter."""
        x, y = self._check_rows()
        params, buffers = self._stack([self._build(0)])
        _, grads = self._reference_step(params, buffers, torch.tensor(CHECK_KEYS[:1], device=self.device), x, y)[0]
        unused = [k for k, g in zip(params, grads) if g is None]
        if len(unused) == len(params):
            raise UserCodeError("the loss does not depend on any trainable parameter of the model")
        if unused:
            warnings.warn(f"parameters {unused} are not used by the model's forward pass; they are frozen",
                          RuntimeWarning, stacklevel=3)
            self.param_names = [k for k in self.param_names if k not in unused]

    def _check_vmap(self) -> str | None:
        """None when vmap serves this model (sets `stochastic`), else the reason it cannot."""
        x, y = self._check_rows()
        params, buffers = self._stack([self._build(0), self._build(1)])
        keys = torch.tensor(CHECK_KEYS, device=self.device)
        try:
            try:
                reference = self._reference_step(params, buffers, keys, x, y)
                losses, grads = self._vmapped_step(params, buffers, keys, x, y)
            except _DrawsGlobalRandomness:
                # Runs of one seed share their noise seed: the reference draws the same numbers twice.
                self.stochastic = True
                keys = keys[:1].expand(2)
                reference = self._reference_step(params, buffers, keys, x, y)
                losses, grads = self._vmapped_step(params, buffers, keys, x, y)
            for r in range(2):
                if not _close(losses[r], reference[r][0]):
                    raise _NotVmappable(self._explain_difference(params, buffers, keys, x, training=True)
                                        or f"the loss function gives a different value under vmap "
                                           f"({float(losses[r]):.6g} vs {float(reference[r][0]):.6g})")
                for g, g_ref in zip(grads, reference[r][1]):
                    if (g is None) != (g_ref is None) or (g is not None and not _close(g[r], g_ref)):
                        raise _NotVmappable("the vmapped gradient differs from the one-model gradient")
            self._check_eval_mode(params, buffers, x)
        except _NotVmappable as e:
            return str(e)
        return None

    def _vmapped_step(self, params, buffers, keys: Tensor, x, y) -> tuple[Tensor, tuple]:
        """The training step of both runs in one vmap; _NotVmappable naming the layer where it fails."""
        p = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        b = {k: v.clone() for k, v in buffers.items()}
        self._module.train()
        with Watch(self._module) as watch:
            try:
                if self.stochastic:
                    with self._seeded(int(keys[0])):
                        losses = vmap(self._run_loss, in_dims=(0, 0, None, None, None), randomness="same")(p, b, keys[0], x, y)
                else:
                    losses = vmap(self._run_loss, in_dims=(0, 0, 0, None, None))(p, b, keys, x, y)
            except Exception as e:
                if not self.stochastic and is_randomness_error(e):
                    raise _DrawsGlobalRandomness() from e
                raise _NotVmappable(self._where(watch, e)) from e
        try:
            grads = torch.autograd.grad(losses.sum(), list(p.values()), allow_unused=True)
        except Exception as e:
            raise _NotVmappable(f"the backward pass is not vmappable: {describe(e)}") from e
        return losses, grads

    def _check_eval_mode(self, params, buffers, x) -> None:
        self._module.eval()
        with torch.no_grad(), Watch(self._module) as watch:
            try:
                outputs = vmap(self._run_primary, in_dims=(0, 0, None))(params, buffers, x)
            except Exception as e:
                raise _NotVmappable(f"in eval mode, {self._where(watch, e)}") from e
        for r in range(2):
            with torch.no_grad():
                alone = self._run_primary({k: v[r] for k, v in params.items()}, {k: v[r] for k, v in buffers.items()}, x)
            if not _close(outputs[r], alone):
                raise _NotVmappable(self._explain_difference(params, buffers, None, x, training=False)
                                    or "the vmapped eval-mode output differs from the one-model output")

    def _where(self, watch: Watch, error: BaseException) -> str:
        path = watch.innermost()
        if path is None:
            return f"the loss function is not vmappable: {describe(error)}"
        return f"{layer(self._module, path)} is not vmappable: {describe(error)}"

    def _explain_difference(self, params, buffers, keys: Tensor | None, x, training: bool) -> str | None:
        """Why the vmapped model differs from the models alone: the first layer whose output differs,
        and, when it differs in training mode only, its random draws (attention dropout named)."""
        found = self._first_difference(params, buffers, keys, x, training)
        if found is None:
            return None
        path, difference = found
        what = f"the vmapped output of {layer(self._module, path)} differs from its output run alone (by {difference:.3g})"
        if not training or self._first_difference(params, buffers, None, x, training=False) is not None:
            return what
        attention = attention_with_dropout(self._module, path)
        if attention is not None:
            return f"attention dropout in {attention}: {what}"
        return f"{what} in training mode only (random draws, e.g. dropout, that vmap does not reproduce)"

    def _first_difference(self, params, buffers, keys: Tensor | None, x, training: bool) -> tuple[str, float] | None:
        """(path, largest difference) of the first module (in the order modules finish) whose
        vmapped output differs from its output run alone; None when none does or they cannot be
        compared (keys None: eval mode's key)."""
        self._module.train(training)
        watch = Watch(self._module)
        watch.capture = True
        copied = lambda b: {k: v.clone() for k, v in b.items()}  # noqa: E731 (BatchNorm updates them)

        def outputs(p, b, key):
            watch.outputs.clear()
            self._forward(p, b, key, x)
            return [t for _, t in watch.outputs]

        seed = CHECK_KEYS[0] if keys is None else int(keys[0])
        try:
            with torch.no_grad(), watch:
                with self._seeded(seed):
                    if self.stochastic or keys is None:
                        batched = vmap(outputs, in_dims=(0, 0, None), randomness="same" if self.stochastic else "error")(
                            params, copied(buffers), None if keys is None else keys[0])
                    else:
                        batched = vmap(outputs, in_dims=(0, 0, 0))(params, copied(buffers), keys)
                paths = [path for path, _ in watch.outputs]
                for r in range(2):
                    with self._seeded(seed if keys is None else int(keys[r])):
                        alone = outputs({k: v[r] for k, v in params.items()}, copied({k: v[r] for k, v in buffers.items()}),
                                        None if keys is None else keys[r])
                    for path, a, b in zip(paths, alone, batched):
                        if a.shape != b[r].shape or not _close(b[r], a):
                            return path, largest_difference(b[r], a)
        except Exception:
            return None  # the outputs could not be compared layer by layer: the caller's general reason
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
        if not self.vmappable:
            losses = []
            for r in range(runs):
                p = {k: v[r] for k, v in params.items()}
                b = {k: v[r] for k, v in buffers.items()}  # views: in-place updates reach the state
                with self._seeded(int(keys[r])):
                    losses.append(self._run_loss(p, b, keys[r], take(self.x_train, rows[r]), self.y_train[rows[r]]))
            return torch.stack(losses)
        if not self.stochastic:
            if runs == 1 or rows.stride(0) == 0:  # one batch (one seed) shared by all runs
                x, y, key, dim = take(self.x_train, rows[0]), self.y_train[rows[0]], keys[0], None
            else:
                x, y, key, dim = take(self.x_train, rows), self.y_train[rows], keys, 0
            return vmap(self._run_loss, in_dims=(0, 0, dim, dim, dim))(params, buffers, key, x, y)
        return self._grouped_loss(params, buffers, rows, keys)

    def _grouped_loss(self, params, buffers, rows: Tensor, keys: Tensor) -> Tensor:
        """Runs that share a noise seed share their batch: one vmap(randomness="same") per seed."""
        groups: dict[int, list[int]] = {}
        for r, s in enumerate(keys.tolist()):
            groups.setdefault(int(s), []).append(r)
        parts, order = [], []
        for s, members in groups.items():
            whole = len(groups) == 1
            idx = torch.tensor(members, device=self.device)
            p = params if whole else {k: v[idx] for k, v in params.items()}
            b = buffers if whole else {k: v[idx] for k, v in buffers.items()}
            r0 = rows[members[0]]
            with self._seeded(s):
                parts.append(vmap(self._run_loss, in_dims=(0, 0, None, None, None), randomness="same")(
                    p, b, keys[members[0]], take(self.x_train, r0), self.y_train[r0]))
            if not whole:
                with torch.no_grad():
                    for k in buffers:
                        buffers[k][idx] = b[k]
            order.extend(members)
        losses = torch.cat(parts)
        return losses[torch.argsort(torch.tensor(order, device=losses.device))]

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
            if self.vmappable:
                loss, correct = vmap(self._run_metrics, in_dims=(0, 0, None, None))(params, buffers, xs, ys)
            else:
                pairs = [self._run_metrics({k: v[r] for k, v in params.items()}, {k: v[r] for k, v in buffers.items()}, xs, ys)
                         for r in range(runs)]
                loss, correct = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
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


class _DrawsGlobalRandomness(Exception):
    """The forward pass draws from torch's global RNG (besides the keyed dropout)."""


def _call(module: nn.Module, x: Inputs) -> Any:
    """module(X) / module(*X) / module(**X), under the batchable ops (key 0)."""
    args, kwargs = call_args(x)
    with BatchableOps(None):
        return module(*args, **kwargs)


def _close(a: Tensor, b: Tensor) -> bool:
    return bool(torch.allclose(a.detach(), b.detach(), rtol=1e-4, atol=1e-6, equal_nan=True))


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return getattr(obj, "__qualname__", repr(obj))
