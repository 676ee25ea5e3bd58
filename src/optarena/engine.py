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

A run whose loss leaves the finite range or exceeds ``problem.loss_bound`` is marked diverged at that
step and frozen: its parameters are held where they were, the others go on. Costs nothing until a
run diverges (one host sync per step decides it).

``run(problem, trials)`` must give, for every run r, what ``run_sequential(problem, [trial_r])`` gives:
the plain loop with ``optarena.optim`` that users write today (tested: to 1e-5; bitwise for a trial
alone, and bitwise for the same trials in any order).
"""

from __future__ import annotations

import math
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor

from optarena import optim, rules
from optarena.problems.base import Problem, seed_generator
from optarena.rules.base import Rule
from optarena.trial import RunResult, Trial

TRACES = ("params", "loss", "update_norm", "grad_norm", "effective_step")
"""Per-step recordings a study may ask for: flattened parameters (small problems only), minibatch
loss, norm of the update, norm of the gradient, and the median over coordinates of |dw_i| / |g_i|
(the effective per-parameter step size)."""

ProgressFn = Callable[[int, int], None]


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


def _rule_key(trial: Trial, resolved: dict) -> tuple:
    return rules.code_path(trial.optimizer, trial.convention, resolved)


def _stacked_rule(name: str, convention: str, resolved: list[dict], device) -> Rule:
    """One rule for many runs: a hyperparameter equal in all runs stays a float, else a (R,) tensor."""
    hparams = {}
    for key in resolved[0]:
        values = [r[key] for r in resolved]
        if isinstance(values[0], bool) or all(v == values[0] for v in values):
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
) -> list[RunResult]:
    """Train every trial of `problem` at once; results in the order of `trials`.

    Trials of different lengths are run as separate stacks. A trial whose hyperparameters are
    invalid is returned as "failed" with the error; an exception inside the batched computation
    fails every run of that stack (with the traceback) and the other stacks go on.
    """
    for t in trials:
        if t.problem != problem.name:
            raise ValueError(f"trial for problem {t.problem!r} given to engine.run with problem {problem.name!r}")
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

        stack_results = _run_stack(problem, [trials[i] for i in indices], steps, torch.device(device), tuple(trace), step_progress)
        for i, r in zip(indices, stack_results):
            results[i] = r
        done += len(indices)
        if progress is not None:
            progress(done, len(trials))
    return [results[i] for i in range(len(trials))]


def _run_stack(problem, trials, steps, device, trace, progress) -> list[RunResult]:
    out: dict[int, RunResult] = {}
    resolved: dict[int, dict] = {}
    for i, t in enumerate(trials):
        try:
            resolved[i] = rules.resolve(t.optimizer, t.convention, **t.hparams)
        except ValueError as e:
            out[i] = RunResult(t, "failed", error=str(e))
    order = sorted(resolved, key=lambda i: (repr(_rule_key(trials[i], resolved[i])), trials[i].seed, i))
    if not order:
        return [out[i] for i in range(len(trials))]
    started = time.perf_counter()
    try:
        stacked = _train(problem, [trials[i] for i in order], [resolved[i] for i in order], steps, device, trace, progress)
    except Exception:  # the user's model or a problem raised: fail this stack, keep the study going
        error = traceback.format_exc()
        for i in order:
            out[i] = RunResult(trials[i], "failed", error=error)
        return [out[i] for i in range(len(trials))]
    wall = (time.perf_counter() - started) / len(order)
    for position, i in enumerate(order):
        r = stacked[position]
        r.wall_time = wall
        out[i] = r
    return [out[i] for i in range(len(trials))]


def _train(problem, trials, resolved, steps, device, trace, progress) -> list[RunResult]:
    R = len(trials)
    seeds = [t.seed for t in trials]
    # Same storage as init_params returned (a user's problem finds its per-run buffers by it).
    params = {k: v.to(device).detach().requires_grad_(True) for k, v in problem.init_params(torch.tensor(seeds)).items()}
    names = list(params)
    leaves = [params[k] for k in names]
    groups = _groups(trials, resolved, params, device)
    sizes = [g.stop - g.start for g in groups]
    batches = _Batches(problem, seeds, steps, device)

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

    def evaluate(step: int) -> None:
        with torch.no_grad():
            metrics = problem.evaluate(params)
        curve_steps.append(step)
        for k, v in metrics.items():
            curve[k].append(v.detach().to("cpu", torch.float64))

    evaluate(0)
    for step in range(steps):
        batch, slot = batches(step)
        losses = problem.loss(params, batch) if slot is None else problem.loss(params, batch, slot=slot)
        grads = torch.autograd.grad(losses.sum(), leaves)
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
        with torch.no_grad():
            for k, grad in zip(names, grads):
                for g, grad_g in zip(groups, grad.split(sizes)):
                    g.per_param[k].update_(g.views[k], grad_g, g.state[k], step + 1)
                if frozen_rows is not None:  # a diverged run is frozen: its NaNs cannot reach the others
                    params[k].detach().index_copy_(0, frozen_rows, frozen[k])
        if trace:
            _record(traces, trace, params, dict(zip(names, grads)), before, losses, names)
        if step + 1 in points:
            evaluate(step + 1)
        if progress is not None and (step + 1) % max(1, steps // 20) == 0:
            progress(step + 1, steps)

    return _results(trials, curve, curve_steps, traces, diverged_at, problem)


def _groups(trials, resolved, params, device) -> list[_Group]:
    """One group per run of consecutive trials with the same rule key (trials come sorted by it)."""
    keys = [_rule_key(t, h) for t, h in zip(trials, resolved)]
    groups, start = [], 0
    for stop in range(1, len(trials) + 1):
        if stop < len(trials) and keys[stop] == keys[start]:
            continue
        rule = _stacked_rule(trials[start].optimizer, trials[start].convention, resolved[start:stop], device)
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


def run_sequential(problem: Problem, trials: Sequence[Trial], device: str | torch.device = "cpu") -> list[RunResult]:
    """The plain loop users write: one trial after another with ``optarena.optim``.

    The reference the engine is tested against, and the baseline of benchmarks/sweep_throughput.py.
    """
    results = []
    for t in trials:
        started = time.perf_counter()
        params = {k: v.to(device).detach().requires_grad_(True) for k, v in problem.init_params(torch.tensor([t.seed])).items()}
        opt = optim.create(t.optimizer, params.values(), t.convention, **t.hparams)
        generator = seed_generator(t.seed, "batches")
        points = set(eval_points(t.steps))
        curve: dict[str, list[float]] = defaultdict(list)

        def evaluate(step):
            with torch.no_grad():
                curve["step"].append(float(step))
                for k, v in problem.evaluate(params).items():
                    curve[k].append(float(v[0]))

        evaluate(0)
        status, diverged = "done", None
        for step in range(t.steps):
            batch = problem.batch(step, generator)
            if batch is not None:
                batch = tuple(b.to(device).unsqueeze(0) for b in batch)
            opt.zero_grad()
            loss = problem.loss(params, batch).sum()
            value = loss.item()
            if not (math.isfinite(value) and value <= problem.loss_bound):
                status, diverged = "diverged", step + 1
                break
            loss.backward()
            opt.step()
            if step + 1 in points:
                evaluate(step + 1)
        final = {k: v[-1] for k, v in curve.items() if k != "step"}
        if status == "diverged":
            final = _final_for_diverged(final)
        results.append(RunResult(t, status, dict(curve), final, time.perf_counter() - started, diverged))
    return results
