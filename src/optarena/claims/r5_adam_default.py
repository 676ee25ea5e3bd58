"""R5: Adam is a good default for most problems.

Measurement: the untuned runs of the shared comparison (every optimizer at its article-convention
defaults, seeds 1..S). On each problem the seven optimizers are ranked by mean held-out loss over
seeds (rank 1 = lowest); Adam's mean rank over problems is the effect. Its interval resamples the
seeds (the same draw on every problem and for every optimizer, keeping the pairing by seed); it
measures seed noise, not which problems were chosen. The Dolan-Moré performance profile of the same
mean losses is drawn alongside (cost = mean held-out loss, floored at 1e-12 to keep ratios defined).
"""

from __future__ import annotations

import math

import numpy as np

from optarena import stats
from optarena.claims import suite
from optarena.claims.base import Verdict
from optarena.plots import Plot, Series
from optarena.study import Study, StudyResult

ID = "R5"
TEXT_ZH = "Adam:Adam 通过自适应调整学习率来提高训练效率。它通常对于大多数问题都是一个良好的默认选择。"
TEXT_EN = "Adam: Adam improves training efficiency by adapting the learning rate. It is usually a good default choice for most problems."
MIN_PROBLEMS = 3
RULE = (
    "Every optimizer untuned, at its defaults, on the same seeds; per problem rank the optimizers by mean "
    "held-out loss (1 = best); effect = Adam's mean rank over problems, 95% bootstrap interval over seeds. "
    "With K optimizers the middle rank is (K+1)/2 (4 of 7). Supported if Adam's mean rank is among the two "
    "best and its interval lies below the middle rank; contradicted if the interval lies above the middle "
    "rank (bottom half beyond the noise); inconclusive otherwise, and with fewer than 3 problems or 3 seeds."
)
EFFECT_NAME = "Adam's mean rank among the untuned optimizers (1 = best on every problem)"
COST_FLOOR = 1e-12


def decide(position: int, ci: tuple[float, float], n_optimizers: int, n_problems: int, n_seeds: int) -> str:
    """`position`: 1 + the number of optimizers with a strictly better (lower) mean rank than Adam."""
    if n_problems < MIN_PROBLEMS or n_seeds < suite.MIN_SEEDS or not all(math.isfinite(v) for v in ci):
        return "inconclusive"
    middle = (n_optimizers + 1) / 2
    if position <= 2 and ci[1] < middle:
        return "supported"
    if ci[0] > middle:
        return "contradicted"
    return "inconclusive"


def design(quick: bool) -> list[Study]:
    return list(suite.tuned_studies(quick))


def rank_table(losses: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean rank over problems of each optimizer, for each resample of the seeds.

    losses (P problems, K optimizers, S seeds), idx (B, S) seed indices -> (K, B). Ranks as
    `stats.rank_average`: 1 = lowest mean loss, ties share the average of the ranks they span.
    """
    means = suite.mean_over_seeds(losses, idx)  # (P, K, B)
    smaller = (means[:, None, :, :] < means[:, :, None, :]).sum(axis=2)
    equal = (means[:, None, :, :] == means[:, :, None, :]).sum(axis=2)
    return (smaller + (equal + 1) / 2.0).mean(axis=0)


def verdict(results: dict[str, StudyResult]) -> Verdict:
    chosen = suite.select(results, "tuned")
    optimizers = [o for o in suite.OPTIMIZERS if chosen and all(r.defaults.get(o) for r in chosen.values())]
    seeds = suite.n_seeds(chosen, optimizers, "defaults") if optimizers else 0
    losses = {p: {o: suite.seed_losses(r, o, "defaults")[:seeds] for o in optimizers} for p, r in chosen.items()}
    if "adam" in optimizers and seeds:
        table = np.array([[losses[p][o] for o in optimizers] for p in losses])  # (P, K, S)
        costs = {o: [max(float(np.mean(losses[p][o])), COST_FLOOR) for p in losses] for o in optimizers}
        ranks = stats.rank_average(costs)
        effect = ranks["adam"]
        adam = optimizers.index("adam")
        ci = suite.seed_bootstrap(lambda idx: rank_table(table, idx)[adam], seeds)
        rank_ci = {o: suite.seed_bootstrap(lambda idx, k=k: rank_table(table, idx)[k], seeds) for k, o in enumerate(optimizers)}
        position = 1 + sum(ranks[o] < ranks["adam"] for o in optimizers)
    else:
        ranks, rank_ci, costs, effect, ci, position = {}, {}, {}, math.nan, (math.nan, math.nan), 0
    outcome = decide(position, ci, len(optimizers), len(chosen), seeds)
    per_problem = {p: {o: float(np.mean(v)) for o, v in losses[p].items()} for p in losses}
    best_on = {p: min(d, key=d.get) for p, d in per_problem.items() if d}
    summary = (
        f"At their defaults, Adam's mean rank is {effect:.2f} of {len(optimizers)} (95% CI {ci[0]:.2f} to {ci[1]:.2f}), "
        f"position {position} by mean rank, over {len(chosen)} problems and {seeds} seeds."
        if math.isfinite(effect) else "No untuned runs of Adam to rank."
    )
    return Verdict(
        id=ID, claim_zh=TEXT_ZH, claim_en=TEXT_EN, verdict=outcome, effect=effect, ci95=(float(ci[0]), float(ci[1])),
        problems=list(chosen), budget=0, seeds=seeds, rule=RULE, effect_name=EFFECT_NAME, summary=summary,
        details={"mean_rank": ranks, "mean_rank_ci95": {o: list(v) for o, v in rank_ci.items()}, "adam_position": position,
                 "mean_default_loss": per_problem, "best_default_on": best_on,
                 "tuning_budget_of_comparison": max((r.study.budget for r in chosen.values()), default=0)},
        plots=_plots(costs, ranks, rank_ci),
        run_keys=suite.run_keys(chosen),
    )


def _plots(costs: dict[str, list[float]], ranks: dict[str, float], rank_ci: dict) -> list[Plot]:
    if not costs:
        return []
    ratios = stats.performance_ratios(costs)
    finite = np.concatenate([r[np.isfinite(r)] for r in ratios.values()] + [np.array([1.0])])
    taus = np.unique(np.concatenate([[1.0], finite, [finite.max() * 1.5]]))
    profile = stats.performance_profile(costs, taus)
    optimizers = list(ranks)
    return [
        Plot("profile", "Performance profile of the untuned defaults", "tau (loss / best loss on the problem)",
             "share of problems within tau of the best",
             [Series(o, taus.tolist(), rho.tolist()) for o, rho in profile.items()], logx=True,
             caption="Dolan-Moré profile of the mean held-out loss over seeds; higher and further left is better."),
        Plot("bars", "Mean rank at default hyperparameters", "optimizer", "mean rank over problems (1 = best)",
             [Series("mean rank", list(range(len(optimizers))), [ranks[o] for o in optimizers],
                     [rank_ci[o][0] for o in optimizers], [rank_ci[o][1] for o in optimizers])],
             categories=optimizers, caption="95% bootstrap interval over seeds."),
    ]
