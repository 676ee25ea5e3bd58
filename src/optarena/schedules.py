"""Learning-rate schedules, applied identically to every optimizer: lr_t = lr * factor(t).

    constant        factor = 1
    warmup-linear   factor = t / W for t <= W, then (T - t) / (T - W): linear warmup over the first
                    W = round(warmup * T) steps, then a linear decay to 0 at the last step
    warmup-cosine   factor = t / W for t <= W, then 0.5 * (1 + cos(pi * (t - W) / (T - W)))

t counts steps from 1, T is the run's number of steps. These are the shapes AlgoPerf's baselines
and most training recipes use (Loshchilov & Hutter 2017 for the cosine; Goyal et al. 2017 for the
linear warmup). `factor` is the multiplier of the t-th update; `lambda_lr(...)` gives the same
schedule as a ``torch.optim.lr_scheduler.LambdaLR`` function for a plain training loop.
"""

from __future__ import annotations

import math
from typing import Callable

SCHEDULES = ("constant", "warmup-linear", "warmup-cosine")
DEFAULT_WARMUP = 0.05


def check(schedule: str, warmup: float) -> None:
    """ValueError naming the option when the schedule or its warmup fraction is not allowed."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not (0.0 <= warmup < 1.0):
        raise ValueError(f"warmup must be a fraction of the steps in [0, 1), got {warmup!r}")


def warmup_steps(warmup: float, steps: int) -> int:
    return int(round(warmup * steps))


def factor(schedule: str, step: int, steps: int, warmup: float = 0.0) -> float:
    """The multiplier of the learning rate for update `step` (1-based) of a run of `steps` steps."""
    if schedule == "constant":
        return 1.0
    w = warmup_steps(warmup, steps)
    if step <= w:
        return step / w
    if steps <= w:
        return 1.0
    progress = min(1.0, (step - w) / (steps - w))  # LambdaLR asks once past the last step
    if schedule == "warmup-linear":
        return 1.0 - progress
    if schedule == "warmup-cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")


def lambda_lr(schedule: str, steps: int, warmup: float = 0.0) -> Callable[[int], float]:
    """For ``LambdaLR(opt, lambda_lr(...))``: LambdaLR calls it with 0 before the first step and
    with k after k calls of ``scheduler.step()``, so update k + 1 uses factor(k + 1)."""
    return lambda k: factor(schedule, k + 1, steps, warmup)
