"""The batched engine: many trials of one problem trained as one vectorised computation.

All trials are stacked along a leading run dimension R. Each step does one forward and one backward
pass for all R runs (the loss of run r depends only on run r's parameters, so the gradient of the
summed loss is every run's own gradient), then applies each rule to its contiguous slice of runs.
Runs are sorted so that runs of one rule (optimizer, convention and boolean options) are contiguous;
hyperparameters that differ between those runs become per-run tensors (see `optarena.rules.base`).

``run(problem, trials)`` must give, for every run r, what ``run_sequential(problem, [trial_r])`` gives:
the plain loop with ``optarena.optim`` that users write today (tested).
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


def _rule_key(trial: Trial, resolved: dict) -> tuple:
    bools = tuple(sorted((k, v) for k, v in resolved.items() if isinstance(v, bool)))
    # A structural momentum switch: runs with and without a momentum buffer cannot share code.
    has_momentum = bool(resolved.get("momentum", 0.0))
    return (trial.optimizer, trial.convention, bools, has_momentum)


def _stacked_rule(name: str, convention: str, resolved: list[dict], device) -> Rule:
    """One rule for many runs: a hyperparameter equal in all runs stays a float, else a (R,) tensor."""
    hparams = {}
    for key in resolved[0]:
        values = [r[key] for r in resolved]
        if isinstance(values[0], bool) or all(v == values[0] for v in values):
            hparams[key] = values[0]
        else:
            hparams[key] = torch.tensor(values, dtype=torch.float64, device=device)
    return rules.build(name, convention, **hparams)


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
    seeds = torch.tensor([t.seed for t in trials], dtype=torch.long)
    params = {k: v.to(device).detach().requires_grad_(True) for k, v in problem.init_params(seeds).items()}
    names = list(params)

    # Runs of one rule are contiguous (trials come sorted by rule key).
    groups: list[_Group] = []
    start = 0
    for r in range(1, R + 1):
        if r == R or _rule_key(trials[r], resolved[r]) != _rule_key(trials[start], resolved[start]):
            rule = _stacked_rule(trials[start].optimizer, trials[start].convention, resolved[start:r], device)
            views = {k: params[k].detach()[start:r] for k in names}
            per_param = {k: rule.for_param(views[k]) for k in names}
            state = {k: per_param[k].init_state(views[k]) for k in names}
            groups.append(_Group(start, r, rule, per_param, state))
            start = r
    views = [{k: params[k].detach()[g.start:g.stop] for k in names} for g in groups]

    # One batch stream per distinct seed; runs that share a seed share their minibatches.
    unique_seeds = sorted(set(seeds.tolist()))
    slot = torch.tensor([unique_seeds.index(s) for s in seeds.tolist()], device=device)
    generators = [seed_generator(s, "batches") for s in unique_seeds]
    shared = len(unique_seeds) == 1

    points = eval_points(steps)
    curve: dict[str, list[Tensor]] = defaultdict(list)
    curve_steps: list[int] = []
    traces: dict[str, list[Tensor]] = defaultdict(list)
    alive = torch.ones(R, dtype=torch.bool, device=device)
    diverged_at = torch.full((R,), -1, dtype=torch.long)
    bound = problem.loss_bound

    def evaluate(step: int) -> None:
        with torch.no_grad():
            metrics = problem.evaluate(params)
        curve_steps.append(step)
        for k, v in metrics.items():
            curve[k].append(v.detach().to("cpu", torch.float64))

    evaluate(0)
    for step in range(steps):
        batch = _stack_batches([problem.batch(step, g) for g in generators], slot, shared, R, device)
        losses = problem.loss(params, batch)
        grads = torch.autograd.grad(losses.sum(), [params[k] for k in names])
        grads = dict(zip(names, grads))
        ok = torch.isfinite(losses) & (losses <= bound)
        newly = alive & ~ok
        if bool(newly.any()):
            diverged_at[newly.cpu()] = step + 1
            alive &= ok
        if not bool(alive.all()):  # frozen runs get no update (their NaNs cannot reach other runs)
            grads = {k: torch.where(alive.view((-1,) + (1,) * (g.ndim - 1)), g, torch.zeros((), dtype=g.dtype, device=device)) for k, g in grads.items()}
        before = {k: params[k].detach().clone() for k in names} if {"update_norm", "effective_step", "params"} & set(trace) else None
        with torch.no_grad():
            for g, v in zip(groups, views):
                for k in names:
                    g.per_param[k].apply_(v[k], grads[k][g.start:g.stop], g.state[k], step + 1)
        if trace:
            _record(traces, trace, params, grads, before, losses, names)
        if step + 1 in points:
            evaluate(step + 1)
        if progress is not None and (step + 1) % max(1, steps // 20) == 0:
            progress(step + 1, steps)

    return _results(trials, curve, curve_steps, traces, diverged_at, problem)


def _stack_batches(batches: list, slot: Tensor, shared: bool, R: int, device) -> tuple | None:
    if batches[0] is None:
        return None
    stacked = []
    for parts in zip(*batches):
        if shared:
            t = parts[0].to(device).unsqueeze(0)
            stacked.append(t.expand((R,) + t.shape[1:]))
        else:
            stacked.append(torch.stack([p.to(device) for p in parts])[slot])
    return tuple(stacked)


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
            limit = d if "params" not in run_trace else d + 1
            run_trace = {k: v[:limit] for k, v in run_trace.items()}
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
        points = eval_points(t.steps)
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
            if not (math.isfinite(loss.item()) and loss.item() <= problem.loss_bound):
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
