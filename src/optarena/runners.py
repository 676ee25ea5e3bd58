"""Running a batch of trials: the engine for the registry's optimizers, a registered runner for the
non-engine baselines (e.g. claim R8's scikit-learn and Keras FTRL), so that one study executor
and every backend treat both alike.

A baseline runner is ``runner(problem, trials, device) -> list[RunResult]`` (one result per trial,
in order), registered under the optimizer names it serves by a module listed in BASELINE_MODULES
(imported the first time a name outside the registry is asked for).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from optarena import engine, rules
from optarena.trial import RunResult, Trial

Runner = Callable[[object, list[Trial], str], list[RunResult]]

BASELINE_MODULES: tuple[str, ...] = ("optarena.problems.sparse_baselines",)
_RUNNERS: dict[str, Runner] = {}
_loaded = False


def register(names: Sequence[str], runner: Runner) -> None:
    """Serve the trials whose optimizer is one of `names` with `runner` (not engine optimizers)."""
    for name in names:
        if name in rules.names():
            raise ValueError(f"{name!r} is an engine optimizer; a baseline runner needs another name")
        _RUNNERS[name] = runner


def runner_for(name: str) -> Runner | None:
    """The registered baseline runner of `name`, or None for engine optimizers."""
    global _loaded
    if name in rules.names():
        return None
    if name not in _RUNNERS and not _loaded:
        _loaded = True
        for module in BASELINE_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as e:
                if e.name != module:
                    raise
    if name not in _RUNNERS:
        known = sorted(rules.names()) + sorted(_RUNNERS)
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(known)}")
    return _RUNNERS[name]


def run_trials(problem, trials: Sequence[Trial], device: str = "cpu", trace: Sequence[str] = ()) -> list[RunResult]:
    """Results of `trials` in order: engine optimizers batched by ``engine.run``, each baseline by
    its runner."""
    trials = list(trials)
    groups: dict[str | None, list[int]] = {}
    for i, t in enumerate(trials):
        groups.setdefault(None if runner_for(t.optimizer) is None else t.optimizer, []).append(i)
    out: dict[int, RunResult] = {}
    for name, indices in groups.items():
        batch = [trials[i] for i in indices]
        if name is None:
            results = engine.run(problem, batch, device=device, trace=trace)
        else:
            results = runner_for(name)(problem, batch, device)
        if len(results) != len(batch):
            raise RuntimeError(f"the runner of {name or 'the engine'} returned {len(results)} results for {len(batch)} trials")
        out.update(zip(indices, results))
    return [out[i] for i in range(len(trials))]
