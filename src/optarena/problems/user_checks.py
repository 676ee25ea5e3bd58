"""The checks a `UserProblem` runs on the user's model, loss and data once, at construction.

Apart from `user` because they run once, before any run, and share nothing with the execution but
the problem's pieces (build, forward, loss): `user` stays the problem itself. In the order
`UserProblem.__init__` calls them: `validate` (one forward and loss on a few training rows, the
label range, the initial loss on the whole validation split: a `UserCodeError` naming the function
or split and the cause), `check_training_step` (parameters forward never uses are frozen, with a
warning) and `check_vmap` (one vmapped training step and eval-mode forward of two runs against the
same runs alone: None when vmap serves the model, else the reason, naming the layer; vmap's
"performance drop" warnings become the looped ops).
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.func import vmap

from optarena.problems.user_data import Inputs, call_args, call_text, check_labels, describe_inputs, n_rows, take
from optarena.problems.user_errors import UserCodeError, describe, shape
from optarena.problems.user_exec import EVAL_BUDGET
from optarena.problems.user_loss import primary_output
from optarena.problems.user_ops import BatchableOps
from optarena.problems.user_vmap import Watch, attention_with_dropout, is_randomness_error, largest_difference, layer

if TYPE_CHECKING:
    from optarena.problems.user import UserProblem

CHECK_ROWS = 8  # rows of the construction-time checks (BatchNorm needs more than one)
BOUND_ROWS = 256  # rows of the initial loss that sets loss_bound
CHECK_KEYS = (12345, 67890)  # noise keys of the two runs of the construction-time vmap check


class _NotVmappable(Exception):
    """Why vmap cannot serve the model (a sentence naming the layer or op)."""


class _DrawsGlobalRandomness(Exception):
    """The forward pass draws from torch's global RNG (besides the keyed dropout)."""


def validate(problem: UserProblem, template: nn.Module) -> tuple[float, bool, int]:
    """One forward and loss on a few training rows: shapes, dtypes and label range (of both
    splits) checked before any training; then the initial loss on the whole validation split.
    Returns the initial loss on up to BOUND_ROWS training rows (sets loss_bound), whether
    "val_accuracy" is reported, and the elements of activations per row (sizes evaluation chunks)."""
    module = copy.deepcopy(template).train()
    rows = min(BOUND_ROWS, problem.n_train)
    x, y = take(problem.x_train, slice(0, rows)), problem.y_train[:rows]
    call = call_text(x)
    try:
        with torch.random.fork_rng(devices=problem._rng_devices), torch.no_grad():
            torch.manual_seed(0)
            output = _call(module, x)
    except Exception as e:
        raise UserCodeError(f"{call} raised {describe(e)} on {rows} training rows, {describe_inputs(x)}") from e
    try:
        primary = primary_output(output)
    except TypeError as e:
        raise UserCodeError(f"{call} must return a Tensor, a tuple / list or a dict of tensors (the default "
                            f"loss reads output['logits'], else the first tensor): {e}") from e
    what = "loss(output, target)" if problem._user_loss is not None else (
        "the default loss (cross-entropy for integer targets)" if problem.classification
        else "the default loss (mean squared error for float targets)")
    shapes = f"model output {shape(primary)}, target {shape(y)}"
    has_accuracy = (problem.classification and primary.ndim >= 2 and primary.shape[0] == y.shape[0]
                    and primary.shape[2:] == y.shape[1:])
    if problem._user_loss is None and problem.classification:
        if not has_accuracy:
            raise UserCodeError(f"{what} needs an output of shape (B, classes) for targets (B,): {shapes}")
        classes = primary.shape[1]
        check_labels(problem.y_train, classes, "train", what)
        check_labels(problem.y_val, classes, "val", what)
    try:
        with warnings.catch_warnings():
            # torch's silent broadcasting of mismatched shapes (e.g. mse_loss on (B, 1) vs (B,))
            warnings.filterwarnings("error", message=".*target size.*different to the input size.*")
            value = problem._loss(output, y)
    except Exception as e:
        raise UserCodeError(f"{what} raised {describe(e)}; {shapes}") from e
    if not isinstance(value, Tensor) or value.numel() != 1:
        got = shape(value) if isinstance(value, Tensor) else type(value).__name__
        raise UserCodeError(f"{what} must return a scalar Tensor (the mean over the batch), got {got}; {shapes}")
    value = float(value)
    if not math.isfinite(value):
        raise UserCodeError(f"{what} is {value} for the initial model; {shapes}")
    activations_per_row = _measure_activations(module, take(x, slice(0, CHECK_ROWS)))
    _check_validation_loss(problem, module, what, activations_per_row)
    return value, has_accuracy, activations_per_row


def _check_validation_loss(problem: UserProblem, module: nn.Module, what: str, activations_per_row: int) -> None:
    """The initial model's loss on every row of the validation split (eval mode) is finite."""
    module.eval()
    chunk = max(1, EVAL_BUDGET // activations_per_row)
    with torch.random.fork_rng(devices=problem._rng_devices), torch.no_grad():
        torch.manual_seed(0)
        for start in range(0, problem.n_val, chunk):
            stop = min(start + chunk, problem.n_val)
            where = f"data(): the val split, rows {start} to {stop - 1}"
            try:
                value = float(problem._loss(_call(module, take(problem.x_val, slice(start, stop))),
                                            problem.y_val[start:stop]))
            except Exception as e:
                raise UserCodeError(f"{where}: {what} raised {describe(e)} for the initial model") from e
            if not math.isfinite(value):
                raise UserCodeError(f"{where}: {what} is {value} for the initial model")


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


def check_training_step(problem: UserProblem) -> list[str]:
    """Parameters that forward never uses get no gradient: they are frozen (with a warning),
    since the engine differentiates with respect to every trainable parameter. Returns the
    names of the parameters to train."""
    x, y = _check_rows(problem)
    params, buffers = problem._stack([problem._build(0)])
    _, grads = _reference_step(problem, params, buffers, torch.tensor(CHECK_KEYS[:1], device=problem.device), x, y)[0]
    unused = [k for k, g in zip(params, grads) if g is None]
    if len(unused) == len(params):
        raise UserCodeError("the loss does not depend on any trainable parameter of the model")
    if unused:
        warnings.warn(f"parameters {unused} are not used by the model's forward pass; they are frozen",
                      RuntimeWarning, stacklevel=3)
        return [k for k in problem.param_names if k not in unused]
    return problem.param_names


def check_vmap(problem: UserProblem) -> tuple[str | None, bool, list[str]]:
    """(None when vmap serves this model, else the reason it cannot; whether the model is
    stochastic; the looped ops). vmap's "performance drop" warnings of the check (an op without a
    batching rule, which vmap runs once per run: correct but slow) become the looped ops; every
    other warning is passed on."""
    check = _VmapCheck(problem)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reason = check.run()
    looped_ops: list[str] = []
    for w in caught:
        found = re.search(r"batching rule for (\S+?)\.", str(w.message))
        if found and "performance drop" in str(w.message):
            if found.group(1) not in looped_ops:
                looped_ops.append(found.group(1))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return reason, check.stochastic, looped_ops


def _check_rows(problem: UserProblem) -> tuple[Inputs, Tensor]:
    rows = min(CHECK_ROWS, problem.n_train)
    return take(problem.x_train, slice(0, rows)), problem.y_train[:rows]


def _reference_step(problem: UserProblem, params, buffers, keys: Tensor, x, y) -> list[tuple[Tensor, tuple]]:
    """Loss and gradients of each stacked model run alone with functional_call (training mode)."""
    problem._module.train()
    reference = []
    for r in range(next(iter(params.values())).shape[0]):
        p = {k: v[r].detach().requires_grad_(True) for k, v in params.items()}
        b = {k: v[r].clone() for k, v in buffers.items()}
        try:
            with problem._seeded(int(keys[r])):
                value = problem._run_loss(p, b, keys[r], x, y)
            grads = torch.autograd.grad(value, list(p.values()), allow_unused=True)
        except Exception as e:
            raise UserCodeError(f"the training step ({call_text(x)}, loss, backward) raised {describe(e)}") from e
        reference.append((value.detach(), grads))
    return reference


class _VmapCheck:
    """Two runs (seeds 0 and 1) vmapped against the same runs alone; `stochastic` is set when the
    forward pass draws from torch's global RNG."""

    def __init__(self, problem: UserProblem) -> None:
        self.problem = problem
        self.stochastic = False

    def run(self) -> str | None:
        """None when vmap serves this model (sets `stochastic`), else the reason it cannot."""
        problem = self.problem
        x, y = _check_rows(problem)
        params, buffers = problem._stack([problem._build(0), problem._build(1)])
        keys = torch.tensor(CHECK_KEYS, device=problem.device)
        try:
            try:
                reference = _reference_step(problem, params, buffers, keys, x, y)
                losses, grads = self._vmapped_step(params, buffers, keys, x, y)
            except _DrawsGlobalRandomness:
                # Runs of one seed share their noise seed: the reference draws the same numbers twice.
                self.stochastic = True
                keys = keys[:1].expand(2)
                reference = _reference_step(problem, params, buffers, keys, x, y)
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
        problem = self.problem
        p = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        b = {k: v.clone() for k, v in buffers.items()}
        problem._module.train()
        with Watch(problem._module) as watch:
            try:
                if self.stochastic:
                    with problem._seeded(int(keys[0])):
                        losses = vmap(problem._run_loss, in_dims=(0, 0, None, None, None), randomness="same")(
                            p, b, keys[0], x, y)
                else:
                    losses = vmap(problem._run_loss, in_dims=(0, 0, 0, None, None))(p, b, keys, x, y)
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
        problem = self.problem
        problem._module.eval()
        with torch.no_grad(), Watch(problem._module) as watch:
            try:
                outputs = vmap(problem._run_primary, in_dims=(0, 0, None))(params, buffers, x)
            except Exception as e:
                raise _NotVmappable(f"in eval mode, {self._where(watch, e)}") from e
        for r in range(2):
            with torch.no_grad():
                alone = problem._run_primary({k: v[r] for k, v in params.items()},
                                             {k: v[r] for k, v in buffers.items()}, x)
            if not _close(outputs[r], alone):
                raise _NotVmappable(self._explain_difference(params, buffers, None, x, training=False)
                                    or "the vmapped eval-mode output differs from the one-model output")

    def _where(self, watch: Watch, error: BaseException) -> str:
        path = watch.innermost()
        if path is None:
            return f"the loss function is not vmappable: {describe(error)}"
        return f"{layer(self.problem._module, path)} is not vmappable: {describe(error)}"

    def _explain_difference(self, params, buffers, keys: Tensor | None, x, training: bool) -> str | None:
        """Why the vmapped model differs from the models alone: the first layer whose output differs,
        and, when it differs in training mode only, its random draws (attention dropout named)."""
        found = self._first_difference(params, buffers, keys, x, training)
        if found is None:
            return None
        path, difference = found
        module = self.problem._module
        what = f"the vmapped output of {layer(module, path)} differs from its output run alone (by {difference:.3g})"
        if not training or self._first_difference(params, buffers, None, x, training=False) is not None:
            return what
        attention = attention_with_dropout(module, path)
        if attention is not None:
            return f"attention dropout in {attention}: {what}"
        return f"{what} in training mode only (random draws, e.g. dropout, that vmap does not reproduce)"

    def _first_difference(self, params, buffers, keys: Tensor | None, x, training: bool) -> tuple[str, float] | None:
        """(path, largest difference) of the first module (in the order modules finish) whose
        vmapped output differs from its output run alone; None when none does or they cannot be
        compared (keys None: eval mode's key)."""
        problem = self.problem
        problem._module.train(training)
        watch = Watch(problem._module)
        watch.capture = True
        copied = lambda b: {k: v.clone() for k, v in b.items()}  # noqa: E731 (BatchNorm updates them)

        def outputs(p, b, key):
            watch.outputs.clear()
            problem._forward(p, b, key, x)
            return [t for _, t in watch.outputs]

        seed = CHECK_KEYS[0] if keys is None else int(keys[0])
        try:
            with torch.no_grad(), watch:
                with problem._seeded(seed):
                    if self.stochastic or keys is None:
                        batched = vmap(outputs, in_dims=(0, 0, None), randomness="same" if self.stochastic else "error")(
                            params, copied(buffers), None if keys is None else keys[0])
                    else:
                        batched = vmap(outputs, in_dims=(0, 0, 0))(params, copied(buffers), keys)
                paths = [path for path, _ in watch.outputs]
                for r in range(2):
                    with problem._seeded(seed if keys is None else int(keys[r])):
                        alone = outputs({k: v[r] for k, v in params.items()}, copied({k: v[r] for k, v in buffers.items()}),
                                        None if keys is None else keys[r])
                    for path, a, b in zip(paths, alone, batched):
                        if a.shape != b[r].shape or not _close(b[r], a):
                            return path, largest_difference(b[r], a)
        except Exception:
            return None  # the outputs could not be compared layer by layer: the caller's general reason
        return None


def _call(module: nn.Module, x: Inputs) -> Any:
    """module(X) / module(*X) / module(**X), under the batchable ops (key 0)."""
    args, kwargs = call_args(x)
    with BatchableOps(None):
        return module(*args, **kwargs)


def _close(a: Tensor, b: Tensor) -> bool:
    return bool(torch.allclose(a.detach(), b.detach(), rtol=1e-4, atol=1e-6, equal_nan=True))
