"""Search spaces and budgets per optimizer; grid, random and optuna (TPE) search.

Every optimizer in a comparison gets the same budget: the same number of trials over its own
search space, selected on held-out loss. The learning rate is always searched log-uniformly over
LR_RANGE (DeepOBS: 36 values from 1e-5 to 1e2 in full mode); other hyperparameters are searched only
where a study asks for them (``extra=``) and otherwise keep the convention's defaults.

Each optimizer's search space beyond lr is declared in its registry entry (``Optimizer.search``,
in its rule file); ``optarena optimizers`` prints them.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from optarena import rules
from optarena.rules.spec import Dimension

LR_RANGE = (1e-5, 1e2)


METHODS = ("grid", "random", "tpe")


def space(optimizer: str, extra: Sequence[str] = (), lr_range: tuple[float, float] = LR_RANGE) -> dict[str, Dimension]:
    """The search space of `optimizer`: lr plus the `extra` hyperparameters it has (others ignored)."""
    searchable = rules.search_space(optimizer)  # ValueError for an unknown optimizer
    low, high = lr_range
    if not (0 < low < high and math.isfinite(high)):
        raise ValueError(f"lr_range must satisfy 0 < low < high, got {lr_range!r}")
    dims = {"lr": Dimension(low, high, log=True)}
    dims.update({k: v for k, v in searchable.items() if k in extra})
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
