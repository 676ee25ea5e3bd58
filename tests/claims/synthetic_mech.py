"""Fabricated RunResults and StudyResults for the tests of claims R2, R3, R8 and M1-M4 (no training).

Each builder makes results shaped like the engine's (or R8's runner's) so that a verdict can be shown
data built to support, contradict or leave open its claim.
"""

from __future__ import annotations

import math

import numpy as np

from optarena.study import Study, StudyKey, StudyResult, Sweep
from optarena.trial import RunResult, Trial


def run(problem: str, optimizer: str, hparams: dict, seed: int, steps: int = 100, *, convention: str = "article",
        status: str = "done", final: dict | None = None, curve: dict | None = None,
        trace: dict | None = None) -> RunResult:
    trial = Trial(problem, optimizer, convention, hparams, seed, steps)
    final = dict(final or {})
    curve = dict(curve or {})
    if "step" not in curve and final:
        curve = {"step": [0.0, float(steps)], **{k: [v, v] for k, v in final.items()}, **curve}
    return RunResult(trial, status, curve, final, trace={k: list(v) for k, v in (trace or {}).items()},
                     diverged_at=steps if status == "diverged" else None)


def fixed(name: str, problem: str, runs: list[RunResult], trace: tuple[str, ...] = ()) -> StudyResult:
    """A StudyResult of fixed trials (sweeps, mechanisms)."""
    key = name if isinstance(name, StudyKey) else StudyKey(*name.split("/"))
    assert key.problem == problem, (key, problem)
    study = Sweep(key, tuple(r.trial for r in runs), trace=trace)
    return StudyResult(study, runs=list(runs))


def tuned(study: Study, reruns: dict[str, list[RunResult]], best: dict[str, dict],
          tuning: dict[str, list[RunResult]] | None = None) -> StudyResult:
    """A StudyResult of a tuned study: the reruns of the chosen settings (and optionally the tuning runs)."""
    return StudyResult(study, tuning=dict(tuning or {}), best=dict(best), tuned=dict(reruns))


# -- traces --------------------------------------------------------------------------------------------


def valley_path(steps: int, period: int | None, amplitude: float = 0.05, start=(-2.0, -1.0)) -> list[list[float]]:
    """A 2-D path drifting along the valley floor (1, 1) with an oscillation across it (steep axis
    (1, -1)/sqrt(2)) whose displacement changes sign every `period`/2 steps; None: no oscillation, a
    monotone approach to the floor instead (as gradient descent below lr*lambda = 1)."""
    floor = np.array([1.0, 1.0]) / math.sqrt(2)
    steep = np.array([1.0, -1.0]) / math.sqrt(2)
    t = np.arange(steps + 1)
    across = amplitude * 0.95**t if period is None else amplitude * np.sin(2 * np.pi * (t + 0.25) / period)
    xy = np.asarray(start) + np.outer(0.01 * t, floor) + np.outer(across, steep)
    return xy.tolist()


def effective_step_trace(steps: int, kind: str, scale: float = 0.01, seed: int = 0, noise: float = 0.05) -> list[float]:
    """'decay': scale / sqrt(t) (AdaGrad with a steady gradient scale); 'flat': scale (RMSprop);
    'mild': scale * t^-0.15 (shrinks by well under half); 'grow': scale * sqrt(t / steps) * 3; multiplied by lognormal noise of std `noise` (decades)."""
    t = np.arange(1, steps + 1)
    base = {"decay": scale / np.sqrt(t), "flat": np.full(steps, scale), "mild": scale * t**-0.15, "grow": scale * 3 * np.sqrt(t / steps)}[kind]
    rng = np.random.default_rng(seed)
    return (base * 10 ** (noise * rng.standard_normal(steps))).tolist()


def shift_trace(steps: int, shift: int, drop_decades: float, scale: float = 0.01, seed: int = 0,
                noise: float = 0.02) -> list[float]:
    """An effective step flat at `scale` that falls by `drop_decades` at `shift` (and stays there)."""
    e = np.full(steps, scale)
    e[shift:] = scale * 10 ** (-drop_decades)
    rng = np.random.default_rng(seed)
    return (e * 10 ** (noise * rng.standard_normal(steps))).tolist()
