"""R1: SGD is the most basic optimizer and may need more tuning to perform well.

Measurement: on each problem of the shared tuned comparison (`suite.tuned_studies`) and on each of
its tuning seeds, the width in decades of the learning rates (tuning grid) whose held-out loss lies
within MARGIN (20%) of the best loss of ANY optimizer on that problem and seed: the range of
settings that are good, against a common reference (the claims review: a width against each
optimizer's own best rewards an optimizer that is bad everywhere). A narrow range means the
learning rate must be hit precisely, i.e. more tuning; a width of 0 means no setting comes close.
Per problem and seed, SGD's width minus the median width of the six other optimizers; the effect is
its mean over problems, with a hierarchical bootstrap interval (problems resampled, then seeds
within each problem). Fewer than 6 problems or 3 seeds cannot decide (quick mode's 3 problems: the
grid cell, 0.64 decades in quick mode, is also coarse).
"""

from __future__ import annotations

import math

import numpy as np

from optarena.claims import suite
from optarena.claims.base import Claim, Verdict
from optarena.plots import Plot, Series
from optarena.study import Study, StudyResult

ID = "R1"
TEXT_ZH = "随机梯度下降(SGD):这是最基本的优化算法之一,它在每个训练步骤中沿着梯度的反方向更新权重。它有时候可能需要更多的调参工作来获得好的性能。"
TEXT_EN = (
    "Stochastic gradient descent (SGD): one of the most basic optimization algorithms; at every training "
    "step it moves the weights against the gradient. It may sometimes need more tuning to perform well."
)
MARGIN = 0.2
MIN_PROBLEMS = 6
MIN_SEEDS = 3
TOLERANCE = 1e-9  # decades: widths are sums of grid cells, so float rounding must not decide
N_RESAMPLES = 4000
QUICK_CANNOT_DECIDE = "quick mode runs 3 of the 6 problems the rule needs"
RULE = (
    "On each problem and tuning seed, width (decades) of the learning-rate grid whose held-out loss is within "
    "20% of the best loss of any optimizer on that problem and seed (diverged runs never count); per problem, "
    "the mean over seeds of SGD's width minus the median width of the other six optimizers; effect = its mean "
    "over problems, 95% hierarchical bootstrap interval (problems, then seeds within problems). Supported if "
    "the interval lies below 0 (SGD's good range is narrower beyond the noise), contradicted if it lies above "
    "0, inconclusive otherwise or with fewer than 6 problems or 3 tuning seeds."
)
REVISIONS = [{
    "date": "2026-12-03",
    "change": "widths against the best of all optimizers (was: each optimizer's own best), from 3 tuning seeds "
              "(was: seed 0), a hierarchical bootstrap over problems and seeds (was: percentile bootstrap over "
              "problems), at least 6 problems (was 3)",
    "seen": "quick mode inconclusive, effect -0.212 [-0.636, 0] over 3 problems; full mode supported on 5 "
            "problems (claims review)",
}]
EFFECT_NAME = "SGD's good-lr width minus the median of the others (decades; < 0: SGD narrower)"
CLAIM = Claim(ID, TEXT_ZH, TEXT_EN, RULE, effect_name=EFFECT_NAME, margin=MARGIN, revisions=REVISIONS,
              quick_cannot_decide=QUICK_CANNOT_DECIDE)


def decide(effect: float, ci: tuple[float, float], n_problems: int, n_seeds: int = MIN_SEEDS) -> str:
    if n_problems < MIN_PROBLEMS or n_seeds < MIN_SEEDS or not all(math.isfinite(v) for v in (effect, *ci)):
        return "inconclusive"
    if ci[1] < -TOLERANCE:
        return "supported"
    if ci[0] > TOLERANCE:
        return "contradicted"
    return "inconclusive"


def design(quick: bool) -> list[Study]:
    return list(suite.tuned_studies(quick))


def widths(result: StudyResult, seed: int) -> dict[str, float]:
    """Every optimizer's good-lr width on `seed` against the best loss of any optimizer there."""
    best = min((float(np.min(losses)) for o in result.study.optimizers
                for losses in [suite.sensitivity(result, o, seed)[1]] if losses.size), default=math.inf)
    return {o: suite.lr_width(result, o, MARGIN, reference=best, seed=seed) for o in result.study.optimizers}


def hierarchical_ci(table: list[np.ndarray], n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """95% interval of the mean over problems of the mean over seeds, resampling problems and then
    seeds within each chosen problem. `table`: per problem, the per-seed values."""
    if len(table) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    stats_ = np.empty(n_resamples)
    for b in range(n_resamples):
        chosen = rng.integers(0, len(table), len(table))
        stats_[b] = np.mean([rng.choice(table[i], len(table[i])).mean() for i in chosen])
    return float(np.quantile(stats_, 0.025)), float(np.quantile(stats_, 0.975))


def verdict(results: dict[str, StudyResult]) -> Verdict:
    chosen = suite.select(results, "tuned")
    per_problem: dict[str, dict] = {}
    table = []
    for problem, result in chosen.items():
        per_seed = {}
        for seed in suite.tuning_seeds(result):
            w = widths(result, seed)
            others = [v for o, v in w.items() if o != "sgd" and math.isfinite(v)]
            if "sgd" in w and math.isfinite(w["sgd"]) and others:
                per_seed[seed] = {"widths": w, "median_other": float(np.median(others)),
                                  "difference": w["sgd"] - float(np.median(others))}
        if not per_seed:
            continue
        diffs = np.array([d["difference"] for d in per_seed.values()])
        table.append(diffs)
        optimizers = result.study.optimizers
        per_problem[problem] = {
            "widths": {o: float(np.mean([d["widths"][o] for d in per_seed.values()])) for o in optimizers},
            "difference": float(diffs.mean()),
            "per_seed": {str(k): v for k, v in per_seed.items()},
            "grid_cell_decades": _cell(result),
        }
    seeds = min((len(t) for t in table), default=0)
    if table:
        effect = float(np.mean([t.mean() for t in table]))
        ci = hierarchical_ci(table)
    else:
        effect, ci = math.nan, (math.nan, math.nan)
    outcome = decide(effect, ci, len(per_problem), seeds)
    problems = list(per_problem)
    budget = max((r.study.budget for r in chosen.values()), default=0)
    cell = max((d["grid_cell_decades"] for d in per_problem.values()), default=math.nan)
    summary = (
        f"SGD's learning-rate range within {MARGIN:.0%} of the best optimizer's loss is {abs(effect):.2f} decades "
        f"{'narrower' if effect < 0 else 'wider'} than the median of the other optimizers, on average over "
        f"{len(problems)} problems and {seeds} tuning seeds (95% CI {ci[0]:+.2f} to {ci[1]:+.2f}; {budget} learning "
        f"rates per optimizer, one grid cell = {cell:.2f} decades)."
        + (f" Fewer than {MIN_PROBLEMS} problems: this run cannot decide." if len(problems) < MIN_PROBLEMS else "")
        if problems else "No tuned comparison results to measure learning-rate widths on."
    )
    return CLAIM.verdict(
        outcome, effect, ci, problems=problems, budget=budget, seeds=seeds, summary=summary,
        details={"margin": MARGIN, "reference": "the best loss of any optimizer on the problem and seed",
                 "interval": "hierarchical bootstrap: problems, then tuning seeds within problems",
                 "per_problem": per_problem},
        plots=_plots(chosen, per_problem), run_keys=suite.run_keys(chosen),
    )


def _cell(result: StudyResult) -> float:
    lrs, _ = suite.sensitivity(result, result.study.optimizers[0])
    return float(np.median(np.diff(np.log10(lrs)))) if lrs.size > 1 else math.nan


def _plots(chosen: dict[str, StudyResult], per_problem: dict[str, dict]) -> list[Plot]:
    plots = [
        Plot("curves", f"Learning-rate sensitivity on {problem} (mean over the tuning seeds)", "learning rate", "held-out loss",
             suite.sensitivity_series(result, result.study.optimizers), logx=True, logy=True,
             caption="Held-out loss after training at each learning rate of the grid; diverged runs are not drawn.")
        for problem, result in chosen.items()
    ]
    if per_problem:
        optimizers = list(next(iter(per_problem.values()))["widths"])
        plots.append(Plot(
            "bars", f"Width of the good learning-rate range (within {MARGIN:.0%} of the best optimizer)", "optimizer", "decades",
            [Series(p, list(range(len(optimizers))), [d["widths"].get(o, math.nan) for o in optimizers]) for p, d in per_problem.items()],
            categories=optimizers,
            caption="Wider is easier to tune. The claim expects SGD's bar to be the shortest.",
        ))
    return plots
