"""Search spaces and budgets per optimizer; grid, random and optuna (TPE) search.

Every optimizer in a comparison gets the same budget: the same number of trials over its own
search space, selected on held-out loss. The learning rate is always searched log-uniformly over
LR_RANGE (DeepOBS: 36 values from 1e-5 to 1e2 in full mode); other hyperparameters are searched only
where a study asks for them (``extra=``) and otherwise keep the convention's defaults.

Search space per optimizer (ranges of the hyperparameters a study may add to lr):
    sgd        lr
    momentum   lr, momentum in [0.5, 0.99]
    adagrad    lr
    rmsprop    lr, alpha in [0.8, 0.999]
    adam       lr, beta1 in [0.5, 0.99], beta2 in [0.9, 0.9999]
    adamw      lr, beta1, beta2 as Adam
    adadelta   lr, rho in [0.8, 0.99]
    nadam      lr, beta1, beta2 as Adam
    ftrl       lr, l1 in [1e-6, 1] (log)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

LR_RANGE = (1e-5, 1e2)


@dataclass(frozen=True)
class Dimension:
    low: float
    high: float
    log: bool = False

    def grid(self, n: int) -> list[float]:
        if n == 1:
            return [math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2]
        if self.log:
            return [float(x) for x in np.logspace(math.log10(self.low), math.log10(self.high), n)]
        return [float(x) for x in np.linspace(self.low, self.high, n)]

    def sample(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(10 ** rng.uniform(math.log10(self.low), math.log10(self.high)))
        return float(rng.uniform(self.low, self.high))


_ADAM_LIKE = {"beta1": Dimension(0.5, 0.99), "beta2": Dimension(0.9, 0.9999)}
SEARCH_SPACES: dict[str, dict[str, Dimension]] = {
    "sgd": {},
    "momentum": {"momentum": Dimension(0.5, 0.99)},
    "adagrad": {},
    "rmsprop": {"alpha": Dimension(0.8, 0.999)},
    "adam": dict(_ADAM_LIKE),
    "adamw": dict(_ADAM_LIKE),
    "adadelta": {"rho": Dimension(0.8, 0.99)},
    "nadam": dict(_ADAM_LIKE),
    "ftrl": {"l1": Dimension(1e-6, 1.0, log=True)},
}
METHODS = ("grid", "random", "tpe")


def space(optimizer: str, extra: Sequence[str] = (), lr_range: tuple[float, float] = LR_RANGE) -> dict[str, Dimension]:
    """The search space of `optimizer`: lr plus the `extra` hyperparameters it has (others ignored)."""
    if optimizer not in SEARCH_SPACES:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid names: {', '.join(SEARCH_SPACES)}")
    low, high = lr_range
    if not (0 < low < high and math.isfinite(high)):
        raise ValueError(f"lr_range must satisfy 0 < low < high, got {lr_range!r}")
    dims = {"lr": Dimension(low, high, log=True)}
    dims.update({k: v for k, v in SEARCH_SPACES[optimizer].items() if k in extra})
    return dims


def grid(dims: dict[str, Dimension], budget: int) -> list[dict[str, float]]:
    """A grid of at most `budget` points: lr gets most points, other dimensions 2-3 each."""
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    others = [k for k in dims if k != "lr"]
    per_other = 3 if budget >= 9 * 3 ** len(others) else 2 if budget >= 4 * 2 ** len(others) else 1
    n_lr = max(1, budget // (per_other ** len(others)))
    axes = [dims["lr"].grid(n_lr)] + [dims[k].grid(per_other) for k in others]
    points = [dict(zip(["lr"] + others, values)) for values in _product(axes)]
    return points[:budget]


def _product(axes):
    if not axes:
        yield ()
        return
    for head in axes[0]:
        for tail in _product(axes[1:]):
            yield (head,) + tail


def random_points(dims: dict[str, Dimension], budget: int, seed: int = 0) -> list[dict[str, float]]:
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    rng = np.random.default_rng(seed)
    return [{k: d.sample(rng) for k, d in dims.items()} for _ in range(budget)]


def tpe_search(
    dims: dict[str, Dimension],
    budget: int,
    evaluate: Callable[[list[dict[str, float]]], list[float]],
    seed: int = 0,
    rounds: int = 4,
    storage: str | None = None,
    study_name: str | None = None,
) -> list[tuple[dict[str, float], float]]:
    """Optuna's TPE, asked for points in `rounds` batches so that each batch runs as one engine stack.

    `evaluate(points) -> objective values` (held-out loss; inf for diverged runs). With `storage`
    (an optuna RDB URL such as sqlite:///tune.db) several processes can share one study.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, budget // rounds))
    study = optuna.create_study(direction="minimize", sampler=sampler, storage=storage, study_name=study_name, load_if_exists=storage is not None)
    distributions = {k: optuna.distributions.FloatDistribution(d.low, d.high, log=d.log) for k, d in dims.items()}
    history: list[tuple[dict[str, float], float]] = []
    per_round = max(1, math.ceil(budget / rounds))
    while len(history) < budget:
        asked = [study.ask(distributions) for _ in range(min(per_round, budget - len(history)))]
        points = [dict(t.params) for t in asked]
        values = evaluate(points)
        for t, p, v in zip(asked, points, values):
            # optuna cannot rank inf against inf; a diverged run gets a large finite penalty.
            study.tell(t, v if math.isfinite(v) else 1e30)
            history.append((p, v))
    return history
