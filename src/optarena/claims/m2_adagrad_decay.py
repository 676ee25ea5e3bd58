"""M2: AdaGrad's accumulated G only grows, so its effective step keeps shrinking.

The effective step of a run is the engine's ``effective_step`` trace: per step, the median over
coordinates of |dw_i| / |g_i| (for AdaGrad lr / sqrt(G_i + eps)). Long runs of AdaGrad and RMSprop
at the same learning rates; how much it shrinks is the ratio of its mean over the last 10% of the
steps to its mean over the first 10%, in decades.
"""

from __future__ import annotations

import math

import numpy as np

from optarena import stats
from optarena.claims.base import Claim, Verdict, mode
from optarena.plots import Plot, Series
from optarena.study import Study, StudyKey, StudyResult, Sweep, by_kind, objective
from optarena.claims import suite
from optarena.claims.measures import band, co_primary, direction, effective_steps, finite_mean, log_points
from optarena.trial import RunResult, Trial

ID = "M2"
TEXT_ZH = "其中, G G G 是梯度的平方和的累积, ϵ \\epsilon ϵ 是一个很小的数,防止除零错误。"
TEXT_EN = (
    "G is the accumulated sum of squared gradients (so it only grows, and AdaGrad's effective step "
    "alpha / sqrt(G + eps) keeps shrinking)."
)

OPTIMIZERS = ("adagrad", "rmsprop")
# problem -> (steps, learning rates shared by both optimizers)
PROBLEMS = {
    True: {"noisy_quadratic": (1000, (0.01, 0.03, 0.1)), "quadratic_deepobs": (1000, (0.01, 0.03, 0.1))},
    False: {
        "noisy_quadratic": (2000, (0.01, 0.03, 0.1)),
        "quadratic_deepobs": (2000, (0.01, 0.03, 0.1)),
        "digits_mlp": (1000, (0.003, 0.01, 0.03)),
    },
}
SEEDS = {True: 5, False: 10}
WINDOW = 0.1  # first and last 10% of the steps
SHRINKS = -0.3  # AdaGrad must shrink by at least this many decades (a factor 2) ...
NO_SHRINK = -0.1  # ... and counts as not shrinking when the whole interval lies above this
MIN_PAIRS = 6

KIND = "mechanism check"  # correct code passes it by construction; labelled so in the report
RULE = (
    "Long runs (quick: 1000 steps on noisy_quadratic and quadratic_deepobs; full: 2000 steps there and "
    "1000 on digits_mlp) of article AdaGrad and article RMSprop (alpha 0.9) at the same three learning "
    "rates per problem, seeds 1..S, with the per-step effective step size traced (median over coordinates "
    "of |dw|/|g|). Per run, shrink = log10(mean effective step over the last 10% of steps / mean over the "
    "first 10%). Effect = mean paired difference shrink(AdaGrad) - shrink(RMSprop) over (problem, lr, seed), "
    "95% bootstrap interval. Supported if AdaGrad's mean shrink is below -0.3 decades (at least halved) "
    "with its interval below 0, and the effect's interval lies below 0 (AdaGrad's shrinks more than "
    "RMSprop's). Contradicted if AdaGrad's shrink interval lies above -0.1 (no real shrinking) or the "
    f"effect's interval lies above 0. Otherwise, or with fewer than {MIN_PAIRS} pairs, inconclusive. "
    "Co-primary, the consequence (a stall): per (problem, lr, seed), ln(final training loss of AdaGrad / "
    "that of RMSprop at the same lr), median over pairs (a diverged run ranked worse than any finished one) "
    "with its 95% percentile bootstrap interval; shown if the interval lies above 0 (AdaGrad ends higher: "
    "its shrinking step stalled it), refuted if below 0. The verdict is supported only if the mechanism is "
    "supported and the consequence shown; contradicted if the mechanism is contradicted; else inconclusive."
)
REVISIONS = [{
    "date": "2026-12-03",
    "change": "the consequence (AdaGrad's final training loss against RMSprop's at the same lr: a stall) "
              "made a co-primary measure beside the mechanism (the claims review and issue 12)",
    "seen": "full mode supported on the mechanism alone, -0.876 decades [-0.994, -0.758]; the consequence "
            "had not been computed",
}]
CLAIM = Claim(
    ID, TEXT_ZH, TEXT_EN, RULE, kind=KIND, revisions=REVISIONS,
    effect_name="shrink(AdaGrad) - shrink(RMSprop), decades of effective step size from the first to the last 10% of steps",
)


def name(problem: str, quick: bool) -> StudyKey:
    return StudyKey(ID, problem, mode(quick))


def study(problem: str, quick: bool, seeds: int | None = None, steps: int | None = None,
          lrs: tuple[float, ...] | None = None) -> Study:
    default_steps, default_lrs = PROBLEMS[quick].get(problem, PROBLEMS[False][problem])
    steps, lrs = steps or default_steps, lrs or default_lrs
    trials = tuple(
        Trial(problem, o, "article", {"lr": lr}, s, steps)
        for o in OPTIMIZERS for lr in lrs for s in range(1, (seeds or SEEDS[quick]) + 1)
    )
    return Sweep(name(problem, quick), tuple(trials), trace=("effective_step",))


def design(quick: bool) -> list[Study]:
    return [study(p, quick) for p in PROBLEMS[quick]]


# -- measurement -------------------------------------------------------------------------------------


def shrink(run: RunResult, window: float = WINDOW) -> float:
    """log10(mean effective step over the last `window` of steps / mean over the first); NaN unless done."""
    if run.status != "done":
        return math.nan
    e = effective_steps(run)
    k = max(1, int(round(window * len(e))))
    if len(e) < 2 * k:
        return math.nan
    first, last = finite_mean(e[:k]), finite_mean(e[-k:])
    if not (first > 0 and last > 0):
        return math.nan
    return float(np.log10(last / first))


def late_slope(run: RunResult) -> float:
    """Slope of log10(effective step) against log10(step) over the second half (AdaGrad with a steady
    gradient scale: -0.5; an adaptation that settles: 0)."""
    e = effective_steps(run)
    if run.status != "done" or len(e) < 20:
        return math.nan
    t = np.arange(1, len(e) + 1)
    half = slice(len(e) // 2, None)
    ok = np.isfinite(e[half])
    if ok.sum() < 10:
        return math.nan
    return float(np.polyfit(np.log10(t[half][ok]), np.log10(e[half][ok]), 1)[0])


def decide(adagrad_mean: float, adagrad_ci: tuple[float, float], diff_ci: tuple[float, float], n_pairs: int) -> str:
    """The rule, on AdaGrad's mean shrink (decades), its interval, and the interval of AdaGrad - RMSprop."""
    values = (adagrad_mean, *adagrad_ci, *diff_ci)
    if n_pairs < MIN_PAIRS or not all(math.isfinite(v) for v in values):
        return "inconclusive"
    if adagrad_ci[0] > NO_SHRINK or diff_ci[0] > 0:
        return "contradicted"
    if adagrad_mean < SHRINKS and adagrad_ci[1] < 0 and diff_ci[1] < 0:
        return "supported"
    return "inconclusive"


# -- verdict -----------------------------------------------------------------------------------------


def found(results: dict[StudyKey, StudyResult], id_: str = ID) -> dict[str, StudyResult]:
    """This claim's studies present in `results` (full mode preferred), keyed by problem."""
    return by_kind(results, id_)


def verdict(results: dict[str, StudyResult]) -> Verdict:
    mine = found(results)
    if not mine:
        return CLAIM.inconclusive("No M2 runs in the results.")
    values: dict[tuple[str, str, float, int], float] = {}
    slopes: dict[tuple[str, str, float, int], float] = {}
    finals: dict[tuple[str, str, float, int], float] = {}
    for problem, result in mine.items():
        for r in result.runs:
            k = (problem, r.trial.optimizer, float(r.trial.hparams["lr"]), int(r.trial.seed))
            values[k] = shrink(r)
            slopes[k] = late_slope(r)
            finals[k] = objective(r, "train_loss")  # inf for a diverged run: ranked, not scored
    pairs = sorted(k for k in finals if k[1] == "adagrad" and (k[0], "rmsprop", k[2], k[3]) in finals)
    stall = suite.paired_log_ratio(np.array([finals[k] for k in pairs]),
                                   np.array([finals[(k[0], "rmsprop", k[2], k[3])] for k in pairs]))
    ada, rms = [], []
    for (problem, o, lr, s), v in sorted(values.items()):
        w = values.get((problem, "rmsprop", lr, s), math.nan)
        if o == "adagrad" and math.isfinite(v) and math.isfinite(w):
            ada.append(v), rms.append(w)
    seeds = len({k[3] for k in values})
    if not ada:
        return CLAIM.inconclusive("No finished AdaGrad/RMSprop pair with a measurable effective step.",
                                  problems=sorted(mine), seeds=seeds,
                                  run_keys=sorted({k for r in mine.values() for k in r.run_keys()}))
    ada_mean, ada_lo, ada_hi = stats.mean_ci(ada)
    rms_mean, rms_lo, rms_hi = stats.mean_ci(rms)
    diff = stats.paired_difference(ada, rms)
    mechanism = decide(ada_mean, (ada_lo, ada_hi), diff["ci95"], len(ada))
    consequence = direction(stall["ci95"]) if stall["n"] >= MIN_PAIRS else "inconclusive"
    outcome = co_primary(mechanism, consequence)

    per_problem = {}
    for problem in mine:
        per_problem[problem] = {}
        for o in OPTIMIZERS:
            v = [x for (p, oo, _, _), x in values.items() if p == problem and oo == o and math.isfinite(x)]
            sl = [x for (p, oo, _, _), x in slopes.items() if p == problem and oo == o and math.isfinite(x)]
            per_problem[problem][o] = {
                "shrink_decades": float(np.mean(v)) if v else math.nan,
                "late_slope": float(np.mean(sl)) if sl else math.nan,
                "runs": len(v),
            }
    summary = (
        f"From the first to the last 10% of the steps AdaGrad's effective step changed by {ada_mean:+.2f} decades "
        f"(95% CI [{ada_lo:+.2f}, {ada_hi:+.2f}]), RMSprop's by {rms_mean:+.2f} ([{rms_lo:+.2f}, {rms_hi:+.2f}]); "
        f"difference {diff['mean']:+.2f} decades [{diff['ci95'][0]:+.2f}, {diff['ci95'][1]:+.2f}] over {len(ada)} "
        f"(problem, lr, seed) pairs on {', '.join(sorted(mine))}: mechanism {mechanism}. Consequence: AdaGrad's "
        f"final training loss over RMSprop's at the same lr, median ratio {math.exp(stall['median']):.3g} "
        f"(95% CI [{math.exp(stall['ci95'][0]):.3g}, {math.exp(stall['ci95'][1]):.3g}], {stall['n']} pairs, "
        f"{stall['diverged_pairs']} with a diverged run; > 1: AdaGrad stalled): {consequence}."
    )
    details = {
        "mechanism": mechanism,
        "consequence": consequence,
        "stall_log_ratio": {"median": stall["median"], "ci95": list(stall["ci95"]), "pairs": stall["n"],
                            "diverged_pairs": stall["diverged_pairs"]},
        "adagrad_shrink": {"mean": ada_mean, "ci95": [ada_lo, ada_hi]},
        "rmsprop_shrink": {"mean": rms_mean, "ci95": [rms_lo, rms_hi]},
        "pairs": len(ada),
        "per_problem": per_problem,
        "window": WINDOW,
    }
    keys = sorted({k for r in mine.values() for k in r.run_keys()})
    return CLAIM.verdict(outcome, diff["mean"], diff["ci95"], problems=sorted(mine), budget=0, seeds=seeds,
                         summary=summary, details=details,
                         plots=[_effective_step_plot(p, r) for p, r in sorted(mine.items())], run_keys=keys)


def _effective_step_plot(problem: str, result: StudyResult) -> Plot:
    lrs = sorted({float(r.trial.hparams["lr"]) for r in result.runs})
    lr = lrs[len(lrs) // 2] if lrs else math.nan
    series = []
    steps = result.study.steps or 0
    points = log_points(steps) if steps else np.zeros(0, dtype=int)
    for o in OPTIMIZERS:
        runs = [r for r in result.runs if r.trial.optimizer == o and float(r.trial.hparams["lr"]) == lr]
        y, lo, hi = band(runs, points)
        if y:
            series.append(Series(o, (points[: len(y)] + 1).tolist(), y, lo, hi))
    return Plot(
        "curves", f"Effective step size on {problem}, lr = {lr:g}", "step", "median |dw| / |g|", series,
        logx=True, logy=True,
        caption="Median over seeds; band: range over seeds. AdaGrad's falls like 1/sqrt(t); RMSprop's follows the gradient scale.",
    )
