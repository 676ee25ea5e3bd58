"""M1: momentum keeps the update direction consistent.

Measured where the article's picture lives: a narrow valley (curvature 1 along the floor, lambda_max
= 100 across it). Plain gradient descent multiplies the steep component by (1 - lr*lambda) each step,
so it reverses direction across the valley on every step exactly when lr*lambda_max lies in (1, 2)
(the zig-zag regime) and never when lr*lambda_max <= 1 (the smooth regime). The article's EMA
momentum is heavy ball with alpha = lr*(1 - beta); on the steep axis its characteristic roots
z^2 - (1 + beta - alpha*lambda) z + beta are complex, |z| = sqrt(beta), and it reverses theta/pi
times per step, cos(theta) = (1 + beta - alpha*lambda) / (2 sqrt(beta)): 0.11-0.15 for beta = 0.9
in the zig-zag regime (``closed_form_reversals``; Polyak 1964, Goh 2017 "Why momentum really works").

So the claim is tested in the zig-zag regime (primary), with reversals per *visible* step (steps
whose steep-axis component is at least ``VISIBLE`` of the step's length): counting per step over a
fixed window would measure how long an oscillation stays visible, not how often the direction
reverses (the claims review). The smooth regime, where momentum (underdamped at beta = 0.9)
overshoots and SGD does not reverse at all, is reported as a labelled secondary. The mean cosine
of consecutive steps is reported beside the count. Given the closed form, the primary test is a
check of the mechanism on correct code rather than a test that could plausibly come out either way.
"""

from __future__ import annotations

import math

import numpy as np

from optarena import problems, stats
from optarena.claims import trajectories
from optarena.claims.base import Claim, Verdict, mode
from optarena.claims.measures import finite_mean
from optarena.plots import Plot, Series
from optarena.study import Study, StudyKey, StudyResult, Sweep
from optarena.trial import RunResult, Trial

ID = "M1"
TEXT_ZH = "这个动量项会考虑之前的更新,从而使更新方向在一定程度上保持一致。"
TEXT_EN = "The momentum term takes the earlier updates into account, so the update direction stays consistent to some degree."

PROBLEM = "narrow_valley"
BETA = 0.9  # the article's usual momentum (and every convention's default)
# Learning rates as fractions of plain gradient descent's stability limit 2 / lambda_max:
# lr*lambda_max = 2*fraction. Primary: the zig-zag regime, lr*lambda_max in (1, 2); secondary: the
# smooth regime, lr*lambda_max <= 1.
LR_FRACTIONS = {True: (0.6, 0.7, 0.8, 0.9), False: (0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)}
SMOOTH_FRACTIONS = {True: (0.2, 0.3, 0.4, 0.5), False: (0.2, 0.3, 0.4, 0.5)}
STEPS = {True: 100, False: 200}
SEEDS = {True: 5, False: 20}
# Reported beside: each optimizer at its own best learning rate from this grid.
TUNE_LRS = tuple(float(x) for x in np.logspace(-3, 0, 13))
# A step's steep-axis component counts only when it is at least this share of the step's length:
# below it the zig-zag is invisible and float32 rounding would decide the sign.
VISIBLE = 0.01
MIN_PAIRS = 6
KIND = "mechanism check"

RULE = (
    "On narrow_valley (lambda_max = 100), article SGD and article (EMA) Momentum with beta = 0.9 run at the "
    "same learning rates in the zig-zag regime lr*lambda_max in (1, 2): fractions {0.6, 0.7, 0.8, 0.9} "
    "(full: 0.55 ... 0.95) of SGD's stability limit 2/lambda_max, from jittered starts (seeds), quick 100 / "
    "full 200 steps. For every run: reversals per visible step = sign changes of the step's component along "
    f"the steep axis between consecutive visible steps (component at least {VISIBLE:.0%} of the step's "
    "length) over the number of such pairs. Effect = mean over (learning rate, seed) pairs of SGD's "
    "reversals per visible step minus Momentum's, 95% bootstrap interval over the pairs. Supported if the "
    "interval lies above 0 (momentum reverses less often); contradicted if below 0; inconclusive otherwise "
    f"or with fewer than {MIN_PAIRS} pairs. Reported, not deciding: the smooth regime (fractions 0.2 ... 0.5, "
    "a labelled secondary), the mean cosine of consecutive steps, the closed-form rates, PyTorch's heavy-ball "
    "form at the same learning rates, and each optimizer at its own best learning rate on a grid 1e-3 ... 1."
)
REVISIONS = [{
    "date": "2026-12-03",
    "change": "learning rates restricted to the zig-zag regime lr*lambda_max in (1, 2) (the smooth regime "
              "becomes a labelled secondary) and sign changes counted per visible step instead of per step",
    "seen": "quick mode inconclusive, effect 0.0125 [-0.045, 0.078] over both regimes mixed; the claims "
            "review's full-mode table per regime (zig-zag +0.043 [+0.016, +0.073], smooth -0.061)",
}]
CLAIM = Claim(
    ID, TEXT_ZH, TEXT_EN, RULE, kind=KIND, revisions=REVISIONS,
    effect_name="(SGD - Momentum) reversals per visible step across the valley, zig-zag regime; > 0: momentum reverses less",
)


def closed_form_reversals(lr: float, beta: float = BETA, curvature: float = 100.0, ema: bool = True) -> float:
    """Reversals per step of momentum along an axis of `curvature` (theta / pi; 1 when the roots are
    real and negative, 0 when real and positive). `ema`: the article's form (alpha = lr*(1-beta)),
    else heavy ball (alpha = lr)."""
    alpha = lr * (1 - beta) if ema else lr
    c = (1 + beta - alpha * curvature) / (2 * math.sqrt(beta)) if beta > 0 else math.copysign(2.0, 1 - alpha * curvature)
    if abs(c) >= 1:
        return 0.0 if c > 0 else 1.0
    return math.acos(c) / math.pi


def name(quick: bool) -> StudyKey:
    return StudyKey(ID, PROBLEM, mode(quick))


def stability_limit() -> float:
    """2 / lambda_max of the valley: plain gradient descent diverges above it."""
    return 2.0 / max(problems.get(PROBLEM).eigenvalues)


def learning_rates(quick: bool, smooth: bool = False) -> list[float]:
    """The primary (zig-zag regime) learning rates, or with `smooth` the secondary ones."""
    limit = stability_limit()
    return [round(f * limit, 6) for f in (SMOOTH_FRACTIONS if smooth else LR_FRACTIONS)[quick]]


def _trials(lrs, seeds, steps) -> list[Trial]:
    out = []
    for seed in seeds:
        for lr in lrs:
            out.append(Trial(PROBLEM, "sgd", "article", {"lr": lr}, seed, steps))
            out.append(Trial(PROBLEM, "momentum", "article", {"lr": lr, "momentum": BETA}, seed, steps))
            out.append(Trial(PROBLEM, "momentum", "pytorch", {"lr": lr, "momentum": BETA}, seed, steps))
        for lr in TUNE_LRS:
            if lr not in lrs:
                out.append(Trial(PROBLEM, "sgd", "article", {"lr": lr}, seed, steps))
                out.append(Trial(PROBLEM, "momentum", "article", {"lr": lr, "momentum": BETA}, seed, steps))
    return out


def study(quick: bool, seeds: int | None = None, steps: int | None = None) -> Study:
    steps = steps or STEPS[quick]
    trials = _trials(learning_rates(quick) + learning_rates(quick, smooth=True), range(1, (seeds or SEEDS[quick]) + 1), steps)
    return Sweep(name(quick), tuple(trials), trace=("params",))


def design(quick: bool) -> list[Study]:
    return [study(quick)] + trajectories.design(quick)


# -- measurement -------------------------------------------------------------------------------------


def steep_components(run: RunResult, steep=None) -> np.ndarray:
    """Per step: the step's component along the steep axis, 0 where it is below ``VISIBLE`` of the step."""
    steep = np.asarray(steep if steep is not None else problems.get(PROBLEM).steep_direction, dtype=float)
    xy = np.asarray(run.trace.get("params") or [], dtype=float)
    if xy.ndim != 2 or len(xy) < 2:
        return np.zeros(0)
    d = np.diff(xy, axis=0)
    along = d @ steep
    length = np.linalg.norm(d, axis=1)
    return np.where(np.abs(along) >= VISIBLE * length, along, 0.0)


def sign_change_rate(run: RunResult, steep=None) -> float:
    """Reversals per visible step: sign changes of the steep-axis step component between consecutive
    visible steps, over the number of such pairs; NaN unless the run finished with 2 visible steps."""
    if run.status != "done":
        return math.nan
    c = steep_components(run, steep)
    visible = c[c != 0]
    return stats.sign_changes(visible) / (len(visible) - 1) if len(visible) >= 2 else math.nan


def direction_consistency(run: RunResult) -> float:
    """Mean cosine between consecutive steps (1: a straight line; -1: back and forth)."""
    xy = np.asarray(run.trace.get("params") or [], dtype=float)
    if run.status != "done" or len(xy) < 3:
        return math.nan
    d = np.diff(xy, axis=0)
    n = np.linalg.norm(d, axis=1)
    ok = (n[1:] > 0) & (n[:-1] > 0)
    if not ok.any():
        return math.nan
    return float(np.mean((d[1:] * d[:-1]).sum(1)[ok] / (n[1:] * n[:-1])[ok]))


def decide(ci: tuple[float, float], n_pairs: int) -> str:
    """The rule: CI of (SGD - Momentum) sign changes per step above 0 -> supported, below -> contradicted."""
    if n_pairs < MIN_PAIRS or not all(math.isfinite(x) for x in ci):
        return "inconclusive"
    if ci[0] > 0:
        return "supported"
    if ci[1] < 0:
        return "contradicted"
    return "inconclusive"


# -- verdict -----------------------------------------------------------------------------------------


def _label(run: RunResult) -> str:
    if run.trial.optimizer == "sgd":
        return "sgd"
    return "momentum (EMA)" if run.trial.convention == "article" else "momentum (heavy ball)"


def _find(results: dict[str, StudyResult]) -> tuple[str | None, StudyResult | None]:
    for quick in (False, True):
        if name(quick) in results:
            return name(quick), results[name(quick)]
    return None, None


def _empty(reason: str, results) -> Verdict:
    return CLAIM.verdict("inconclusive", math.nan, (math.nan, math.nan), problems=[PROBLEM], budget=0, seeds=0,
                         effect_name="(SGD - Momentum) sign changes per step along the steep axis",
                         summary=reason, plots=trajectories.plots(results), run_keys=trajectories.run_keys(results))


def verdict(results: dict[str, StudyResult]) -> Verdict:
    key, result = _find(results)
    if result is None or not result.runs:
        return _empty("No M1 runs in the results.", results)
    steep = problems.get(PROBLEM).steep_direction
    quick = key.mode == "quick"
    equal_lrs = set(learning_rates(quick))
    rate: dict[tuple[str, float, int], float] = {}
    cosine: dict[tuple[str, float, int], float] = {}
    final: dict[tuple[str, float, int], float] = {}
    runs: dict[tuple[str, float, int], RunResult] = {}
    for r in result.runs:
        k = (_label(r), float(r.trial.hparams["lr"]), int(r.trial.seed))
        rate[k] = sign_change_rate(r, steep)
        cosine[k] = direction_consistency(r)
        final[k] = r.final.get("val_loss", math.inf) if r.status == "done" else math.inf
        runs[k] = r
    lrs = sorted({lr for (_, lr, _) in rate if lr in equal_lrs})
    smooth_lrs = sorted({lr for (_, lr, _) in rate if lr in set(learning_rates(quick, smooth=True))})
    seeds = sorted({s for (_, _, s) in rate})
    diffs = _pair_differences(rate, lrs, seeds)
    if diffs:
        effect, lo, hi = stats.mean_ci(diffs)
    else:
        effect, lo, hi = math.nan, math.nan, math.nan
    outcome = decide((lo, hi), len(diffs))
    smooth_diffs = _pair_differences(rate, smooth_lrs, seeds)
    smooth = dict(zip(("effect", "ci_low", "ci_high"), stats.mean_ci(smooth_diffs))) if smooth_diffs else {}
    cos_diffs = _pair_differences(cosine, lrs, seeds, sign=-1.0)

    labels = ("sgd", "momentum (EMA)", "momentum (heavy ball)")
    curvature = max(problems.get(PROBLEM).eigenvalues)
    per_lr = {}
    for label in labels:
        per_lr[label] = {}
        for lr in lrs + smooth_lrs:
            v = [rate[(label, lr, s)] for s in seeds if math.isfinite(rate.get((label, lr, s), math.nan))]
            predicted = (1.0 if lr * curvature > 1 else 0.0) if label == "sgd" else closed_form_reversals(
                lr, BETA, curvature, ema=label == "momentum (EMA)")
            per_lr[label][f"{lr:g}"] = {
                "regime": "zig-zag" if lr in equal_lrs else "smooth (secondary)",
                "reversals_per_visible_step": float(np.mean(v)) if v else math.nan,
                "closed_form": predicted,
                "diverged_runs": sum(1 for s in seeds if runs.get((label, lr, s)) is not None and runs[(label, lr, s)].status != "done"),
                "direction_consistency": finite_mean([cosine.get((label, lr, s), math.nan) for s in seeds]),
            }
    tuned = {}
    for label in ("sgd", "momentum (EMA)"):
        grid = sorted({lr for (lab, lr, _) in final if lab == label})
        if not grid:
            continue
        med = {lr: float(np.median([final.get((label, lr, s), math.inf) for s in seeds])) for lr in grid}
        best = min(grid, key=lambda lr: (med[lr], lr))
        v = [rate[(label, best, s)] for s in seeds if math.isfinite(rate.get((label, best, s), math.nan))]
        tuned[label] = {"lr": best, "median_final_loss": med[best],
                        "reversals_per_visible_step": float(np.mean(v)) if v else math.nan}

    steps = result.study.steps or STEPS[quick]
    if diffs:
        def mean_of(label, chosen):
            return np.nanmean([per_lr[label][f"{lr:g}"]["reversals_per_visible_step"] for lr in chosen])

        summary = (
            f"Zig-zag regime (lr*lambda_max {lrs[0] * curvature:.2g} to {lrs[-1] * curvature:.2g}), "
            f"equal learning rates, {steps} steps: SGD reverses across the valley {mean_of('sgd', lrs):.3f} times per "
            f"visible step, EMA momentum {mean_of('momentum (EMA)', lrs):.3f} (closed form "
            f"{np.mean([closed_form_reversals(lr, BETA, curvature) for lr in lrs]):.3f}); effect {effect:+.3f}, 95% CI "
            f"[{lo:+.3f}, {hi:+.3f}] over {len(diffs)} (lr, seed) pairs."
        )
        if smooth:
            summary += (
                f" Secondary, smooth regime (lr*lambda_max <= 1): SGD {mean_of('sgd', smooth_lrs):.3f} vs momentum "
                f"{mean_of('momentum (EMA)', smooth_lrs):.3f}, effect {smooth['effect']:+.3f} [{smooth['ci_low']:+.3f}, "
                f"{smooth['ci_high']:+.3f}]: there momentum (underdamped at beta {BETA}) overshoots where SGD does not."
            )
        if len(tuned) == 2:
            summary += (
                f" Each at its own best lr (SGD {tuned['sgd']['lr']:.3g}, momentum {tuned['momentum (EMA)']['lr']:.3g}): "
                f"{tuned['sgd']['reversals_per_visible_step']:.3f} vs {tuned['momentum (EMA)']['reversals_per_visible_step']:.3f}."
            )
    else:
        summary = "No pair of finished SGD and Momentum runs at equal learning rates."

    plots = _plots(result, runs, rate, lrs, seeds, steep, sorted(lrs + smooth_lrs)) + trajectories.plots(results)
    return CLAIM.verdict(
        outcome,
        effect,
        (lo, hi),
        problems=[PROBLEM],
        budget=0,
        seeds=len(seeds),
        summary=summary,
        details={
            "kind": KIND,
            "learning_rates": lrs,
            "smooth_learning_rates": smooth_lrs,
            "smooth_regime": smooth,
            "direction_consistency_gain": dict(zip(("effect", "ci_low", "ci_high"), stats.mean_ci(cos_diffs))) if cos_diffs else {},
            "stability_limit": stability_limit(),
            "steps": steps,
            "beta": BETA,
            "pairs": len(diffs),
            "per_learning_rate": per_lr,
            "at_own_best_lr": tuned,
            "visible_share": VISIBLE,
        },
        plots=plots,
        run_keys=sorted(set(result.run_keys()) | set(trajectories.run_keys(results))),
    )


def _pair_differences(values: dict, lrs, seeds, sign: float = 1.0) -> list[float]:
    """sign * (SGD - EMA momentum) per (lr, seed) pair where both are finite."""
    out = []
    for lr in lrs:
        for s in seeds:
            a, b = values.get(("sgd", lr, s), math.nan), values.get(("momentum (EMA)", lr, s), math.nan)
            if math.isfinite(a) and math.isfinite(b):
                out.append(sign * (a - b))
    return out


def _plots(result, runs, rate, lrs, seeds, steep, all_lrs) -> list[Plot]:
    plots = []
    if lrs and seeds:
        lr, seed = lrs[-1], seeds[0]
        chosen = [runs[(label, lr, seed)] for label in ("sgd", "momentum (EMA)", "momentum (heavy ball)") if (label, lr, seed) in runs]
        plots.append(Plot(
            "trajectories",
            f"SGD and momentum (beta {BETA}) in the narrow valley, lr = {lr:g}",
            "x", "y",
            [trajectories.path(r, f"{_label(r)}") for r in chosen],
            contour=trajectories.contour(PROBLEM),
            caption=f"Same start (seed {seed}) and learning rate; the valley floor runs along (1, 1).",
        ))
        series = []
        for r in chosen[:2]:
            c = steep_components(r, steep)[:60]
            series.append(Series(_label(r), list(range(1, len(c) + 1)), c.tolist()))
        plots.append(Plot(
            "curves", f"Step component across the valley, lr = {lr:g}", "step", "step along the steep axis", series,
            caption=f"The first 60 steps; zero where the component is below {VISIBLE:.0%} of the step's length.",
        ))
    series = []
    for label in ("sgd", "momentum (EMA)", "momentum (heavy ball)"):
        x, y, lo, hi = [], [], [], []
        for lr in all_lrs:
            v = [rate[(label, lr, s)] for s in seeds if math.isfinite(rate.get((label, lr, s), math.nan))]
            if not v:
                continue
            m, a, b = stats.mean_ci(v)
            x.append(lr), y.append(m), lo.append(a), hi.append(b)
        if x:
            series.append(Series(label, x, y, lo, hi))
    if series:
        plots.append(Plot(
            "curves", "Oscillation across the valley versus learning rate", "learning rate",
            "reversals per visible step (steep axis)", series, logx=True,
            caption="Mean over seeds, bands: 95% bootstrap interval. Zig-zag regime above lr = 0.01 (lr*lambda_max > 1), where SGD reverses on every step; SGD diverges above 2/100 = 0.02.",
        ))
    return plots
