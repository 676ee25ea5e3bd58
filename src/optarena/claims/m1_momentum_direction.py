"""M1: momentum keeps the update direction consistent.

Measured where the article's picture lives: a narrow valley (curvature 1 along the floor, 100 across
it), where plain gradient steps zig-zag across the valley. The oscillation is counted as sign changes
of the step projected on the valley's steep axis (``problem.steep_direction``), with and without
momentum, at the same learning rates.
"""

from __future__ import annotations

import math

import numpy as np

from optarena import problems, stats
from optarena.claims import trajectories
from optarena.claims.base import Verdict
from optarena.claims.base import mode
from optarena.plots import Plot, Series
from optarena.claims.m2_adagrad_decay import finite_mean
from optarena.study import Study, StudyKey, StudyResult, Sweep
from optarena.trial import RunResult, Trial

ID = "M1"
TEXT_ZH = "这个动量项会考虑之前的更新,从而使更新方向在一定程度上保持一致。"
TEXT_EN = "The momentum term takes the earlier updates into account, so the update direction stays consistent to some degree."

PROBLEM = "narrow_valley"
BETA = 0.9  # the article's usual momentum (and every convention's default)
# Learning rates as fractions of plain gradient descent's stability limit 2 / lambda_max, i.e. the
# range in which SGD makes progress along the valley; above half the limit SGD zig-zags.
LR_FRACTIONS = {True: (0.3, 0.5, 0.7, 0.9), False: (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)}
STEPS = {True: 100, False: 200}
SEEDS = {True: 5, False: 20}
# Secondary comparison: each optimizer at its own best learning rate from this grid.
TUNE_LRS = tuple(float(x) for x in np.logspace(-3, 0, 13))
# A step's steep-axis component counts (for a sign change) only when it is at least this share of
# the step's length: below it the zig-zag is invisible and float32 rounding would decide the sign.
VISIBLE = 0.01
MIN_PAIRS = 6

RULE = (
    "On narrow_valley (condition number 100), article SGD and article (EMA) Momentum with beta = 0.9 run "
    "at the same learning rates, fractions {0.3, 0.5, 0.7, 0.9} (full: 0.2 ... 0.95) of SGD's stability "
    "limit 2/lambda_max, from jittered starts (seeds). For every run, count the sign changes of the step's "
    "component along the steep axis over all steps (quick 100, full 200), counting a step only when that "
    f"component is at least {VISIBLE:.0%} of the step's length. Effect = mean over (learning rate, seed) "
    "pairs of (SGD's sign changes - Momentum's) / steps, with a 95% bootstrap interval over those pairs. "
    "Supported if the interval lies above 0 (momentum oscillates less); contradicted if it lies below 0 "
    f"(momentum oscillates more); inconclusive otherwise or with fewer than {MIN_PAIRS} pairs. Reported "
    "beside it, not deciding: PyTorch's heavy-ball form at the same learning rates, and each optimizer at "
    "its own best learning rate on a grid 1e-3 ... 1."
)


def name(quick: bool) -> StudyKey:
    return StudyKey(ID, PROBLEM, mode(quick))


def stability_limit() -> float:
    """2 / lambda_max of the valley: plain gradient descent diverges above it."""
    return 2.0 / max(problems.get(PROBLEM).eigenvalues)


def learning_rates(quick: bool) -> list[float]:
    limit = stability_limit()
    return [round(f * limit, 6) for f in LR_FRACTIONS[quick]]


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
    trials = _trials(learning_rates(quick), range(1, (seeds or SEEDS[quick]) + 1), steps)
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
    """Sign changes of the (visible) steep-axis step component per step; NaN unless the run finished."""
    if run.status != "done":
        return math.nan
    c = steep_components(run, steep)
    return stats.sign_changes(c) / len(c) if len(c) else math.nan


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
    return Verdict(ID, TEXT_ZH, TEXT_EN, "inconclusive", math.nan, (math.nan, math.nan), [PROBLEM], 0, 0, RULE,
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
    seeds = sorted({s for (_, _, s) in rate})
    diffs = []
    for lr in lrs:
        for s in seeds:
            a, b = rate.get(("sgd", lr, s), math.nan), rate.get(("momentum (EMA)", lr, s), math.nan)
            if math.isfinite(a) and math.isfinite(b):
                diffs.append(a - b)
    if diffs:
        effect, lo, hi = stats.mean_ci(diffs)
    else:
        effect, lo, hi = math.nan, math.nan, math.nan
    outcome = decide((lo, hi), len(diffs))

    labels = ("sgd", "momentum (EMA)", "momentum (heavy ball)")
    per_lr = {}
    for label in labels:
        per_lr[label] = {}
        for lr in lrs:
            v = [rate[(label, lr, s)] for s in seeds if math.isfinite(rate.get((label, lr, s), math.nan))]
            per_lr[label][f"{lr:g}"] = {
                "sign_changes_per_step": float(np.mean(v)) if v else math.nan,
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
                        "sign_changes_per_step": float(np.mean(v)) if v else math.nan}

    steps = result.study.steps or STEPS[quick]
    if diffs:
        tail = (
            f"SGD {np.mean([per_lr['sgd'][f'{lr:g}']['sign_changes_per_step'] for lr in lrs]):.3f} vs momentum "
            f"{np.mean([per_lr['momentum (EMA)'][f'{lr:g}']['sign_changes_per_step'] for lr in lrs]):.3f} sign changes per step"
        )
        summary = (
            f"At equal learning rates ({', '.join(f'{lr:g}' for lr in lrs)}) over {steps} steps, {tail}; "
            f"effect {effect:+.3f} per step, 95% CI [{lo:+.3f}, {hi:+.3f}] over {len(diffs)} (lr, seed) pairs"
        )
        if len(tuned) == 2:
            summary += (
                f"; each at its own best lr (SGD {tuned['sgd']['lr']:.3g}, momentum {tuned['momentum (EMA)']['lr']:.3g}): "
                f"{tuned['sgd']['sign_changes_per_step']:.3f} vs {tuned['momentum (EMA)']['sign_changes_per_step']:.3f}"
            )
        summary += "."
    else:
        summary = "No pair of finished SGD and Momentum runs at equal learning rates."

    plots = _plots(result, runs, rate, lrs, seeds, steep) + trajectories.plots(results)
    return Verdict(
        id=ID,
        claim_zh=TEXT_ZH,
        claim_en=TEXT_EN,
        verdict=outcome,
        effect=float(effect),
        ci95=(float(lo), float(hi)),
        problems=[PROBLEM],
        budget=0,
        seeds=len(seeds),
        rule=RULE,
        effect_name="(SGD - Momentum) sign changes per step along the steep axis; > 0: momentum oscillates less",
        summary=summary,
        details={
            "learning_rates": lrs,
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


def _plots(result, runs, rate, lrs, seeds, steep) -> list[Plot]:
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
        for lr in lrs:
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
            "sign changes per step (steep axis)", series, logx=True,
            caption="Mean over seeds, bands: 95% bootstrap interval. SGD diverges above 2/100 = 0.02.",
        ))
    return plots
