"""The batched engine: many trials of one problem trained as one vectorised computation.

All trials are stacked along a leading run dimension R. Each step does one forward and one backward
pass for all R runs (the loss of run r depends only on run r's parameters, so the gradient of the
summed loss is every run's own gradient), then applies each rule to its contiguous slice of runs.
Runs are sorted so that runs of one rule (optimizer, convention and boolean options) are contiguous;
hyperparameters that differ between those runs become per-run tensors (see `optarena.rules.base`).

Minibatches come from one generator per distinct seed, so runs that share a seed share their
minibatches. The problem gets them stacked per run, (R, B, ...) (a stride-0 expand when all runs
share one seed), or, if it sets ``accepts_grouped_batches = True``, once per distinct seed,
(U, B, ...), with ``loss(params, batch, slot=slot)``: slot (R,) is each run's row of the batch, so
the problem can compute what runs share (e.g. a linear layer on a shared input as one large matrix
product) instead of gathering a copy of the input for every run.

Where the problem writes out its forward and backward pass (``loss_and_grad(params, batch, slot=)``:
the built-in MLP classifiers and the logistic regression, `optarena.problems._mlp`), the engine
takes its gradient from there instead of autograd's graph: the same numbers to float rounding
(tests/problems/test_hand_gradients.py), at a fraction of the cost. Each group's update is the
eager rule (one ATen call per operation and parameter) or, for a large group with ``compile=True``
(or by itself where the work is long, `compiles_updates`), the rule compiled into one kernel per
group and step (`optarena.fused.update_runs_`). Before the first step every run is where its seed put it, so each
distinct start is evaluated once.

A run whose loss leaves the finite range or exceeds ``problem.loss_bound`` is marked diverged at that
step and frozen: its parameters are held where they were, the others go on. Costs nothing until a
run diverges (one host sync per step decides it).

Memory stays bounded (a stack over `MEMORY_BUDGET` is trained in parts) and cost per run stays flat
as runs are added: a problem with sparse features (``restrict``) is differentiated on the columns a
minibatch reaches only (`_SparseGradient`), and a large update is applied a block of runs at a time
(`UPDATE_BLOCK_BYTES`). Both are bitwise the plain computation.

``run(problem, trials)`` must give, for every run r, what ``loop.run_sequential(problem, [trial_r])`` gives:
the plain loop with ``optarena.optim`` that users write today (tested: to 1e-5; bitwise for a trial
alone where the engine too uses autograd and the eager rule, and bitwise for the same trials in any order).
"""

from __future__ import annotations

import dataclasses
import math
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor

from optarena import allocator, compiled, fused, rules, schedules
from optarena.problems.base import Problem, seed_generator
from optarena.rules.base import Rule, update_at_
from optarena.trial import RunResult, Trial

TRACES = ("params", "loss", "update_norm", "grad_norm", "effective_step")
"""Per-step recordings a study may ask for: flattened parameters (small problems only), minibatch
loss, norm of the update, norm of the gradient, and the median over coordinates of |dw_i| / |g_i|
(the effective per-parameter step size)."""

ProgressFn = Callable[[int, int], None]

MEMORY_BUDGET = 2**32
"""Bytes (4 GiB) that one stack of runs may take; more runs of one length are trained a part at a
time. A constant, not this machine's free memory: which runs share a stack changes the last bits of
their numbers, and the same trials must give the same numbers on every machine and backend."""


def eval_points(steps: int, n_points: int = 20) -> list[int]:
    """Steps after which the problem is evaluated: 0 (before training), ~n_points between, and the last."""
    every = max(1, steps // n_points)
    points = list(range(0, steps, every)) + [steps]
    return sorted(set(points))


@dataclass
class _Group:
    """Runs [start, stop) of the stack that share one rule."""

    start: int
    stop: int
    rule: Rule
    per_param: dict[str, Rule]
    state: dict[str, dict[str, Tensor]]
    views: dict[str, Tensor]
    current: Rule | None = None  # the rule of this step (`rule` with its scheduled lr), None: `rule`
    compiled: bool = False  # updated by the compiled kernel (`fused.update_runs_`)


def _rule_key(trial: Trial, resolved: dict) -> tuple:
    return rules.code_path(trial.optimizer, trial.convention, resolved)


def _stacked_rule(name: str, convention: str, resolved: list[dict], device, per_run: tuple[str, ...] = ()) -> Rule:
    """One rule for many runs: a hyperparameter equal in all runs stays a float, else a (R,) tensor
    (always a tensor for the names in `per_run`, e.g. a scheduled lr)."""
    hparams = {}
    for key in resolved[0]:
        values = [r[key] for r in resolved]
        if isinstance(values[0], bool) or (key not in per_run and all(v == values[0] for v in values)):
            hparams[key] = values[0]
        else:
            hparams[key] = torch.tensor(values, dtype=torch.float64, device=device)
    return rules.construct(name, convention, hparams)


def _final_for_diverged(metrics: Iterable[str]) -> dict[str, float]:
    return {k: (math.inf if "loss" in k or "error" in k else math.nan) for k in metrics}


def run(
    problem: Problem,
    trials: Sequence[Trial],
    device: str | torch.device = "cpu",
    trace: Sequence[str] = (),
    progress: ProgressFn | None = None,
    memory_budget: int = MEMORY_BUDGET,
    compile: bool | None = None,
) -> list[RunResult]:
    """Train every trial of `problem` at once; results in the order of `trials`.

    Trials of different lengths are run as separate stacks, and so are parts of a stack that would
    take more than `memory_budget` bytes (`runs_per_stack`: a study of any size fits in memory). A
    trial whose hyperparameters are invalid is returned as "failed" with the error; an exception
    inside the batched computation fails every run of that stack (with the traceback) and the other
    stacks go on.

    `compile`: True updates each group of runs with the compiled kernel of its rule
    (`fused.update_runs_`: one pass over memory, one call per group and step) instead of the eager
    rule (one ATen call per operation and parameter) where the group is large enough for that to be
    faster, and runs the problem's compiled kernels (`optarena.compiled`); None does either only
    where the work is long enough to win back the compiling (`COMPILE_MIN_WORK`); False compiles
    nothing (`compiles_kernels`, `compiles_updates`). The numbers agree to float rounding; compiling
    takes seconds per kernel, once per process (inductor caches it on disk).
    """
    for t in trials:
        if t.problem != problem.name:
            raise ValueError(f"trial for problem {t.problem!r} given to engine.run with problem {problem.name!r}")
    allocator.keep_freed_memory()  # large temporaries reused, not page-faulted afresh every step
    unknown = set(trace) - set(TRACES)
    if unknown:
        raise ValueError(f"unknown trace {sorted(unknown)}; allowed: {', '.join(TRACES)}")
    results: dict[int, RunResult] = {}
    by_steps: dict[int, list[int]] = defaultdict(list)
    for i, t in enumerate(trials):
        by_steps[t.steps].append(i)
    done = 0
    for steps, indices in by_steps.items():
        def step_progress(k: int, _total: int, base=done, n=len(indices)) -> None:
            if progress is not None:
                progress(base + round(n * k / steps), len(trials))

        stack_results = _run_stack(problem, [trials[i] for i in indices], steps, torch.device(device), tuple(trace),
                                   step_progress, memory_budget, compile)
        for i, r in zip(indices, stack_results):
            results[i] = r
        done += len(indices)
        if progress is not None:
            progress(done, len(trials))
    return [results[i] for i in range(len(trials))]


def _run_stack(problem, trials, steps, device, trace, progress, memory_budget, compile) -> list[RunResult]:
    """Trials of one length: invalid hyperparameters fail alone, the rest train as one stack, or as
    consecutive parts of it when one stack would take more than `memory_budget` bytes."""
    out: dict[int, RunResult] = {}
    resolved: dict[int, dict] = {}
    for i, t in enumerate(trials):
        try:
            resolved[i] = rules.resolve(t.optimizer, t.convention, **t.hparams)
        except ValueError as e:
            out[i] = RunResult(t, "failed", error=str(e))
    # Sorted by what the trials are, not by where they came: the same trials give the same stack.
    order = sorted(resolved, key=lambda i: (repr(_rule_key(trials[i], resolved[i])), trials[i].seed, trials[i].run_key))
    parts = math.ceil(len(order) / runs_per_stack(problem, memory_budget)) if order else 0
    for p in range(parts):
        part = order[p * len(order) // parts:(p + 1) * len(order) // parts]

        def part_progress(k: int, total: int, p=p) -> None:
            progress(round((p * total + k) / parts), total)

        for i, r in zip(part, _isolating(problem, [trials[i] for i in part], [resolved[i] for i in part],
                                         steps, device, trace, part_progress, compile)):
            out[i] = r
    return [out[i] for i in range(len(trials))]


def bytes_per_run(problem: Problem) -> int:
    """An upper estimate of what one run adds to a stack: 8 copies of its parameters (parameter,
    gradient, up to three state tensors and the rule's temporaries) and its minibatch's activations
    (``activation_size`` values per example, 4 bytes, kept for the backward and its gradient)."""
    params = problem.init_params(torch.tensor([0]))
    weights = sum(v.numel() * v.element_size() for v in params.values())
    activations = 2 * 4 * int(getattr(problem, "activation_size", 1024)) * int(getattr(problem, "batch_size", None) or 1)
    return 8 * weights + activations


def runs_per_stack(problem: Problem, memory_budget: int = MEMORY_BUDGET) -> int:
    """How many runs of `problem` one stack takes within `memory_budget` bytes (at least one)."""
    return max(1, memory_budget // bytes_per_run(problem))


def _isolating(problem, trials, resolved, steps, device, trace, progress, compile) -> list[RunResult]:
    """Train the stack; if it raises, train each half again on its own (recursively), so that a run
    that raises fails alone with its own traceback and its batch-mates' results are what they would
    have been without it (a run's result does not depend on its batch-mates)."""
    if not trials:
        return []
    started = time.perf_counter()
    try:
        stacked = _train(problem, trials, resolved, steps, device, trace, progress, compile)
    except Exception:  # the user's model or a problem raised
        if len(trials) == 1:
            return [RunResult(trials[0], "failed", error=traceback.format_exc())]
        half = len(trials) // 2
        return (_isolating(problem, trials[:half], resolved[:half], steps, device, trace, None, compile)
                + _isolating(problem, trials[half:], resolved[half:], steps, device, trace, None, compile))
    wall = (time.perf_counter() - started) / len(trials)
    for r in stacked:
        r.wall_time = wall
    return stacked


class _Clock:
    """Seconds spent in the parts of a step. On the CPU every step is timed; on a GPU (asynchronous)
    one step in SAMPLE is timed between synchronisations and scaled up, so timing costs no sync on
    the other steps."""

    SAMPLE = 16

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.totals: dict[str, float] = defaultdict(float)
        self.active = True

    def begin_step(self, step: int) -> None:
        self.active = not self.cuda or step % self.SAMPLE == 0
        self.scale = self.SAMPLE if self.cuda else 1

    def now(self) -> float:
        if self.cuda and self.active:
            torch.cuda.synchronize()
        return time.perf_counter()

    def add(self, part, started: float) -> float:
        """Add the time since `started` to `part` (when this step is timed); returns now."""
        end = self.now() if self.active else 0.0
        if self.active:
            self.totals[part] += (end - started) * self.scale
        return end


def _train(problem, trials, resolved, steps, device, trace, progress, compile) -> list[RunResult]:
    R = len(trials)
    seeds = torch.tensor([t.seed for t in trials])
    params = {k: v.to(device).detach().requires_grad_(True) for k, v in problem.init_params(seeds).items()}
    # Per-run state that is not optimised (BatchNorm statistics), carried beside the parameters.
    buffers = problem.init_buffers(seeds) if hasattr(problem, "init_buffers") else None
    extra = {} if buffers is None else {"buffers": buffers}
    names = list(params)
    leaves = [params[k] for k in names]
    groups = _groups(trials, resolved, params, device)
    sizes = [g.stop - g.start for g in groups]
    batches = _Batches(problem, seeds.tolist(), steps, device)
    schedule = _Schedule(trials, groups, steps)
    clip = _clip_norms(trials, device)
    clock = _Clock(device)
    sparse = (_SparseGradient(problem, groups, whole_gradient=bool(trace) or clip is not None)
              if hasattr(problem, "restrict") else None)

    # The problem's hand-written gradient where it has one (no autograd graph), else autograd.
    hand_gradient = sparse is None and buffers is None and callable(getattr(problem, "loss_and_grad", None))
    lazy = sparse is not None and sparse.lazy
    for g in groups:
        g.compiled = not lazy and compiles_updates(g, steps, device, compile)
    points = set(eval_points(steps))
    curve: dict[str, list[Tensor]] = defaultdict(list)
    curve_steps: list[int] = []
    traces: dict[str, list[Tensor]] = defaultdict(list)
    keep_before = bool({"update_norm", "effective_step", "params"} & set(trace))
    alive = torch.ones(R, dtype=torch.bool, device=device)
    diverged_at = torch.full((R,), -1, dtype=torch.long)
    frozen_rows: Tensor | None = None  # runs that diverged, held at their last parameters
    frozen: dict[str, Tensor] = {}
    bound = problem.loss_bound
    movers = [g for g in groups if g.rule.has_eval_point]  # rules evaluated elsewhere (Schedule-Free)

    # Before the first step every run is where its seed put it (init_params draws each run from its
    # seed alone), so each distinct start is evaluated once: 1/80 of the work for 400 runs on 5 seeds.
    distinct, seed_slot = torch.unique(seeds, return_inverse=True)
    slots = seed_slot.tolist()
    first_of_seed = torch.tensor([slots.index(u) for u in range(len(distinct))])

    def evaluate(step: int) -> None:
        with torch.no_grad():
            for g in movers:
                for k in names:
                    g.per_param[k].to_eval_(g.views[k], g.state[k])
            if step == 0 and not movers and len(first_of_seed) < R:
                at = first_of_seed.to(device)
                starts = {k: v.detach().index_select(0, at) for k, v in params.items()}
                start_extra = {k: {n: b.index_select(0, at) for n, b in v.items()} for k, v in extra.items()}
                metrics = {k: v.index_select(0, seed_slot.to(v.device)) for k, v in problem.evaluate(starts, **start_extra).items()}
            else:
                metrics = problem.evaluate(params, **extra)
            for g in movers:
                for k in names:
                    g.per_param[k].to_train_(g.views[k], g.state[k])
        curve_steps.append(step)
        for k, v in metrics.items():
            curve[k].append(v.detach().to("cpu", torch.float64))

    # The problem's compiled kernels where the work pays for compiling them (`compiles_kernels`).
    with compiled.always() if compiles_kernels(params, steps, compile) else compiled.eager():
        evaluate(0)
        for step in range(steps):
            clock.begin_step(step)
            started = clock.now()
            batch, slot = batches(step)
            kwargs = extra if slot is None else {**extra, "slot": slot}
            if hand_gradient:
                losses, by_name = problem.loss_and_grad(params, batch, **kwargs)
                grads = [by_name[k] for k in names]
            elif sparse is None:
                losses = problem.loss(params, batch, **kwargs)
                grads = torch.autograd.grad(losses.sum(), leaves)
            else:
                losses, grads = sparse.gradient(params, batch, kwargs)
            started = clock.add("model", started)
            # One host sync per step: whether any (still live) run just left the finite, bounded range.
            bad = torch.isfinite(losses).logical_and_(losses <= bound).logical_not_()
            if frozen_rows is not None:
                bad.logical_and_(alive)
            if bool(bad.any()):
                diverged_at[bad.cpu()] = step + 1
                alive.logical_and_(bad.logical_not())
                frozen_rows = torch.nonzero(~alive).flatten()
                frozen = {k: params[k].detach()[frozen_rows].clone() for k in names}
            before = {k: params[k].detach().clone() for k in names} if keep_before else None
            raw_grads = grads
            if clip is not None:
                grads = _clipped(grads, clip)
            started = clock.now()
            with torch.no_grad():
                schedule.apply(step + 1)
                for i, g in enumerate(groups):
                    if g.compiled:  # every parameter in one call
                        fused.update_runs_(g.current or g.rule, [g.views[k] for k in names],
                                           [grad[g.start:g.stop] for grad in grads], [g.state[k] for k in names], step + 1)
                        started = clock.add(i, started)
                        continue
                    for k, grad in zip(names, grads):
                        if lazy:
                            sparse.update_(g, k, grad[g.start:g.stop], step + 1)
                        else:
                            _update_(g, k, grad[g.start:g.stop], step + 1)
                    started = clock.add(i, started)
                if frozen_rows is not None:  # a diverged run is frozen: its NaNs cannot reach the others
                    for k in names:
                        params[k].detach().index_copy_(0, frozen_rows, frozen[k])
            if trace:
                _record(traces, trace, params, dict(zip(names, raw_grads)), before, losses, names)
            if step + 1 in points:
                evaluate(step + 1)
            if progress is not None and (step + 1) % max(1, steps // 20) == 0:
                progress(step + 1, steps)

    results = _results(trials, curve, curve_steps, traces, diverged_at, problem)
    for i, g in enumerate(groups):
        for r in results[g.start:g.stop]:
            r.step_time = {"model": clock.totals["model"] / (R * steps),
                           "update": clock.totals[i] / ((g.stop - g.start) * steps)}
    return results


COMPILE_MIN_WORK = 10**9
"""Value-steps (runs x values per run x steps, of a group or a stack) above which ``compile=None``
compiles a group's update or a stack's problem kernels: compiling, or loading a compiled kernel from
inductor's disk cache in a new process, takes seconds per kernel, which a shorter run does not win
back (measured: the first 8-run digits_mlp stack of a process, 200 steps, 4.9 s against 0.4 s for
the next)."""


def compiles_kernels(params: dict[str, Tensor], steps: int, compile: bool | None) -> bool:
    """Whether a stack (its parameters (R, ...)) runs the problem's compiled kernels
    (`optarena.compiled`): as `compile` says, or (None) where its work, runs x values per run x
    steps, passes `COMPILE_MIN_WORK`."""
    if compile is not None:
        return compile
    return sum(v.numel() for v in params.values()) * steps >= COMPILE_MIN_WORK


def compiles_updates(group: _Group, steps: int, device: torch.device, compile: bool | None) -> bool:
    """Whether `group` is updated by the compiled kernel: never for a rule that is not elementwise, on
    a device other than the CPU, where compiling is switched off (`compiled.enabled`) or ``compile``
    is False; with ``compile=True`` where the group has `fused.MIN_COMPILED_VALUES` values or more; with
    None where it also passes `COMPILE_MIN_WORK`."""
    if not group.rule.elementwise or device.type != "cpu" or not compiled.enabled() or compile is False:
        return False
    values = sum(v.numel() for v in group.views.values())
    if values < fused.MIN_COMPILED_VALUES:
        return False
    return bool(compile) or values * steps >= COMPILE_MIN_WORK


UPDATE_BLOCK_BYTES = 2**22
"""A group's update of one parameter larger than this is applied a block of runs at a time, each
block about this size: the rule's temporaries then stay in cache and are reused by the allocator
instead of being mapped afresh (and page-faulted) every step, which made 8 runs of a 1M-weight
model 3.5x slower per run than one."""


def _update_(group: _Group, name: str, grad: Tensor, step: int) -> None:
    """The group's rule on parameter `name`: at once, or in blocks of runs (`UPDATE_BLOCK_BYTES`)."""
    view, rule, state = group.views[name], group.per_param[name], group.state[name]
    runs = view.shape[0]
    per_block = max(1, UPDATE_BLOCK_BYTES // max(1, view[:1].nbytes))

    def per_run(x) -> bool:
        return isinstance(x, Tensor) and x.ndim > 0 and x.shape[0] == runs

    # State shared by the runs (NAdam's product of momenta when beta1 is one number) is updated
    # once per call: such a group is updated at once.
    if per_block >= runs or not all(per_run(v) for v in state.values() if isinstance(v, Tensor)):
        rule.update_(view, grad, state, step)
        return

    def rows(x, a, b):  # a run-indexed tensor (hyperparameter or state) sliced to runs a..b-1
        return x[a:b] if per_run(x) else x

    for a in range(0, runs, per_block):
        b = min(a + per_block, runs)
        block_rule = dataclasses.replace(rule, **{k: rows(v, a, b) for k, v in rule.hparams().items() if isinstance(v, Tensor)})
        rule_state = {k: rows(v, a, b) for k, v in state.items()}
        block_rule.update_(view[a:b], grad[a:b], rule_state, step)


class _SparseGradient:
    """The gradient of a problem with sparse features (one that has ``restrict``), without the
    dense gradient that autograd would build and zero every step.

    ``problem.restrict(batch)`` gives, per parameter, the columns (last dimension) that the
    minibatch reaches and the minibatch rewritten for the parameters restricted to them; the loss is
    differentiated with respect to those columns only. Then either

    - lazy (every group's rule leaves coordinates with a zero gradient unchanged,
      `Rule.leaves_zero_rows`, and nothing needs the whole gradient: no trace, no clipping): only
      those columns of the parameters and of the state are updated (`rules.base.update_at_`, as
      the drop-ins do for sparse gradients); or
    - one persistent dense gradient per parameter, in which only the last step's columns are zeroed
      and this step's are written, is given to the rules as usual.

    Both give the numbers of autograd on the whole parameters (tested against the dense path)."""

    def __init__(self, problem, groups: list[_Group], whole_gradient: bool) -> None:
        self.problem = problem
        self.lazy = not whole_gradient and all(g.rule.leaves_zero_rows() for g in groups)
        self.columns: dict[str, Tensor] = {}
        self.dense: dict[str, Tensor] = {}

    def gradient(self, params: dict[str, Tensor], batch, kwargs) -> tuple[Tensor, list[Tensor]]:
        columns, local = self.problem.restrict(batch)
        if set(columns) != set(params):
            raise ValueError(f"{type(self.problem).__name__}.restrict must give columns for every parameter "
                             f"({sorted(params)}), gave {sorted(columns)}")
        previous, self.columns = self.columns, columns
        restricted = {k: p.detach().index_select(-1, columns[k]).requires_grad_(True) for k, p in params.items()}
        losses = self.problem.loss(restricted, local, **kwargs)
        grads = torch.autograd.grad(losses.sum(), list(restricted.values()))
        if self.lazy:
            return losses, list(grads)
        whole = []
        for (k, p), grad in zip(params.items(), grads):
            dense = self.dense.get(k)
            if dense is None:
                dense = self.dense[k] = torch.zeros_like(p, requires_grad=False)
            else:
                dense.index_fill_(-1, previous[k], 0.0)
            whole.append(dense.index_copy_(-1, columns[k], grad))
        return losses, whole

    def update_(self, group: _Group, name: str, grad: Tensor, step: int) -> None:
        """The rule of `group` on this step's columns of parameter `name` and of its state."""
        update_at_(group.per_param[name], group.views[name], grad, group.state[name], self.columns[name], -1, step)


class _Schedule:
    """Each run's learning rate times its schedule's factor at every step (a no-op when every run
    of the stack has a constant schedule; then lr stays as the groups built it)."""

    def __init__(self, trials: Sequence[Trial], groups: list[_Group], steps: int) -> None:
        self.groups = groups
        self.active = any(t.schedule != "constant" for t in trials)
        if not self.active:
            return
        cache: dict[tuple[str, float], list[float]] = {}
        for t in trials:
            key = (t.schedule, t.warmup)
            if key not in cache:
                cache[key] = [schedules.factor(t.schedule, s, steps, t.warmup) for s in range(1, steps + 1)]
        # (steps, R), float64 like the stacked hyperparameters (groups' lr is then an (n,) tensor)
        device = groups[0].rule.lr.device
        self.factors = torch.tensor([cache[(t.schedule, t.warmup)] for t in trials], dtype=torch.float64, device=device).T

    def apply(self, step: int) -> None:
        if not self.active:
            return
        for g in self.groups:
            rule = dataclasses.replace(g.rule, lr=g.rule.lr * self.factors[step - 1, g.start:g.stop])
            g.current = rule
            g.per_param = {k: rule.for_param(v) for k, v in g.views.items()}


def _clip_norms(trials: Sequence[Trial], device) -> Tensor | None:
    """Per-run maximum gradient norm (inf: not clipped), or None when no run clips."""
    if all(t.clip_grad_norm is None for t in trials):
        return None
    return torch.tensor([math.inf if t.clip_grad_norm is None else t.clip_grad_norm for t in trials],
                        dtype=torch.float64, device=device)


def _clipped(grads: Sequence[Tensor], max_norm: Tensor) -> list[Tensor]:
    """torch.nn.utils.clip_grad_norm_ per run: total norm over the run's gradients (the norm of the
    per-tensor norms), scaled by min(1, max_norm / (total + 1e-6))."""
    runs = max_norm.shape[0]
    norms = torch.stack([g.reshape(runs, -1).norm(dim=1) for g in grads]).norm(dim=0)
    coef = (max_norm.to(norms.dtype) / (norms + 1e-6)).clamp(max=1.0)
    return [g * coef.view((-1,) + (1,) * (g.ndim - 1)) for g in grads]


def _groups(trials, resolved, params, device) -> list[_Group]:
    """One group per run of consecutive trials with the same rule key (trials come sorted by it)."""
    keys = [_rule_key(t, h) for t, h in zip(trials, resolved)]
    scheduled = any(t.schedule != "constant" for t in trials)
    groups, start = [], 0
    for stop in range(1, len(trials) + 1):
        if stop < len(trials) and keys[stop] == keys[start]:
            continue
        rule = _stacked_rule(trials[start].optimizer, trials[start].convention, resolved[start:stop], device,
                             per_run=("lr",) if scheduled else ())
        views = {k: p.detach()[start:stop] for k, p in params.items()}
        per_param = {k: rule.for_param(v) for k, v in views.items()}
        state = {k: per_param[k].init_state(v) for k, v in views.items()}
        groups.append(_Group(start, stop, rule, per_param, state, views))
        start = stop
    return groups


class _Batches:
    """The minibatches of every step: one stream per distinct seed; runs that share a seed share them.

    ``batches(step)`` returns (batch, slot). By default batch holds one minibatch per run along the
    leading dimension (a stride-0 expand when every run has the same seed: nothing is copied) and
    slot is None. A problem with ``accepts_grouped_batches = True`` instead gets one minibatch per
    distinct seed, (U, B, ...), and slot (R,), each run's row of it. Batches are drawn `PREFETCH`
    steps ahead and stacked (and spread over the runs) once per block, not once per step.
    """

    PREFETCH = 32

    def __init__(self, problem: Problem, seeds: list[int], steps: int, device: torch.device) -> None:
        self.problem, self.device, self.runs, self.steps = problem, device, len(seeds), steps
        unique = sorted(set(seeds))
        index = {s: i for i, s in enumerate(unique)}
        slot = [index[s] for s in seeds]
        self.generators = [seed_generator(s, "batches") for s in unique]
        self.grouped = bool(getattr(problem, "accepts_grouped_batches", False))
        self.slot = torch.tensor(slot, dtype=torch.long, device=device)
        # Gather per run only when runs differ in seed and are not already one per seed in order.
        self.spread = not self.grouped and len(unique) > 1 and slot != list(range(len(seeds)))
        self.block: tuple[Tensor, ...] | None = None
        self.block_start = 0

    def __call__(self, step: int) -> tuple[tuple[Tensor, ...] | None, Tensor | None]:
        if self.block is None or not self.block_start <= step < self.block_start + self.PREFETCH:
            if not self._draw(step):
                return None, None
        i = step - self.block_start
        batch = tuple(t[i] for t in self.block)
        if self.grouped:
            return batch, self.slot
        if batch[0].shape[0] == 1 and self.runs > 1:  # one seed: the same minibatch for every run
            batch = tuple(t.expand((self.runs,) + t.shape[1:]) for t in batch)
        return batch, None

    def _draw(self, start: int) -> bool:
        """Batches of steps start .. start + PREFETCH - 1 (in step order per generator), as (steps, U or R, B, ...)."""
        stop = min(start + self.PREFETCH, self.steps)
        per_step = [[self.problem.batch(step, g) for g in self.generators] for step in range(start, stop)]
        if per_step[0][0] is None:
            return False
        parts = len(per_step[0][0])
        block = [torch.stack([torch.stack([b[j] for b in seeds]) for seeds in per_step]).to(self.device) for j in range(parts)]
        if self.spread:
            block = [t[:, self.slot] for t in block]
        self.block, self.block_start = tuple(block), start
        return True


def _record(traces, trace, params, grads, before, losses, names) -> None:
    with torch.no_grad():
        if "loss" in trace:
            traces["loss"].append(losses.detach().to("cpu", torch.float64))
        flat_g = torch.cat([grads[k].reshape(grads[k].shape[0], -1) for k in names], dim=1)
        if "grad_norm" in trace:
            traces["grad_norm"].append(flat_g.norm(dim=1).to("cpu", torch.float64))
        if before is not None:
            flat_dw = torch.cat([(params[k].detach() - before[k]).reshape(flat_g.shape[0], -1) for k in names], dim=1)
            if "update_norm" in trace:
                traces["update_norm"].append(flat_dw.norm(dim=1).to("cpu", torch.float64))
            if "effective_step" in trace:
                ratio = flat_dw.abs() / flat_g.abs()
                ratio = torch.where(flat_g.abs() > 1e-12, ratio, torch.full_like(ratio, float("nan")))
                traces["effective_step"].append(ratio.nanmedian(dim=1).values.to("cpu", torch.float64))
            if "params" in trace:
                if not traces["params"]:
                    traces["params"].append(torch.cat([before[k].reshape(flat_g.shape[0], -1) for k in names], dim=1).to("cpu", torch.float64))
                traces["params"].append(torch.cat([params[k].detach().reshape(flat_g.shape[0], -1) for k in names], dim=1).to("cpu", torch.float64))


def _results(trials, curve, curve_steps, traces, diverged_at, problem) -> list[RunResult]:
    """Per-run results; a diverged run keeps its curve up to the last evaluation before divergence."""
    curves = {k: torch.stack(v, dim=1) for k, v in curve.items()}  # (R, n_points)
    trace_arrays = {k: torch.stack(v, dim=1) for k, v in traces.items()}
    results = []
    for r, t in enumerate(trials):
        d = int(diverged_at[r])
        n = len(curve_steps) if d < 0 else sum(1 for s in curve_steps if s < d)
        run_curve = {"step": [float(s) for s in curve_steps[:n]]}
        run_curve.update({k: v[r, :n].tolist() for k, v in curves.items()})
        run_trace = {k: v[r].tolist() for k, v in trace_arrays.items()}
        if d < 0:
            final = {k: float(v[r, -1]) for k, v in curves.items()}
            results.append(RunResult(t, "done", run_curve, final, trace=run_trace))
        else:
            # Diverged at step d (its loss was bad, its update withheld): loss and gradient of steps
            # 1..d, the d - 1 updates applied, and the d parameter vectors those losses were taken at.
            limit = {"loss": d, "grad_norm": d, "update_norm": d - 1, "effective_step": d - 1, "params": d}
            run_trace = {k: v[: limit[k]] for k, v in run_trace.items()}
            results.append(RunResult(t, "diverged", run_curve, _final_for_diverged(curves), diverged_at=d, trace=run_trace))
    return results
