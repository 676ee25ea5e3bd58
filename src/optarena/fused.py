"""The compiled executor: an elementwise rule's own ``update_`` compiled into one fused kernel.

``optarena.optim``'s ``fused=True`` path. There is no hand-written fused code per optimizer: a
function that applies ``rule.update_`` to each of ``CHUNK`` tensors is compiled with
``torch.compile`` (inductor writes one vectorised C++ loop per tensor, every operation of the
formula in one pass over memory, as torch.optim's fused kernels do), once per

    (rule class, its code path: bools and which hyperparameters are zero, dtype, device).

Shapes are dynamic (every tensor is passed as a flat 1-D view, sizes symbolic, no duck sizing), so
one compiled kernel serves every parameter of every model. Non-zero hyperparameters and the step
count enter as 0-d tensors, so a learning-rate scheduler never triggers a recompile; zeros enter as
Python floats, so ``weight_decay=0`` keeps the cheap path (see `rules.base.any_nonzero`). The
scalar powers of a step (bias corrections) are computed once per call (`rules.primitives.power`).
Small tensors are concatenated into chunks of about ``optim._BATCH_ELEMENTS`` first (their per-call
cost would dominate), larger ones are passed as they are, ``CHUNK`` per call; a short last chunk is
padded with scratch tensors so the kernel is compiled once, not once per length.

Compiling takes seconds per kernel (reported apart from the step time by
``benchmarks/step_speed.py --drop-ins``); inductor caches the result on disk, so later processes
load it (``TORCHINDUCTOR_CACHE_DIR``). Where compilation fails (e.g. no C++ compiler), the kernel
falls back to the eager rule with one warning: the same formula, slower.

The numbers are those of the eager rule up to float rounding (inductor may contract or reorder
operations): tests/test_fused.py checks every elementwise optimizer and convention against it.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Callable

import torch
from torch import Tensor

from optarena.rules.base import Rule

CHUNK = 8
"""Tensors per kernel call: fewer calls (one call of 8 small tensors measured 120 us of
torch.compile's Python wrapper and guards: why many-tensor shapes stay slower than torch's fused
kernels) against a longer first compile (200 tensors in one call took 112 s)."""

MIN_COMPILED_VALUES = 2**16
"""Values below which one update is cheaper eager than compiled: a compiled call costs 80-300 us of
torch.compile's guards and wrappers whatever its size. Measured on the CI machine (1 thread), one
flat group of 50,000 values: SGD 9 us eager against 83 us compiled, Adam 108-139 against 170-180,
AdaGrad 70 against 123 (Adadelta, the longest formula, 152 against 113); at 131,072 values Adam 351
against 255. The engine's groups of runs alike (50 runs of Adam on 1,550 values: 278 us compiled,
129 us eager; on 204,800 values 523 us compiled, 850 us eager). `optim`'s flat groups and the
engine's groups of runs below it run the eager rule."""

_KERNELS: dict[tuple, Callable | None] = {}  # None: compilation failed here, the eager rule is used
COMPILE_SECONDS: dict[tuple, float] = {}
"""Wall seconds of each kernel's first call (compile, or load from inductor's cache), by key."""


def supports(rule: Rule) -> bool:
    """Whether `rule` can run through the compiled kernel: elementwise, one value per hyperparameter."""
    return rule.elementwise and not any(isinstance(v, Tensor) and v.ndim > 0 for v in rule.hparams().values())


def _split(rule: Rule) -> tuple[dict, tuple[str, ...], list]:
    """The rule's fields as (fixed: bools and zeros, the names of the others, their values: floats,
    or (R,) tensors for hyperparameters with one value per run)."""
    fixed, names, values = {}, [], []
    for f in dataclasses.fields(rule):
        value = getattr(rule, f.name)
        if isinstance(value, Tensor) and value.ndim > 0:
            names.append(f.name)
            values.append(value)
            continue
        if isinstance(value, Tensor):
            value = value.item()
        if isinstance(value, bool) or value == 0:
            fixed[f.name] = value
        else:
            names.append(f.name)
            values.append(float(value))
    return fixed, tuple(names), values


def _make(rule_type: type[Rule], fixed: dict, names: tuple[str, ...], keys: tuple[str, ...],
          per_run: bool = False) -> Callable:
    def kernel(params, grads, states, step, *values):
        rule = rule_type(**fixed, **dict(zip(names, values)))
        for i in range(len(params)):
            rule_i = rule.for_param(params[i]) if per_run else rule
            rule_i.update_(params[i], grads[i], {k: states[j][i] for j, k in enumerate(keys)}, step)

    # A code object of its own: dynamo keeps its compiled graphs (and its recompile limit) per code
    # object, so kernels of different rules made from this one function would evict each other.
    kernel.__code__ = kernel.__code__.replace(co_name=f"fused_{rule_type.__name__}_{len(_KERNELS)}")
    return torch.compile(kernel, backend=_inductor_with_shared_scalars, fullgraph=True, dynamic=True)


def _inductor_with_shared_scalars(gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
    """Inductor, after `share_scalars` (size_asserts off: the wrapper would otherwise check every
    input's size and stride on every call)."""
    from torch._inductor.compile_fx import compile_fx

    return compile_fx(share_scalars(gm), example_inputs, config_patches={"size_asserts": False})


def share_scalars(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Compute each scalar of a step once per call, not once per tensor.

    The rule is applied to each tensor of the chunk in turn, so the graph dynamo captures repeats
    every computation on the step and the hyperparameters alone (``1 - beta1**t``, ...) once per
    tensor, and inductor keeps them apart (each `rules.primitives.power` is its own ATen call:
    16 of them per call for Adam, about half of the call's cost). Nodes computed only from those
    inputs (never mutated by a rule) with the same operation and arguments are merged here; an
    in-place operation, or anything reading a parameter, gradient or state, is never touched.
    """
    scalars = {n for n in gm.graph.nodes if n.op == "placeholder" and n.name.startswith(("l_step", "l_values"))}
    seen: dict[tuple, torch.fx.Node] = {}
    for node in list(gm.graph.nodes):
        inputs = node.all_input_nodes
        if node.op not in ("call_function", "call_method") or not inputs or not all(i in scalars for i in inputs):
            continue
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        if name.endswith("_") and not name.endswith("__"):  # in place (mul_, add_); dunders are pure
            continue
        key = (node.op, node.target, _frozen(node.args), _frozen(node.kwargs))
        if key in seen:
            node.replace_all_uses_with(seen[key])
            gm.graph.erase_node(node)
        else:
            seen[key] = node
            scalars.add(node)
    gm.recompile()
    return gm


def _frozen(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


_PREPARED: dict[int, tuple] = {}
_STEPS: dict[torch.dtype, Tensor] = {}


def _prepared(rule: Rule, dtype: torch.dtype) -> tuple[dict, tuple[str, ...], list[Tensor], tuple]:
    """`_split` of `rule` (fixed fields, names) with its values as the kernel's tensor inputs (floats
    as 0-d tensors in `dtype`), and the kernel key's part that the rule decides: made once per rule
    object (a rule is immutable, and `optim` and the engine keep theirs from step to step), since
    this per-call work cost more than a small group's update itself."""
    cached = _PREPARED.get(id(rule))
    if cached is not None and cached[0] is rule and cached[1] == dtype:
        return cached[2]
    fixed, names, values = _split(rule)
    inputs = [v if isinstance(v, Tensor) else torch.tensor(v, dtype=dtype) for v in values]
    per_run = tuple(n for n, v in zip(names, values) if isinstance(v, Tensor))
    prepared = (fixed, names, inputs, (type(rule), tuple(sorted(fixed.items())), names, per_run))
    if len(_PREPARED) > 1024:
        _PREPARED.clear()
    _PREPARED[id(rule)] = (rule, dtype, prepared)
    return prepared


def _step(step: int, dtype: torch.dtype) -> Tensor:
    """The step count as a 0-d tensor in `dtype`: one tensor per dtype, refilled (the kernels read it
    during the call only)."""
    t = _STEPS.get(dtype)
    if t is None:
        t = _STEPS[dtype] = torch.zeros((), dtype=dtype)
    return t.fill_(float(step))


def _scalar_dtype(p: Tensor) -> torch.dtype:
    """The scalars in the parameters' precision (float64 for float64), at least float32."""
    return torch.float64 if p.dtype == torch.float64 else torch.float32


def update_(rule: Rule, params: list[Tensor], grads: list[Tensor], states: list[dict], step: int,
            chunk: int = CHUNK) -> None:
    """``rule.update_(p, g, s, step)`` for every (p, g, s), through the compiled kernel of `chunk`
    tensors per call (1: a flat group, `optarena.flat`).

    `params`, `grads` and the states' tensors are 1-D and contiguous, of one dtype and device;
    every state dict has the same keys (tensors only; 0-d ones, as NAdam's ``mu_product``, too).
    """
    p0 = params[0]
    dtype = _scalar_dtype(p0)
    fixed, names, scalars, rule_key = _prepared(rule, dtype)
    keys = tuple(states[0])
    shaped = tuple(k for k in keys if states[0][k].shape == p0.shape)
    key = (*rule_key, keys, shaped, p0.dtype, p0.device.type, chunk)
    kernel = _KERNELS.get(key, False)
    if kernel is None:  # compilation failed before: the eager rule
        for p, g, s in zip(params, grads, states):
            rule.update_(p, g, s, step)
        return
    step_t = _step(step, dtype)
    for start in range(0, len(params), chunk):
        part = slice(start, start + chunk)
        ps, gs, ss = list(params[part]), list(grads[part]), states[part]
        columns = [[s[k] for s in ss] for k in keys]
        if len(ps) < chunk:
            _pad(ps, gs, columns, keys, shaped, states[0], chunk)
        if kernel is False:
            kernel = _first_call(key, rule_type=type(rule), fixed=fixed, names=names, keys=keys,
                                 args=(ps, gs, columns, step_t, *scalars))
            if kernel is None:
                update_(rule, params[start:], grads[start:], states[start:], step, chunk)
                return
            continue
        kernel(ps, gs, columns, step_t, *scalars)


def update_runs_(rule: Rule, params: list[Tensor], grads: list[Tensor], states: list[dict], step: int) -> None:
    """The engine's update of one group of runs: ``rule.for_param(p).update_(p, g, s, step)`` for every
    parameter p (R, ...) of the group, all in ONE compiled call (the elementwise rule `rule`, whose
    hyperparameters are floats or (R,) tensors, one value per run; see `rules.base.Rule.for_param`).

    One kernel per (rule class, code path, which hyperparameters are per run, the parameters' ranks,
    dtype, device); sizes are dynamic, so the number of runs and the model's shapes do not recompile.
    Equal to the eager update up to float rounding (tests/test_engine.py runs both ways)."""
    p0 = params[0]
    dtype = _scalar_dtype(p0)
    fixed, names, inputs, rule_key = _prepared(rule, dtype)
    keys = tuple(states[0])
    if any(tuple(s) != keys for s in states):
        raise ValueError("update_runs_: every parameter's state must have the same keys")
    ranks = tuple((p.ndim, tuple(states[0][k].ndim for k in keys)) for p in params)
    key = (*rule_key, keys, ranks, p0.dtype, p0.device.type, "runs")
    kernel = _KERNELS.get(key, False)
    if kernel is None:  # compilation failed before: the eager rule
        for p, g, s in zip(params, grads, states):
            rule.for_param(p).update_(p, g, s, step)
        return
    step_t = _step(step, dtype)
    columns = [[s[k] for s in states] for k in keys]
    if kernel is False:
        kernel = _first_call(key, rule_type=type(rule), fixed=fixed, names=names, keys=keys, per_run=True,
                             args=(list(params), list(grads), columns, step_t, *inputs))
        if kernel is None:
            update_runs_(rule, params, grads, states, step)
        return
    kernel(list(params), list(grads), columns, step_t, *inputs)


def _first_call(key: tuple, *, rule_type, fixed, names, keys, args, per_run: bool = False) -> Callable | None:
    kernel = _make(rule_type, fixed, names, keys, per_run)
    started = time.perf_counter()
    try:
        with torch.fx.experimental._config.patch(use_duck_shape=False):
            kernel(*args)
    except Exception as e:  # no C++ compiler, an unsupported platform: the eager rule, said once
        warnings.warn(f"optarena: the fused kernel for {rule_type.__name__} could not be compiled "
                      f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); using the eager rule "
                      "(same formula, slower)", RuntimeWarning, stacklevel=4)
        _KERNELS[key] = None
        return None
    COMPILE_SECONDS[key] = time.perf_counter() - started
    _KERNELS[key] = kernel
    return kernel


_SCRATCH: dict[tuple, list[Tensor]] = {}


def _pad(ps: list, gs: list, columns: list[list], keys: tuple, shaped: tuple, like: dict, chunk: int) -> None:
    """Fill a short chunk up to `chunk` tensors with scratch tensors of 2 elements (updated, never read;
    separate tensors, as aliased inputs that are mutated would change the compiled graph)."""
    p0 = ps[0]
    while len(ps) < chunk:
        tag = (p0.dtype, p0.device, len(ps), len(keys))
        if tag not in _SCRATCH:
            _SCRATCH[tag] = [torch.zeros(2, dtype=p0.dtype, device=p0.device) for _ in range(2 + len(keys))]
        scratch = _SCRATCH[tag]
        torch._foreach_zero_(scratch)
        ps.append(scratch[0])
        gs.append(scratch[1])
        for j, k in enumerate(keys):
            # a state of its own shape (NAdam's 0-d mu_product): a copy of the first member's
            columns[j].append(scratch[2 + j] if k in shaped else like[k].clone())
