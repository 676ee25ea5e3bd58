"""The comparison's entry points: `compare` (a model and data), `run_comparison` (a ready
UserProblem) and the checks of their settings; what the study produced is a `Comparison`
(`optarena.comparison.result`)."""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Sequence

import torch

from optarena import backends, console, rules, tuning
from optarena.backends import Backend
from optarena.comparison.problem_file import load_problem_file
from optarena.comparison.result import Comparison
from optarena.problems.user import UserProblem
from optarena.rules import CONVENTIONS
from optarena.store import Store
from optarena.study import Setup, StudyKey, TunedStudy, execute

OPTIMIZERS = tuple(rules.names())
EIGHT = tuple(rules.names("article"))


def resolve_optimizers(optimizers: str | Sequence[str] | None, convention: str = "article") -> tuple[str, ...]:
    """The optimizer names to compare: "all" (the article's eight and today's contenders, those
    with this convention), "article" (the eight), "contenders", or names ("adam,sgd" or a list)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; allowed: {', '.join(CONVENTIONS)}")
    groups = {"all": ("article", "contender"), "article": ("article",), "contenders": ("contender",)}
    if optimizers is None or (isinstance(optimizers, str) and optimizers.strip().lower() in groups):
        group = groups["all" if optimizers is None else optimizers.strip().lower()]
        return tuple(o for o in rules.names(group) if rules.has_convention(o, convention))
    if isinstance(optimizers, str):
        optimizers = [o.strip() for o in optimizers.split(",")]
    names = [str(o).strip().lower() for o in optimizers if str(o).strip()]
    valid = f"valid names: {', '.join(OPTIMIZERS)} (or {', '.join(map(repr, groups))})"
    if any(n in groups for n in names):
        raise ValueError(f"{', '.join(repr(n) for n in names if n in groups)} cannot be combined with other optimizer names")
    unknown = [o for o in names if o not in OPTIMIZERS]
    if unknown:
        raise ValueError(f"unknown optimizer{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; {valid}")
    if not names:
        raise ValueError(f"no optimizer named; {valid}")
    for o in names:
        if not rules.has_convention(o, convention):
            raise ValueError(f"{o} has no {convention!r} convention ({rules.entry(o).absent.get(convention, 'not defined')}); "
                             "use another --convention")
    return tuple(dict.fromkeys(names))


def check_settings(budget: int, seeds: int, steps: int | None, method: str) -> None:
    for label, value, low in (("budget", budget, 1), ("seeds", seeds, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if method not in tuning.METHODS:
        raise ValueError(f"method must be one of {', '.join(tuning.METHODS)}, got {method!r}")


def compare(
    model: Callable[[], torch.nn.Module],
    data: Any,
    loss: Callable | None = None,
    optimizers: str | Sequence[str] = "all",
    budget: int = 8,
    seeds: int = 3,
    steps: int | None = None,
    batch_size: int | None = None,
    convention: str = "article",
    method: str = "tpe",
    store: Store | str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
    name: str = "user",
    threads: int | str | None = "auto",
    tune: Sequence[str] = (),
    schedule: str = "constant",
    warmup: float | None = None,
    clip_grad_norm: float | None = None,
    optuna_storage: str | None = None,
    backend: Backend | str | None = None,
) -> "Comparison":
    """Tune every optimizer with the same `budget` on `model` and `data`, rerun the best of each and
    its defaults over `seeds` seeds, and return the `Comparison`.

    `backend`: where the batches run: None or "local" (this process), "ray" (a Ray cluster started on
    this machine's cores, closed at the end) or a backend of ``optarena.backends.get`` (e.g.
    ``get("ray", address="HEAD:6379")`` to join a cluster; the caller closes it). Other processes get
    `model`, `data` and `loss` by pickling (Ray's cloudpickle: functions of a script or notebook
    travel by value, those of an importable module by reference, so the workers must import it).

    `tune`: hyperparameters tuned besides lr within the same budget ("weight_decay", "momentum",
    "betas", ...; each optimizer tunes those it has, see `optarena optimizers`). `schedule`,
    `warmup`, `clip_grad_norm`: the training setup, the same for every optimizer (see
    `optarena.schedules`). `optuna_storage`: an Optuna storage URL for TPE, shared by drivers.

    `model`: a function returning a fresh nn.Module; `data`: (train, val), each (X, y) or a
    Dataset (or a function returning that); `loss(output, target)`: optional, a mean over the batch.
    `store`: a Store, a path (resumes from it) or None (in memory). `threads`: torch's intra-op
    threads during the comparison (restored after); "auto" is 1 for models under
    console.SMALL_MODEL parameters, None leaves torch's setting alone. Bad input raises ValueError
    (UserCodeError, naming the function and the cause, for the user's model, data and loss).
    """
    names = resolve_optimizers(optimizers, convention)
    check_settings(budget, seeds, steps, method)
    device = console.check_device(str(device))
    setup = make_setup(steps, schedule, warmup, clip_grad_norm)
    tune = check_tune(tune, names)
    factory = functools.partial(UserProblem, model, data, loss=loss, batch_size=batch_size, steps=steps, name=name,
                                device=device)
    problem = factory()
    own_backend = isinstance(backend, str)
    if own_backend:
        backend = backends.get(backend)  # ValueError naming the allowed ones
    try:
        return run_comparison(problem, names, budget, seeds, steps, convention, method, store, device, progress, threads,
                              tune=tune, setup=setup, optuna_storage=optuna_storage, backend=backend, factory=factory)
    finally:
        if own_backend:
            backend.close()


def make_setup(steps: int | None, schedule: str = "constant", warmup: float | None = None,
               clip_grad_norm: float | None = None) -> Setup:
    """The training setup (Setup checks it: ValueError naming the option); the warmup defaults to
    schedules.DEFAULT_WARMUP with a schedule."""
    from optarena import schedules

    warmup = (schedules.DEFAULT_WARMUP if schedule != "constant" else 0.0) if warmup is None else warmup
    return Setup(steps, schedule, warmup, clip_grad_norm)


def check_tune(tune: str | Sequence[str], optimizers: Sequence[str]) -> tuple[str, ...]:
    """The hyperparameters to tune besides lr ("weight_decay,momentum" or a list); ValueError for a
    name no compared optimizer has."""
    names = [t.strip() for t in (tune.split(",") if isinstance(tune, str) else tune) if t and t.strip()]
    names = ["beta1" if n == "betas" else n for n in names] + (["beta2"] if "betas" in names else [])
    known = {k for o in optimizers for k in tuning.tunable(o)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"--tune: {', '.join(unknown)} is not a hyperparameter of {', '.join(optimizers)}; "
                         f"tunable: {', '.join(sorted(known - {'lr'}))}")
    return tuple(dict.fromkeys(n for n in names if n != "lr"))


def run_comparison(
    problem: UserProblem,
    optimizers: Sequence[str],
    budget: int = 8,
    seeds: int = 3,
    steps: int | None = None,
    convention: str = "article",
    method: str = "tpe",
    store: Store | str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
    threads: int | str | None = "auto",
    backend: Backend | None = None,
    factory: Callable[[], UserProblem] | None = None,
    tune: Sequence[str] = (),
    setup: Setup | None = None,
    optuna_storage: str | None = None,
) -> "Comparison":
    """`compare` on a ready UserProblem. `backend`: where the batches run (default: this process);
    a backend in other processes needs `factory`, a picklable function that builds the same
    problem there (``optarena compare`` passes one that reloads the problem file)."""
    setup = setup or Setup(steps)
    if setup.steps is None:
        setup = dataclasses.replace(setup, steps=steps)
    study = TunedStudy(StudyKey("compare", problem.name), tuple(optimizers), convention, budget, seeds, method,
                       tune=tuple(tune), setup=setup, optuna_storage=optuna_storage)
    if backend is not None and backend.name != "local" and factory is None:
        raise ValueError(f"the {backend.name} backend needs factory= (how a worker builds the problem)")
    own_store = not isinstance(store, Store)
    store_obj = store if isinstance(store, Store) else Store(store)
    try:
        with console.threads(threads, problem.n_parameters), \
                console.progress(study.n_runs, f"compare {problem.name}", progress) as advance:
            result = execute(study, store_obj, device=device, progress=advance, problem=problem, backend=backend,
                             factory=factory or (lambda: problem))
    finally:
        if own_store:
            store_obj.close()
    return Comparison(result, _problem_info(problem))


def problem_from_file(path: str, steps: int | None = None, device: str = "cpu") -> UserProblem:
    """The UserProblem of a problem file (what a worker process of another backend builds)."""
    spec = load_problem_file(path)
    return UserProblem(spec.model, spec.data, loss=spec.loss, batch_size=spec.batch_size,
                       steps=steps or spec.steps, name=spec.name, device=device)


def _problem_info(problem: UserProblem) -> dict[str, Any]:
    return {
        "name": problem.name,
        "n_train": problem.n_train,
        "n_val": problem.n_val,
        "batch_size": problem.batch_size,
        "steps": problem.default_steps,
        "loss": problem.loss_name,
        "loss_bound": problem.loss_bound,
        "vmappable": problem.vmappable,
        "fallback_reason": problem.fallback_reason,
        "stochastic": problem.stochastic,
        "parameters": problem.n_parameters,
    }
