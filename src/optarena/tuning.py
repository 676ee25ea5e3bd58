"""Search spaces and budgets per optimizer; grid, random and Optuna TPE search.

Every optimizer in a comparison gets the same budget: the same number of points over its own
search space, selected on held-out loss. The learning rate is always searched log-uniformly over
LR_RANGE (DeepOBS: 36 values from 1e-5 to 1e2 in full mode); other hyperparameters are searched only
where a study asks for them (``tune=``) and otherwise keep the convention's defaults.

Each optimizer's search space beyond lr is declared in its registry entry (``Optimizer.search``,
in its rule file; ``optarena optimizers`` prints them). ``weight_decay`` is searchable for every
optimizer (WEIGHT_DECAY, log-uniform) and is applied decoupled, as AdamW applies it: through the
optimizer's own ``weight_decay`` where its convention decouples it (AdamW, Keras), else through
``decoupled_weight_decay``, so that every optimizer's weight decay means the same thing.

TPE asks Optuna for a round of points at once (batched ask/tell, ``constant_liar=True`` so the
points of one round spread out), runs them as one batch and tells the results back; its first
round is a Latin hypercube over the space, so that every region (the defaults' included) is tried
before TPE narrows down. With an Optuna storage URL several drivers can share one study.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from optarena import rules
from optarena.rules.spec import Dimension

LR_RANGE = (1e-5, 1e2)
WEIGHT_DECAY = Dimension(1e-6, 1e-1, log=True)
METHODS = ("grid", "random", "tpe")
# Optuna cannot rank inf against inf: a diverged point is told this large finite loss.
DIVERGED = 1e30


def decay_key(optimizer: str, convention: str) -> str:
    """The hyperparameter that applies decoupled weight decay for `optimizer` under `convention`:
    its own weight_decay where that is decoupled already (AdamW, Keras's optimizers, and every
    contender: Lion, Adafactor, Muon, Schedule-Free AdamW, SOAP and LAMB decay the weights apart
    from the gradient), else the registry's decoupled_weight_decay."""
    conv = rules.convention_of(optimizer, convention)
    decoupled = conv.flags.get("decoupled", rules.entry(optimizer).family == "contender")
    return "weight_decay" if decoupled and "weight_decay" in conv.defaults else "decoupled_weight_decay"


def tunable(optimizer: str) -> list[str]:
    """The names a study may ask to tune for `optimizer` (lr and weight_decay always)."""
    return ["lr", "weight_decay", *rules.search_space(optimizer)]


def space(optimizer: str, extra: Sequence[str] = (), lr_range: tuple[float, float] = LR_RANGE,
          convention: str = "article") -> dict[str, Dimension]:
    """The search space of `optimizer`: lr plus the `extra` hyperparameters it has (others ignored).

    Keys are the hyperparameters' names in trials (``weight_decay`` becomes `decay_key`)."""
    searchable = rules.search_space(optimizer)  # ValueError for an unknown optimizer
    low, high = lr_range
    if not (0 < low < high and math.isfinite(high)):
        raise ValueError(f"lr_range must satisfy 0 < low < high, got {lr_range!r}")
    dims = {"lr": Dimension(low, high, log=True)}
    dims.update({k: v for k, v in searchable.items() if k in extra})
    if "weight_decay" in extra:
        dims[decay_key(optimizer, convention)] = WEIGHT_DECAY
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


def latin_hypercube(dims: dict[str, Dimension], n: int, seed: int = 0) -> list[dict[str, float]]:
    """n points with one point in each of n equal slices of every dimension (McKay et al. 1979),
    the slices matched at random: a space-filling start that covers each range evenly."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    columns = {k: (rng.permutation(n) + rng.uniform(size=n)) / n for k in dims}
    return [{k: d.from_unit(float(columns[k][i])) for k, d in dims.items()} for i in range(n)]


class TPE:
    """Optuna's TPE over `dims` for `budget` points, asked for in rounds (batched ask/tell).

    ``ask()`` returns the next round's points (at most ``per_round``; the first round is a Latin
    hypercube, enqueued into Optuna), ``tell(values)`` gives their objective values (held-out loss;
    non-finite for a diverged or failed point). ``done`` when the budget is spent. `storage` (an
    Optuna storage URL, e.g. ``sqlite:///tune.db`` or a JournalStorage file given as
    ``journal:PATH``) with `study_name` lets several drivers share one study.
    """

    def __init__(self, dims: dict[str, Dimension], budget: int, seed: int = 0, rounds: int = 4,
                 storage: str | None = None, study_name: str | None = None) -> None:
        import optuna

        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.budget = budget
        self.per_round = max(1, math.ceil(budget / rounds))
        startup = min(budget, self.per_round)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)
        self.study = optuna.create_study(direction="minimize", sampler=sampler, storage=_storage(storage),
                                         study_name=study_name, load_if_exists=storage is not None)
        self.distributions = {k: optuna.distributions.FloatDistribution(d.low, d.high, log=d.log) for k, d in dims.items()}
        if not self.study.trials:
            for point in latin_hypercube(dims, startup, seed):
                self.study.enqueue_trial(point)
        self.history: list[tuple[dict[str, float], float]] = []
        self._asked: list = []

    @property
    def done(self) -> bool:
        return len(self.history) >= self.budget

    def ask(self) -> list[dict[str, float]]:
        if self._asked:
            raise RuntimeError("tell() the values of the last round before asking again")
        n = min(self.per_round, self.budget - len(self.history))
        self._asked = [self.study.ask(self.distributions) for _ in range(n)]
        return [dict(t.params) for t in self._asked]

    def tell(self, values: Sequence[float]) -> None:
        if len(values) != len(self._asked):
            raise ValueError(f"tell() needs {len(self._asked)} values, got {len(values)}")
        for t, v in zip(self._asked, values):
            self.study.tell(t, v if math.isfinite(v) else DIVERGED)
            self.history.append((dict(t.params), float(v)))
        self._asked = []


def _storage(url: str | None) -> Any:
    if url is None or not url.startswith("journal:"):
        return url
    import optuna

    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url[len("journal:"):]))


def tpe_search(
    dims: dict[str, Dimension],
    budget: int,
    evaluate: Callable[[list[dict[str, float]]], list[float]],
    seed: int = 0,
    rounds: int = 4,
    storage: str | None = None,
    study_name: str | None = None,
) -> list[tuple[dict[str, float], float]]:
    """TPE driven to the end with `evaluate(points) -> objective values`, one call per round."""
    tpe = TPE(dims, budget, seed, rounds, storage, study_name)
    while not tpe.done:
        points = tpe.ask()
        tpe.tell(evaluate(points))
    return tpe.history
