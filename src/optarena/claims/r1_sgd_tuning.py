"""R1: SGD is the most basic optimizer and may need more tuning to perform well.

Measurement: on each problem of the shared tuned comparison (`suite.tuned_studies`), the width in
decades of the learning rates (tuning grid, seed 0) whose held-out loss lies within MARGIN (20%,
relative) of that optimizer's own best; a diverged run is never within the margin. A narrow range
means the learning rate must be hit precisely, i.e. more tuning. Per problem, SGD's width minus the
median width of the six other optimizers; the effect is the mean of that over problems, its
interval a bootstrap over problems.
"""

from __future__ import annotations

import math

import numpy as np

from optarena import stats
from optarena.claims import suite
from optarena.claims.base import Verdict
from optarena.plots import Plot, Series
from optarena.study import Study, StudyResult

ID = "R1"
TEXT_ZH = "随机梯度下降(SGD):这是最基本的优化算法之一,它在每个训练步骤中沿着梯度的反方向更新权重。它有时候可能需要更多的调参工作来获得好的性能。"
TEXT_EN = (
    "Stochastic gradient descent (SGD): one of the most basic optimization algorithms; at every training "
    "step it moves the weights against the gradient. It may sometimes need more tuning to perform well."
)
MARGIN = 0.2
MIN_PROBLEMS = 3
TOLERANCE = 1e-9  # decades: widths are sums of grid cells, so float rounding must not decide
RULE = (
    "On each problem, width (decades) of the learning-rate grid whose held-out loss is within 20% of the "
    "optimizer's best (diverged runs never count); effect = mean over problems of SGD's width minus the "
    "median width of the other six optimizers, 95% bootstrap interval over problems. Supported if the "
    "interval lies below 0 (SGD's good range is narrower beyond the noise), contradicted if it lies above 0, "
    "inconclusive otherwise or with fewer than 3 problems."
)
EFFECT_NAME = "SGD's good-lr width minus the median of the others (decades; < 0: SGD narrower)"


def decide(effect: float, ci: tuple[float, float], n_problems: int) -> str:
    if n_problems < MIN_PROBLEMS or not all(math.isfinite(v) for v in (effect, *ci)):
        return "inconclusive"
    if ci[1] < -TOLERANCE:
        return "supported"
    if ci[0] > TOLERANCE:
        return "contradicted"
    return "inconclusive"


def design(quick: bool) -> list[Study]:
    return list(suite.tuned_studies(quick))


def widths(result: StudyResult) -> dict[str, float]:
    return {o: suite.lr_width(result, o, MARGIN) for o in result.study.optimizers}


def _best(result: StudyResult, optimizer: str) -> float:
    losses = suite.sensitivity(result, optimizer)[1]
    return suite.finite_or_nan(float(losses.min())) if losses.size else math.nan


def verdict(results: dict[str, StudyResult]) -> Verdict:
    chosen = suite.select(results, "tuned")
    per_problem: dict[str, dict] = {}
    for problem, result in chosen.items():
        w = widths(result)
        others = [v for o, v in w.items() if o != "sgd" and math.isfinite(v)]
        if "sgd" not in w or not math.isfinite(w["sgd"]) or not others:
            continue
        per_problem[problem] = {
            "widths": w,
            "median_other": float(np.median(others)),
            "difference": w["sgd"] - float(np.median(others)),
            "best_loss": {o: _best(result, o) for o in result.study.optimizers},
        }
    diffs = np.array([d["difference"] for d in per_problem.values()])
    if diffs.size:
        effect = float(diffs.mean())
        ci = stats.bootstrap_ci(diffs, n_resamples=suite.N_RESAMPLES)
    else:
        effect, ci = math.nan, (math.nan, math.nan)
    outcome = decide(effect, ci, len(per_problem))
    problems = list(per_problem)
    budget = max((r.study.budget for r in chosen.values()), default=0)
    summary = (
        f"SGD's learning-rate range within {MARGIN:.0%} of its best is {abs(effect):.2f} decades "
        f"{'narrower' if effect < 0 else 'wider'} than the median of the other optimizers on average over {len(problems)} problems (95% CI {ci[0]:+.2f} to {ci[1]:+.2f}; "
        f"{budget} learning rates per optimizer)."
        if problems else "No tuned comparison results to measure learning-rate widths on."
    )
    return Verdict(
        id=ID, claim_zh=TEXT_ZH, claim_en=TEXT_EN, verdict=outcome, effect=effect, ci95=(float(ci[0]), float(ci[1])),
        # The widths come from the tuning grid, which runs on seed 0 only (DeepOBS protocol).
        problems=problems, budget=budget, seeds=1 if problems else 0, rule=RULE,
        effect_name=EFFECT_NAME, summary=summary,
        details={"margin": MARGIN, "interval": "bootstrap over problems; widths from the seed-0 tuning grid",
                 "per_problem": per_problem},
        plots=_plots(chosen, per_problem), run_keys=suite.run_keys(chosen),
    )


def _plots(chosen: dict[str, StudyResult], per_problem: dict[str, dict]) -> list[Plot]:
    plots = [
        Plot("curves", f"Learning-rate sensitivity on {problem} (seed 0)", "learning rate", "held-out loss",
             suite.sensitivity_series(result, result.study.optimizers), logx=True, logy=True,
             caption="Held-out loss after training at each learning rate of the grid; diverged runs are not drawn.")
        for problem, result in chosen.items()
    ]
    if per_problem:
        optimizers = list(next(iter(per_problem.values()))["widths"])
        plots.append(Plot(
            "bars", f"Width of the good learning-rate range (within {MARGIN:.0%} of the best)", "optimizer", "decades",
            [Series(p, list(range(len(optimizers))), [d["widths"].get(o, math.nan) for o in optimizers]) for p, d in per_problem.items()],
            categories=optimizers,
            caption="Wider is easier to tune. The claim expects SGD's bar to be the shortest.",
        ))
    return plots
