"""Fabricated StudyResults with chosen numbers, for testing the tuned-comparison claims (R1, R4-R7)
without training anything.

`study_result` builds what `optarena.study.execute` would return for a grid-tuned study: tuning runs
on seed 0 (one per learning rate), the reruns of the chosen learning rate and of the defaults on
seeds 1..S, each run a two-point curve from `START_LOSS` to the given final held-out loss. A loss of
`math.inf` makes a diverged run (its curve stops after step 0, as the engine's do).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from optarena.study import StudyKey, StudyResult, TunedStudy
from optarena.trial import RunResult, Trial

START_LOSS = 10.0
STEPS = 10


def run(problem: str, optimizer: str, loss: float, seed: int = 0, hparams: Mapping[str, float] | None = None,
        start: float = START_LOSS, steps: int = STEPS) -> RunResult:
    trial = Trial(problem, optimizer, "article", dict(hparams or {}), seed, steps)
    if math.isfinite(loss):
        curve = {"step": [0.0, float(steps)], "val_loss": [start, loss], "train_loss": [start, loss]}
        return RunResult(trial, "done", curve, {"val_loss": loss, "train_loss": loss})
    curve = {"step": [0.0], "val_loss": [start], "train_loss": [start]}
    return RunResult(trial, "diverged", curve, {"val_loss": math.inf, "train_loss": math.inf}, diverged_at=1)


def lr_grid(n: int = 12, low: float = 1e-5, high: float = 1e2) -> list[float]:
    return [float(x) for x in np.logspace(math.log10(low), math.log10(high), n)]


def bowl(lrs: Sequence[float], best: float, center: float, sharpness: float) -> list[float]:
    """Held-out loss over a learning-rate grid: best at lr = 10**center, rising by a factor
    (1 + sharpness * decades**2) away from it (a large sharpness gives a narrow good range)."""
    return [best * (1 + sharpness * (math.log10(lr) - center) ** 2) for lr in lrs]


def noisy(mean: float, spread: float, n: int, seed: int = 0) -> list[float]:
    """n positive losses around `mean` with relative spread `spread` (log-normal)."""
    rng = np.random.default_rng(seed)
    return [float(mean * math.exp(spread * z)) for z in rng.standard_normal(n)]


def study_result(
    name: str,
    problem: str,
    *,
    tuning: Mapping[str, Sequence[float]] | None = None,
    lrs: Sequence[float] | None = None,
    tuned: Mapping[str, Sequence[float]] | None = None,
    defaults: Mapping[str, Sequence[float]] | None = None,
    optimizers: Sequence[str] | None = None,
    steps: int = STEPS,
    tuning_seeds: int = 1,
    tuning_noise: float = 0.0,
) -> StudyResult:
    """A StudyResult: `tuning[o]` = held-out loss per lr of `lrs` (seed 0), `tuned[o]` and
    `defaults[o]` = held-out loss per rerun seed (1..S)."""
    tuning, tuned, defaults = dict(tuning or {}), dict(tuned or {}), dict(defaults or {})
    optimizers = tuple(optimizers or dict.fromkeys([*tuning, *tuned, *defaults]))
    seeds = max([len(v) for v in [*tuned.values(), *defaults.values()]] or [1])
    lrs = list(lrs) if lrs is not None else lr_grid(len(next(iter(tuning.values()))) if tuning else 12)
    key = name if isinstance(name, StudyKey) else StudyKey(*name.split("/"))
    assert key.problem == problem, (key, problem)
    study = TunedStudy(key, optimizers, budget=max(len(lrs), 1), seeds=seeds, defaults=bool(defaults))
    result = StudyResult(study)
    for o, losses in tuning.items():
        assert len(losses) == len(lrs), f"{o}: one loss per lr"
        rng = np.random.default_rng(len(o))
        result.tuning[o] = [run(problem, o, v * math.exp(tuning_noise * rng.standard_normal()) if seed else v, seed,
                                {"lr": lr}, steps=steps)
                            for seed in range(tuning_seeds) for lr, v in zip(lrs, losses)]
        finite = [(v, lr) for lr, v in zip(lrs, losses) if math.isfinite(v)]
        result.best[o] = {"lr": min(finite)[1] if finite else lrs[0]}
    for o, losses in tuned.items():
        best = result.best.get(o, {"lr": 1e-3})
        result.best.setdefault(o, best)
        result.tuned[o] = [run(problem, o, v, s, best, steps=steps) for s, v in enumerate(losses, start=1)]
    for o, losses in defaults.items():
        result.defaults[o] = [run(problem, o, v, s, steps=steps) for s, v in enumerate(losses, start=1)]
    return result


def paired(mean: float, ratio: float, spread: float, n: int, seed: int = 0, jitter: float = 0.0) -> tuple[list[float], list[float]]:
    """Two seed-paired samples: a ~ `mean` with relative spread `spread` shared by both, and
    b = ratio * a with an extra independent relative `jitter` per seed."""
    a = noisy(mean, spread, n, seed)
    rng = np.random.default_rng(seed + 1000)
    b = [float(ratio * x * math.exp(jitter * z)) for x, z in zip(a, rng.standard_normal(n))]
    return a, b
