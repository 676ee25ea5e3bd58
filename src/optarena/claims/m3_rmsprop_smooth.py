"""M3: RMSprop's decay makes its adaptation smoother than AdaGrad's.

Measured on scale_shift_quadratic, whose loss (hence gradient) is multiplied by 100 halfway through:
a scale-free adaptive method should divide its effective step (median |dw|/|g|, as in M2) by the same
100 and go on as before. RMSprop's moving average forgets the old scale within ~1/(1-alpha) steps;
AdaGrad's sum keeps it. The re-adaptation error is how far, in decades, the effective step after the
shift is from that ideal.
"""

from __future__ import annotations

import math

import numpy as np

from optarena import problems, stats
from optarena.claims.base import Claim, Verdict, mode
from optarena.plots import Plot, Series
from optarena.claims.measures import band, effective_steps, finite_mean
from optarena.rules import defaults
from optarena.study import Study, StudyKey, StudyResult, Sweep, by_kind
from optarena.trial import RunResult, Trial

ID = "M3"
TEXT_ZH = "RMSprop 是 AdaGrad 的一个变体,它引入了一个衰减系数 β \\beta β,用来控制历史梯度的权重。这使得 RMSprop 更加平滑地调整学习率。"
TEXT_EN = (
    "RMSprop is a variant of AdaGrad that introduces a decay coefficient beta to control the weight of past "
    "gradients. This makes RMSprop adjust its learning rate more smoothly."
)

PROBLEM = "scale_shift_quadratic"
OPTIMIZERS = ("adagrad", "rmsprop")
LRS = {True: (0.01, 0.03, 0.1), False: (0.003, 0.01, 0.03, 0.1)}
SEEDS = {True: 5, False: 10}
PRE = 10  # steps before the shift that give the old level
# After the shift, the window where the new level is read: from 2 to 6 memory lengths 1/(1-alpha)
# of RMSprop (article alpha 0.9: steps shift+20 ... shift+60), when its average has forgotten the old scale.
MEMORY = 1.0 / (1.0 - defaults("rmsprop", "article")["alpha"])
POST = (int(round(2 * MEMORY)), int(round(6 * MEMORY)))
MARGIN = 0.1  # decades: AdaGrad "adapts as well" when it is worse by less than this
MIN_PAIRS = 6

KIND = "mechanism check"  # correct code passes it by construction; labelled so in the report
READING = (
    "The reading tested: 'smoother' as re-adapting to a change of the gradient scale (the step follows the new scale instead of carrying the old one), not as less step-to-step jitter; the jitter is reported and, being smallest for AdaGrad's ever-slower steps, points the other way."
)
RULE = (
    "scale_shift_quadratic (20-dim quadratic, loss and gradient x100 from step 200 of 400); article AdaGrad "
    "and article RMSprop (alpha 0.9) at the same learning rates (quick 0.01, 0.03, 0.1; full also 0.003), "
    "seeds 1..S, effective step size traced (median |dw|/|g|). Per run, re-adaptation error = "
    "|log10(e_after / e_before) + log10(100)| decades, with e_before the mean over the 10 steps before the "
    "shift and e_after the mean over steps shift+20 ... shift+60 (2 to 6 memory lengths of RMSprop); 0 is a "
    "perfectly scale-free re-adaptation. Effect = mean paired difference error(AdaGrad) - error(RMSprop) over "
    f"(lr, seed), 95% bootstrap interval. Supported if the interval lies above {MARGIN} decades (RMSprop "
    f"re-adapts better); contradicted if it lies below {MARGIN} (AdaGrad adapts as well or better); otherwise, "
    f"or with fewer than {MIN_PAIRS} pairs, inconclusive. Reported beside it, not deciding: the per-step "
    "jitter std(diff log10 effective step) over the run, the largest update after the shift relative to "
    "before, and the loss. " + READING
)
CLAIM = Claim(
    ID, TEXT_ZH, TEXT_EN, RULE, margin=MARGIN, kind=KIND,
    effect_name="re-adaptation error after a x100 gradient-scale change, AdaGrad - RMSprop (decades; > 0: RMSprop re-adapts better)",
)


def name(quick: bool) -> StudyKey:
    return StudyKey(ID, PROBLEM, mode(quick))


def study(quick: bool, seeds: int | None = None, lrs: tuple[float, ...] | None = None) -> Study:
    steps = problems.get(PROBLEM).default_steps
    trials = tuple(
        Trial(PROBLEM, o, "article", {"lr": lr}, s, steps)
        for o in OPTIMIZERS for lr in (lrs or LRS[quick]) for s in range(1, (seeds or SEEDS[quick]) + 1)
    )
    return Sweep(name(quick), trials, trace=("effective_step", "update_norm", "loss"))


def design(quick: bool) -> list[Study]:
    return [study(quick)]


# -- measurement -------------------------------------------------------------------------------------


def shift() -> tuple[int, float]:
    """(step at which the scale changes, factor) of the problem as the engine builds it."""
    p = problems.get(PROBLEM)
    return p.shift_step, p.scale_factor


def readaptation_error(run: RunResult, shift_step: int, factor: float) -> float:
    """|log10(e_after / e_before) + log10(factor)| in decades; NaN unless the run finished."""
    if run.status != "done":
        return math.nan
    e = effective_steps(run)
    before = e[max(0, shift_step - PRE):shift_step]
    after = e[shift_step + POST[0]:shift_step + POST[1]]
    if len(before) == 0 or len(after) == 0:
        return math.nan
    b, a = finite_mean(before), finite_mean(after)
    if not (a > 0 and b > 0):
        return math.nan
    return float(abs(np.log10(a / b) + np.log10(factor)))


def jitter(run: RunResult) -> float:
    """std over steps of the change of log10(effective step): how ragged the adaptation is."""
    e = effective_steps(run)
    if run.status != "done" or np.isfinite(e).sum() < 3:
        return math.nan
    d = np.diff(np.log10(e))
    return float(np.std(d[np.isfinite(d)])) if np.isfinite(d).sum() >= 2 else math.nan


def update_jump(run: RunResult, shift_step: int) -> float:
    """log10(largest update norm in the 60 steps after the shift / mean update norm in the 10 before)."""
    u = np.asarray(run.trace.get("update_norm") or [], dtype=float)
    if run.status != "done" or len(u) < shift_step + 1:
        return math.nan
    before = np.mean(u[max(0, shift_step - PRE):shift_step])
    after = np.max(u[shift_step:shift_step + POST[1]])
    if not (before > 0 and np.isfinite(after) and after > 0):
        return math.nan
    return float(np.log10(after / before))


def decide(ci: tuple[float, float], n_pairs: int) -> str:
    """The rule on the interval of error(AdaGrad) - error(RMSprop), decades."""
    if n_pairs < MIN_PAIRS or not all(math.isfinite(x) for x in ci):
        return "inconclusive"
    if ci[0] > MARGIN:
        return "supported"
    if ci[1] < MARGIN:
        return "contradicted"
    return "inconclusive"


# -- verdict -----------------------------------------------------------------------------------------


def verdict(results: dict[str, StudyResult]) -> Verdict:
    result = by_kind(results, ID).get(PROBLEM)
    if result is None or not result.runs:
        return CLAIM.inconclusive("No M3 runs in the results.", problems=[PROBLEM])
    shift_step, factor = shift()
    error, ragged, jump, final = {}, {}, {}, {}
    for r in result.runs:
        k = (r.trial.optimizer, float(r.trial.hparams["lr"]), int(r.trial.seed))
        error[k] = readaptation_error(r, shift_step, factor)
        ragged[k] = jitter(r)
        jump[k] = update_jump(r, shift_step)
        final[k] = r.final.get("val_loss", math.inf) if r.status == "done" else math.inf
    ada, rms = [], []
    for (o, lr, s), v in sorted(error.items()):
        w = error.get(("rmsprop", lr, s), math.nan)
        if o == "adagrad" and math.isfinite(v) and math.isfinite(w):
            ada.append(v), rms.append(w)
    seeds = len({k[2] for k in error})
    keys = result.run_keys()
    if not ada:
        return CLAIM.inconclusive("No finished AdaGrad/RMSprop pair with a measurable effective step around the shift.",
                                  problems=[PROBLEM], seeds=seeds, run_keys=keys)
    diff = stats.paired_difference(ada, rms)
    outcome = decide(diff["ci95"], len(ada))

    def mean_of(table, o):
        v = [x for (oo, _, _), x in table.items() if oo == o and math.isfinite(x)]
        return float(np.mean(v)) if v else math.nan

    per_optimizer = {
        o: {
            "readaptation_error_decades": mean_of(error, o),
            "jitter_std_dlog10": mean_of(ragged, o),
            "update_jump_decades": mean_of(jump, o),
            "final_loss_median": float(np.median([x for (oo, _, _), x in final.items() if oo == o])),
        }
        for o in OPTIMIZERS
    }
    a, b = per_optimizer["adagrad"], per_optimizer["rmsprop"]
    summary = (
        f"After the x{factor:g} gradient-scale change at step {shift_step}, RMSprop's effective step re-adapted to "
        f"within {b['readaptation_error_decades']:.2f} decades of the scale-free ideal, AdaGrad's within "
        f"{a['readaptation_error_decades']:.2f}; difference {diff['mean']:+.2f} decades, 95% CI "
        f"[{diff['ci95'][0]:+.2f}, {diff['ci95'][1]:+.2f}] over {len(ada)} (lr, seed) pairs. The largest update after "
        f"the shift was {a['update_jump_decades']:+.2f} decades above the old level for AdaGrad and "
        f"{b['update_jump_decades']:+.2f} for RMSprop; step-to-step jitter of log10 effective step: AdaGrad "
        f"{a['jitter_std_dlog10']:.3f}, RMSprop {b['jitter_std_dlog10']:.3f}."
    )
    details = {
        "shift_step": shift_step,
        "scale_factor": factor,
        "windows": {"before": [shift_step - PRE, shift_step], "after": [shift_step + POST[0], shift_step + POST[1]]},
        "pairs": len(ada),
        "per_optimizer": per_optimizer,
        "margin_decades": MARGIN,
    }
    return CLAIM.verdict(outcome, diff["mean"], diff["ci95"], problems=[PROBLEM], budget=0, seeds=seeds,
                         summary=summary, details=details, plots=_plots(result, shift_step), run_keys=keys)


def _plots(result: StudyResult, shift_step: int) -> list[Plot]:
    lrs = sorted({float(r.trial.hparams["lr"]) for r in result.runs})
    lr = lrs[len(lrs) // 2]
    steps = result.study.steps or 0
    points = np.arange(steps)
    step_series, loss_series = [], []
    for o in OPTIMIZERS:
        runs = [r for r in result.runs if r.trial.optimizer == o and float(r.trial.hparams["lr"]) == lr and r.status == "done"]
        if not runs:
            continue
        y, lo, hi = band(runs, points)
        if y:
            step_series.append(Series(o, (points[: len(y)] + 1).tolist(), y, lo, hi))
        curves = [r.curve for r in runs if r.curve.get("val_loss")]
        if curves:
            n = min(len(c["val_loss"]) for c in curves)
            v = np.array([c["val_loss"][:n] for c in curves])
            loss_series.append(Series(o, curves[0]["step"][:n], np.median(v, 0).tolist(), v.min(0).tolist(), v.max(0).tolist()))
    return [
        Plot("curves", f"Effective step size around the gradient-scale change, lr = {lr:g}", "step",
             "median |dw| / |g|", step_series, logy=True,
             caption=f"Gradients x100 from step {shift_step}; the scale-free ideal drops by 2 decades. Median over seeds, band: range."),
        Plot("curves", f"Loss (unscaled) on scale_shift_quadratic, lr = {lr:g}", "step", "loss", loss_series, logy=True,
             caption="Median over seeds, band: range."),
    ]
