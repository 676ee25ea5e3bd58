"""Studies: the one executor of every experiment. A `TunedStudy` gives every optimizer the same
tuning budget, selects on held-out loss and reruns the chosen setting (and the untuned defaults)
over fresh seeds; a `Sweep` runs a given list of trials. Every run goes through the store, so an
interrupted study resumes where it stopped, and every number can be traced to its runs.

Protocol (DeepOBS, Schmidt et al. 2021): tuning points run on seeds 0..k-1 (``selection_seeds``,
selection on the mean held-out loss over them; a point that diverged or failed on any of them is
never chosen); the chosen setting and the defaults are rerun on seeds k..k+S-1, so the reported
runs are not the ones used for selection.

``execute(study, store, backend=..., stored_only=False)``: trials the store lacks are run in
batches on the backend (local by default; see ``optarena.backends``), each batch written in one
transaction. With ``stored_only=True`` nothing is trained: a study whose runs are not all stored
raises `MissingRuns` naming them (``optarena report`` uses this).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optarena import problems, tuning
from optarena.backends import Backend, Job, LocalBackend
from optarena.store import Store
from optarena.trial import RunResult, Trial

ProgressFn = Callable[[int], None]
"""Called with the number of runs just finished (stored ones included)."""

MODES = ("full", "quick")


@dataclass(frozen=True, order=True)
class StudyKey:
    """A study's identity: its kind ("tuned", "deep", "M2", ...), its problem and its mode
    ("quick", "full", or "" where there is none). ``str(key)`` is "kind/problem/mode"."""

    kind: str
    problem: str
    mode: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.kind, self.problem, self.mode) if p)


@dataclass(frozen=True)
class Setup:
    """The training setup every trial of a study gets: steps (None: the problem's default), the
    learning-rate schedule and its warmup fraction, gradient clipping."""

    steps: int | None = None
    schedule: str = "constant"
    warmup: float = 0.0
    clip_grad_norm: float | None = None

    def __post_init__(self) -> None:
        """The same checks as every Trial's, so a bad setup fails before any run (ValueError)."""
        from optarena import schedules
        from optarena.trial import check_clip_grad_norm

        schedules.check(self.schedule, self.warmup)
        object.__setattr__(self, "warmup", float(self.warmup))
        object.__setattr__(self, "clip_grad_norm", check_clip_grad_norm(self.clip_grad_norm))


@dataclass(frozen=True)
class TunedStudy:
    """Every optimizer tuned with ``budget`` points over its search space (lr plus ``tune``),
    selected on the mean held-out loss over ``selection_seeds`` seeds, then the chosen setting and
    (with ``defaults``) the convention's defaults rerun over ``seeds`` fresh seeds."""

    key: StudyKey
    optimizers: tuple[str, ...]
    convention: str = "article"
    budget: int = 8
    seeds: int = 3
    method: str = "grid"
    tune: tuple[str, ...] = ()
    lr_range: tuple[float, float] = tuning.LR_RANGE
    defaults: bool = True
    selection_seeds: int = 1
    setup: Setup = Setup()
    problem_options: tuple[tuple[str, Any], ...] = ()
    trace: tuple[str, ...] = ()
    optuna_storage: str | None = None
    fixed: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = ()
    """Per optimizer, hyperparameters held at given values in every trial (tuning points override
    them, the untuned reruns use them): e.g. (("nadam", (("momentum_decay", 1e3),)),)."""

    def __post_init__(self) -> None:
        unknown = [o for o, _ in self.fixed if o not in self.optimizers]
        if unknown:
            raise ValueError(f"fixed names optimizers the study does not run: {unknown}")
        if self.method not in tuning.METHODS:
            raise ValueError(f"method must be one of {tuning.METHODS}, got {self.method!r}")
        for label, value, low in (("budget", self.budget, 1), ("seeds", self.seeds, 1), ("selection_seeds", self.selection_seeds, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")

    @property
    def problem(self) -> str:
        return self.key.problem

    @property
    def steps(self) -> int | None:
        """The training steps of every run (None: the problem's default)."""
        return self.setup.steps

    @property
    def n_runs(self) -> int:
        per_optimizer = self.budget * self.selection_seeds + self.seeds * (1 + (1 if self.defaults else 0))
        return len(self.optimizers) * per_optimizer

    def rerun_seeds(self) -> range:
        return range(self.selection_seeds, self.selection_seeds + self.seeds)

    def fixed_for(self, optimizer: str) -> dict[str, float]:
        return dict(next((hp for o, hp in self.fixed if o == optimizer), ()))


@dataclass(frozen=True)
class Sweep:
    """A given list of trials (mechanism studies, trajectories, baselines)."""

    key: StudyKey
    trials: tuple[Trial, ...]
    trace: tuple[str, ...] = ()
    problem_options: tuple[tuple[str, Any], ...] = ()

    @property
    def problem(self) -> str:
        return self.key.problem

    @property
    def steps(self) -> int:
        """The longest run's steps (0 for no trials)."""
        return max((t.steps for t in self.trials), default=0)

    @property
    def n_runs(self) -> int:
        return len(set(self.trials))


Study = TunedStudy | Sweep


@dataclass
class StudyResult:
    """What a study produced. For a TunedStudy: ``tuning[o]`` every tuning run, ``points[o]`` the
    tuned points with their selection objective, ``best[o]`` the chosen hyperparameters, ``tuned[o]``
    and ``defaults[o]`` the reruns (in seed order). For a Sweep: ``runs``, in the order of its trials."""

    study: Study
    tuning: dict[str, list[RunResult]] = field(default_factory=dict)
    points: dict[str, list[tuple[dict[str, float], float]]] = field(default_factory=dict)
    best: dict[str, dict[str, float]] = field(default_factory=dict)
    tuned: dict[str, list[RunResult]] = field(default_factory=dict)
    defaults: dict[str, list[RunResult]] = field(default_factory=dict)
    runs: list[RunResult] = field(default_factory=list)

    @property
    def key(self) -> StudyKey:
        return self.study.key

    def all_runs(self) -> list[RunResult]:
        out = list(self.runs)
        for group in (self.tuning, self.tuned, self.defaults):
            for rs in group.values():
                out.extend(rs)
        return out

    def run_keys(self) -> list[str]:
        return sorted({r.trial.run_key for r in self.all_runs()})


class MissingRuns(RuntimeError):
    """`execute(..., stored_only=True)` found trials with no stored result."""

    def __init__(self, key: StudyKey, trials: list[Trial]) -> None:
        self.key, self.trials = key, trials
        first = trials[0]
        super().__init__(f"study {key}: {len(trials)} runs are not in the store (first: {first.optimizer} "
                         f"{first.convention} {dict(first.hparams)} seed {first.seed} on {first.problem})")


def by_kind(results: Mapping[StudyKey, StudyResult], kind: str) -> dict[str, StudyResult]:
    """{problem: result} of the studies of `kind` in `results`, full mode's where present, else quick's."""
    for mode in MODES + ("",):
        found = {k.problem: r for k, r in results.items() if k.kind == kind and k.mode == mode}
        if found:
            return found
    return {}


def objective(result: RunResult, metric: str = "val_loss") -> float:
    """The held-out loss of a run; inf when it diverged or failed."""
    if result.status != "done":
        return math.inf
    value = result.final.get(metric, math.inf)
    return value if math.isfinite(value) else math.inf


def mean_objective(runs: Sequence[RunResult], metric: str = "val_loss") -> float:
    """Mean held-out loss over seeds; inf when any run diverged or failed."""
    values = [objective(r, metric) for r in runs]
    return float(np.mean(values)) if values and all(map(math.isfinite, values)) else math.inf


@functools.lru_cache(maxsize=8)
def load_problem(name: str, device: str = "cpu", options: tuple[tuple[str, Any], ...] = ()):
    """Problems hold their data; build each once per process."""
    return problems.get(name, device=device, **dict(options))


# ---- running trials through the store -----------------------------------------------------------


def run_missing(
    store: Store,
    trials: Iterable[Trial],
    job: Job,
    backend: Backend | None = None,
    batch_size: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[RunResult]:
    """Run the trials that have no stored result and return the results of ALL `trials`, in order.

    The missing trials are split into batches (of at most `batch_size`; and into at least one per
    backend worker, so every worker stays busy), each batch's results written with ``put_many`` as
    soon as it finishes, then ``on_batch(n)`` with the number of runs it held. If a batch raises,
    the batches already finished stay stored and a second call runs only the rest.
    """
    backend = backend or LocalBackend()
    trials = list(trials)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    todo = store.missing(trials)
    fresh: dict[str, RunResult] = {}
    batches = plan_batches(todo, backend.workers(), batch_size)
    for index, results in backend.map(job, batches):
        batch = batches[index]
        expected = {t.run_key for t in batch}
        results = [r for r in results if r.trial.run_key in expected]
        store.put_many(results)  # what it did return is kept
        lacking = expected - {r.trial.run_key for r in results}
        if lacking:
            raise RuntimeError(
                f"the runner returned no result for {len(lacking)} of the {len(batch)} trials it "
                f"was given; it must return one RunResult per trial"
            )
        fresh.update((r.trial.run_key, r) for r in results)
        if on_batch is not None:
            on_batch(len(batch))
    stored = store.get_many(t for t in trials if t.run_key not in fresh)
    by_key = {**stored, **fresh}
    absent = [t for t in trials if t.run_key not in by_key]
    if absent:  # another process replaced or deleted rows meanwhile; should not happen
        raise RuntimeError(f"{len(absent)} trials have no result after running (first: {absent[0]})")
    return [by_key[t.run_key] for t in trials]


BATCH_TARGET = 32
"""Runs per batch the planner aims at: enough for the engine's stacked work to pay, small enough
that a study's batches keep every worker of a backend busy."""


def plan_batches(trials: Sequence[Trial], workers: int = 1, batch_size: int | None = None) -> list[list[Trial]]:
    """Split trials into batches of about ``BATCH_TARGET`` (at most `batch_size`), in an order set
    by what the trials are (steps, optimizer, convention, seed), so that trials of one optimizer
    and seed stay together (they share a code path and minibatches).

    The plan depends on the trials alone, never on `workers` (kept for callers; unused): a run's
    numbers depend, in the last bits, on the batch it was stacked with (the matrix products have
    other shapes), so the same plan on every backend is what makes their results bitwise equal."""
    if not trials:
        return []
    ordered = sorted(trials, key=lambda t: (t.steps, t.optimizer, t.convention, t.seed, t.run_key))
    n_batches = max(1, round(len(ordered) / BATCH_TARGET))
    size = math.ceil(len(ordered) / n_batches)
    if batch_size is not None:
        size = min(size, batch_size)
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


# ---- the executor ---------------------------------------------------------------------------------


class _Runner:
    """Runs (or, stored_only, looks up) trials of one study through the store, reporting progress."""

    def __init__(self, study: Study, store: Store, job: Job, backend: Backend | None, progress: ProgressFn | None,
                 batch_size: int | None, stored_only: bool) -> None:
        self.study, self.store, self.job, self.backend = study, store, job, backend
        self.progress, self.batch_size, self.stored_only = progress, batch_size, stored_only

    def __call__(self, trials: list[Trial]) -> list[RunResult]:
        if self.stored_only:
            found = self.store.get_many(trials)
            missing = [t for t in dict.fromkeys(trials) if t.run_key not in found]
            if missing:
                raise MissingRuns(self.study.key, missing)
            return [found[t.run_key] for t in trials]
        unique = list(dict.fromkeys(trials))
        stored = len(unique) - len(self.store.missing(unique))
        if self.progress is not None and stored:
            self.progress(stored)
        return run_missing(self.store, trials, self.job, self.backend, self.batch_size, self.progress)


def execute(
    study: Study,
    store: Store,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    problem=None,
    batch_size: int | None = None,
    backend: Backend | None = None,
    stored_only: bool = False,
    factory: Callable[[], object] | None = None,
) -> StudyResult:
    """Run `study` (only the runs the store lacks) and collect its results.

    `problem`: a ready Problem (e.g. a user's model); by default the registry's, built once per
    process. `factory`: how a worker in another process builds the same problem (backends other
    than local); the default rebuilds a registry problem by name."""
    local = backend is None or backend.name == "local"
    if problem is None and not stored_only and local:
        # Workers of other backends build their own (from `factory`); the driver needs none.
        problem = load_problem(study.problem, str(device), study.problem_options)
    if factory is None:
        factory = functools.partial(load_problem, study.problem, str(device), study.problem_options)
    job = Job(problem, factory, str(device), tuple(study.trace))
    run = _Runner(study, store, job, backend, progress, batch_size, stored_only)
    if isinstance(study, Sweep):
        return StudyResult(study, runs=run(list(study.trials)))
    steps = study.setup.steps or (problem.default_steps if problem is not None else None)
    if steps is None:  # a registry problem's class knows its default steps without its data
        cls = problems.PROBLEMS.get(study.problem)
        steps = cls.default_steps if cls is not None else load_problem(study.problem, "cpu", study.problem_options).default_steps
    return _tuned(study, run, steps)


def trial_of(study: TunedStudy, optimizer: str, hparams: Mapping[str, float], seed: int, steps: int) -> Trial:
    s = study.setup
    return Trial(study.problem, optimizer, study.convention, {**study.fixed_for(optimizer), **hparams}, seed, steps,
                 s.schedule, s.warmup, s.clip_grad_norm)


def _tuned(study: TunedStudy, run: _Runner, steps: int) -> StudyResult:
    result = StudyResult(study)
    seeds = range(study.selection_seeds)

    def evaluate(points: Mapping[str, list[dict[str, float]]]) -> dict[str, list[float]]:
        """Run every optimizer's points on the selection seeds as ONE batch; mean objectives."""
        trials = [trial_of(study, o, p, s, steps) for o, ps in points.items() for p in ps for s in seeds]
        done = iter(run(trials))
        values: dict[str, list[float]] = {}
        for o, ps in points.items():
            for p in ps:
                runs = [next(done) for _ in seeds]
                result.tuning.setdefault(o, []).extend(runs)
                result.points.setdefault(o, []).append((dict(runs[0].trial.hparams), mean_objective(runs)))
                values.setdefault(o, []).append(result.points[o][-1][1])
        return values

    spaces = {o: tuning.space(o, study.tune, study.lr_range, study.convention) for o in study.optimizers}
    if study.method == "tpe":
        searches = {o: tuning.TPE(spaces[o], study.budget, seed=0, storage=study.optuna_storage,
                                  study_name=None if study.optuna_storage is None else f"{study.key}/{o}")
                    for o in study.optimizers}
        while not all(s.done for s in searches.values()):
            asked = {o: s.ask() for o, s in searches.items() if not s.done}
            for o, values in evaluate(asked).items():
                searches[o].tell(values)
    else:
        evaluate({o: tuning.grid(spaces[o], study.budget) if study.method == "grid"
                  else tuning.random_points(spaces[o], study.budget, seed=0) for o in study.optimizers})
    for o in study.optimizers:
        # Ties (e.g. every point diverged) go to the smallest learning rate.
        hparams, _ = min(result.points[o], key=lambda pv: (pv[1], pv[0].get("lr", 0.0)))
        result.best[o] = hparams

    reruns = [trial_of(study, o, result.best[o], s, steps) for o in study.optimizers for s in study.rerun_seeds()]
    if study.defaults:
        reruns += [trial_of(study, o, {}, s, steps) for o in study.optimizers for s in study.rerun_seeds()]
    done = {r.trial.run_key: r for r in run(reruns)}
    for o in study.optimizers:
        result.tuned[o] = [done[trial_of(study, o, result.best[o], s, steps).run_key] for s in study.rerun_seeds()]
        if study.defaults:
            result.defaults[o] = [done[trial_of(study, o, {}, s, steps).run_key] for s in study.rerun_seeds()]
    return result
