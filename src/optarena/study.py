"""Studies: the same tuning budget for every optimizer, selection on held-out loss, then the chosen
setting (and the untuned defaults) rerun over seeds. Every run goes through the store, so a study
that is interrupted resumes where it stopped, and every number can be traced to its runs.

Protocol (DeepOBS, Schmidt et al. 2021): tuning trials use seed 0; the chosen setting and the
defaults are rerun with seeds 1..S, so that the reported runs are not the ones used for selection.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from optarena import engine, problems, tuning
from optarena.store import Store, run_missing
from optarena.trial import RunResult, Trial

ProgressFn = Callable[[int], None]
"""Called with the number of runs just finished (stored ones included)."""


@dataclass(frozen=True)
class Study:
    """What to run. ``budget`` tuning trials per optimizer (0: no tuning), ``seeds`` reruns of the
    chosen setting and of the defaults, and/or explicit ``fixed`` trials (sweeps, mechanisms)."""

    name: str
    problem: str
    optimizers: tuple[str, ...] = ()
    convention: str = "article"
    budget: int = 0
    seeds: int = 0
    steps: int | None = None
    method: str = "grid"
    extra: tuple[str, ...] = ()
    lr_range: tuple[float, float] = tuning.LR_RANGE
    defaults: bool = True
    fixed: tuple[Trial, ...] = ()
    trace: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in tuning.METHODS:
            raise ValueError(f"method must be one of {tuning.METHODS}, got {self.method!r}")
        if self.budget < 0 or self.seeds < 0:
            raise ValueError(f"budget and seeds must be >= 0, got {self.budget}, {self.seeds}")
        if self.budget and not self.seeds:
            raise ValueError("a tuned study needs seeds >= 1 for the reruns of the chosen setting")

    @property
    def n_runs(self) -> int:
        per_optimizer = self.budget + self.seeds * ((1 if self.budget else 0) + (1 if self.defaults else 0))
        return len(self.optimizers) * per_optimizer + len(self.fixed)


@dataclass
class StudyResult:
    study: Study
    tuning: dict[str, list[RunResult]] = field(default_factory=dict)
    best: dict[str, dict[str, float]] = field(default_factory=dict)
    tuned: dict[str, list[RunResult]] = field(default_factory=dict)
    defaults: dict[str, list[RunResult]] = field(default_factory=dict)
    fixed: list[RunResult] = field(default_factory=list)

    def runs(self) -> list[RunResult]:
        out = list(self.fixed)
        for group in (self.tuning, self.tuned, self.defaults):
            for rs in group.values():
                out.extend(rs)
        return out

    def run_keys(self) -> list[str]:
        return sorted({r.trial.run_key for r in self.runs()})


def objective(result: RunResult, metric: str = "val_loss") -> float:
    """The held-out loss of a run; inf when it diverged or failed."""
    if result.status != "done":
        return math.inf
    value = result.final.get(metric, math.inf)
    return value if math.isfinite(value) else math.inf


@functools.lru_cache(maxsize=8)
def load_problem(name: str, device: str = "cpu"):
    """Problems hold their data; build each once per process."""
    return problems.get(name, device=device)


def execute(
    study: Study,
    store: Store,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    problem=None,
    batch_size: int | None = None,
) -> StudyResult:
    """Run `study` (only the runs the store lacks) and collect its results."""
    problem = problem if problem is not None else load_problem(study.problem, str(device))
    steps = study.steps or problem.default_steps

    def runner(trials: list[Trial]) -> list[RunResult]:
        return engine.run(problem, trials, device=device, trace=study.trace)

    def run(trials: list[Trial]) -> list[RunResult]:
        last = [0]

        def on_batch(done: int, total: int) -> None:
            if progress is not None:
                progress(done - last[0])
            last[0] = done

        stored = len(trials) - len(store.missing(trials))
        if progress is not None and stored:
            progress(stored)
        return run_missing(store, trials, runner, batch_size=batch_size, on_batch=on_batch)

    def trial(optimizer: str, hparams: dict, seed: int) -> Trial:
        return Trial(study.problem, optimizer, study.convention, hparams, seed, steps)

    result = StudyResult(study)
    if study.budget:
        spaces = {o: tuning.space(o, study.extra, study.lr_range) for o in study.optimizers}
        if study.method == "tpe":
            for o in study.optimizers:
                ran: list[RunResult] = []

                def evaluate(points, o=o, ran=ran):
                    ran.extend(run([trial(o, p, 0) for p in points]))
                    return [objective(r) for r in ran[-len(points):]]

                tuning.tpe_search(spaces[o], study.budget, evaluate, seed=0)
                result.tuning[o] = ran
        else:
            points = {
                o: tuning.grid(spaces[o], study.budget) if study.method == "grid" else tuning.random_points(spaces[o], study.budget, seed=0)
                for o in study.optimizers
            }
            all_trials = [trial(o, p, 0) for o in study.optimizers for p in points[o]]
            done = run(all_trials)
            for o in study.optimizers:
                result.tuning[o] = [r for r in done if r.trial.optimizer == o]
        for o in study.optimizers:
            best = min(result.tuning[o], key=lambda r: (objective(r), r.trial.hparams.get("lr", 0.0)))
            result.best[o] = dict(best.trial.hparams)

    seeds = range(1, study.seeds + 1)
    reruns = []
    if study.budget:
        reruns += [trial(o, result.best[o], s) for o in study.optimizers for s in seeds]
    if study.defaults:
        reruns += [trial(o, {}, s) for o in study.optimizers for s in seeds]
    if reruns:
        done = {r.trial.run_key: r for r in run(reruns)}
        for o in study.optimizers:
            if study.budget:
                result.tuned[o] = [done[trial(o, result.best[o], s).run_key] for s in seeds]
            if study.defaults:
                result.defaults[o] = [done[trial(o, {}, s).run_key] for s in seeds]
    if study.fixed:
        result.fixed = run(list(study.fixed))
    return result


def execute_all(studies: Sequence[Study], store: Store, device: str = "cpu", progress: ProgressFn | None = None) -> dict[str, StudyResult]:
    """Run several studies (each name once)."""
    out: dict[str, StudyResult] = {}
    for s in studies:
        if s.name not in out:
            out[s.name] = execute(s, store, device, progress)
    return out
