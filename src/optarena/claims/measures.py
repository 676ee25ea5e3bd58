"""Measurements shared by several claims (so that no claim module imports another): effective
step sizes from the engine's "effective_step" trace, NaN-safe means, log-spaced points and bands
over runs."""

from __future__ import annotations

import math
import warnings

import numpy as np

from optarena.trial import RunResult


def effective_steps(run: RunResult) -> np.ndarray:
    """The run's per-step effective step sizes (NaN where every gradient was zero)."""
    e = np.asarray(run.trace.get("effective_step") or [], dtype=float)
    return np.where(np.isfinite(e) & (e > 0), e, np.nan)


def finite_mean(x) -> float:
    """Mean of the finite values; NaN (without a warning) when there is none."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def log_points(n: int, count: int = 150) -> np.ndarray:
    """About `count` step indices 0..n-1, evenly spaced in log(step)."""
    return np.unique(np.geomspace(1, n, count).round().astype(int) - 1)


def band(runs: list[RunResult], points: np.ndarray) -> tuple[list, list, list]:
    """Per point: median and range over the finished runs of the effective step (NaN where none is finite)."""
    rows = [effective_steps(r) for r in runs if r.status == "done"]
    n = min((len(e) for e in rows), default=0)
    if not rows or n == 0:
        return [], [], []
    points = points[points < n]
    m = np.stack([e[:n] for e in rows])[:, points]
    with warnings.catch_warnings():  # a step where every run's gradient was exactly 0 stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(m, 0).tolist(), np.nanmin(m, 0).tolist(), np.nanmax(m, 0).tolist()


def direction(ci: tuple[float, float]) -> str:
    """A consequence's outcome from the 95% interval of its paired effect (> 0: the claimed
    direction): supported above 0, contradicted below 0, else inconclusive."""
    low, high = ci
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if low > 0:
        return "supported"
    if high < 0:
        return "contradicted"
    return "inconclusive"


def co_primary(mechanism: str, consequence: str) -> str:
    """A mechanism check decided with its consequence as co-primary measure (issue 12): supported
    only when both are, contradicted when the mechanism is; otherwise inconclusive (the mechanism
    holds but its consequence was not shown, or the other way round)."""
    if mechanism == "contradicted":
        return "contradicted"
    return "supported" if mechanism == consequence == "supported" else "inconclusive"
