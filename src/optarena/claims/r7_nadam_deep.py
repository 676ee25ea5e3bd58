"""R7: Nadam (Adam with Nesterov momentum) usually does well on deep networks.

Measurement: on the deep networks of the suite (deep_mlp: 8 hidden ReLU layers, no skips;
residual_mlp: 16 residual blocks), Nadam against Adam, both tuned (best lr of the grid) and untuned
(defaults), on the same seeds: d_s = ln(L_nadam,s / L_adam,s) of the held-out loss, one cell per
(problem, tuned | untuned). "Does well" is read against Adam, the default it is offered as an
improvement of: Nadam must be at least as good, i.e. not more than MARGIN = 5% worse, beyond the
noise (an equivalence bound: absence of a difference alone does not support the claim). Where the
study also ran reference optimizers (full mode: momentum, RMSprop), tuned Nadam must moreover reach
a lower mean loss than the median reference on every deep problem.

Without the confounds of the first design (claims review): both in the pytorch convention (eps
outside the square root for both; the article convention put it inside for Adam only), Nadam's
momentum schedule flat (momentum_decay 1e3, so mu_t = beta1; PyTorch's default 4e-3 gives mu ~0.46
over 300 steps, a different optimizer), equal untuned learning rates (1e-3), and the problems' own
1,000 steps in full mode. Runs shorter than the problem's default steps (quick mode: 300) are too
short to decide.
"""

from __future__ import annotations

import math

import numpy as np

from optarena import problems
from optarena.claims import suite
from optarena.claims.base import Claim, Verdict
from optarena.plots import Plot
from optarena.study import Study, StudyResult

ID = "R7"
TEXT_ZH = "Nadam:Nadam 是结合了 Nesterov 动量的 Adam 变体,通常在训练深度神经网络时表现良好。"
TEXT_EN = "Nadam: Nadam is an Adam variant that adds Nesterov momentum; it usually performs well when training deep neural networks."
MARGIN = 0.05
SETTINGS = {"tuned": "tuned", "defaults": "untuned"}
QUICK_CANNOT_DECIDE = "quick mode runs 300 of the 1,000 steps the rule needs"
RULE = (
    "On the deep networks (deep_mlp, residual_mlp), Nadam vs Adam on the same seeds, tuned and untuned: per "
    "(problem, setting) cell, median over seeds of ln(L_nadam / L_adam) of the held-out loss with its 95% "
    "percentile bootstrap interval. Contradicted if the interval lies above 0 (Nadam worse beyond the noise) in more "
    "than half of the cells. Supported if it lies above 0 in no cell, lies below ln(1.05) (Nadam at most 5% "
    "worse, beyond the noise) in more than half of the cells, and, where reference optimizers ran, tuned "
    "Nadam's mean loss is below the median reference's on every deep problem. Inconclusive otherwise, with "
    "fewer than 3 seeds, and with fewer steps than the problems' default 1,000. Both in the pytorch convention "
    "(eps outside the root), Nadam with a flat momentum schedule (momentum_decay 1e3) and, untuned, Adam's lr 1e-3. "
    "A diverged or failed rerun is ranked, not scored: worse than any finished run (log ratio +inf or -inf against one), a tie with another diverged one; hence the median."
)
REVISIONS = [{
    "date": "2026-12-03",
    "change": "the confounds removed: pytorch convention for both (eps placement), Nadam's mu schedule flat, "
              "equal untuned lrs, 1,000 steps in full mode (300 before), runs shorter than that inconclusive",
    "seen": "quick mode inconclusive, Nadam +16.9% [-6.3, +75.1] against Adam (article convention, 300 steps)",
}, {
    "date": "2026-12-03",
    "change": "the paired effect is the median over seeds of the log ratio with diverged or failed reruns ranked "
              "(worse than any finished run), instead of the mean with a diverged rerun scored at its starting "
              "loss (claims review: heavy-tailed log ratios)",
    "seen": "quick mode inconclusive (too short by the rule); no full-mode verdict had been computed",
}, {
    "date": "2026-12-03",
    "change": "tuning selects each learning rate on the mean held-out loss over 3 seeds (suite.SELECTION_SEEDS), "
              "as the other tuned studies do, instead of one seed (issue 12: selection on >= 3 seeds)",
    "seen": "full mode inconclusive, Nadam over Adam +0.1% [-0.6, +5.7] (1,000 steps, selection on seed 0)",
}]
EFFECT_NAME = "Nadam over Adam held-out loss - 1, in % (median over seeds and cells; < 0: Nadam better)"
CLAIM = Claim(ID, TEXT_ZH, TEXT_EN, RULE, effect_name=EFFECT_NAME, margin=MARGIN, revisions=REVISIONS,
              quick_cannot_decide=QUICK_CANNOT_DECIDE)


def decide(intervals: list[tuple[float, float]], n_seeds: int, beats_references: list[bool] | None = None,
           margin: float = MARGIN, long_enough: bool = True) -> str:
    """`intervals`: per cell, the 95% interval of median ln(L_nadam / L_adam); `beats_references`: per
    problem, whether tuned Nadam beats the median reference (None where no references ran);
    `long_enough`: the runs had at least the problems' default steps."""
    if n_seeds < suite.MIN_SEEDS or not intervals or not long_enough:
        return "inconclusive"
    worse = sum(low > 0 for low, _ in intervals)
    as_good = sum(high < math.log1p(margin) for _, high in intervals)
    if worse > len(intervals) / 2:
        return "contradicted"
    if worse == 0 and as_good > len(intervals) / 2 and (beats_references is None or all(beats_references)):
        return "supported"
    return "inconclusive"


def design(quick: bool) -> list[Study]:
    return list(suite.deep_studies(quick))


def verdict(results: dict[str, StudyResult]) -> Verdict:
    chosen = {p: r for p, r in suite.select(results, "deep").items() if "adam" in r.study.optimizers and "nadam" in r.study.optimizers}
    groups = [g for g in SETTINGS if all(getattr(r, g).get("adam") and getattr(r, g).get("nadam") for r in chosen.values())]
    seeds = min((suite.n_seeds(chosen, ("adam", "nadam"), g) for g in groups), default=0)
    losses = {(p, g): {o: suite.seed_losses(r, o, g)[:seeds] for o in ("adam", "nadam")} for p, r in chosen.items() for g in groups}
    ranked = {(p, g): {o: suite.rerun_losses(r, o, g)[:seeds] for o in ("adam", "nadam")} for p, r in chosen.items() for g in groups}
    cells: dict[str, dict] = {}
    for (problem, group), pair in losses.items():
        d = suite.paired_log_ratio(ranked[(problem, group)]["nadam"], ranked[(problem, group)]["adam"])
        cells[f"{problem} {SETTINGS[group]}"] = {
            "problem": problem, "setting": SETTINGS[group], "nadam_loss": float(np.mean(pair["nadam"])),
            "adam_loss": float(np.mean(pair["adam"])), "log_ratio": d["median"], "ci95": list(d["ci95"]),
            "percent": suite.percent(d["median"]), "diverged_pairs": d["diverged_pairs"],
        }
    references: dict[str, dict] = {}
    for problem, result in chosen.items():
        others = [o for o in result.study.optimizers if o not in ("adam", "nadam") and result.tuned.get(o)]
        if not others or "tuned" not in groups:
            continue
        ref = {o: float(np.mean(suite.seed_losses(result, o, "tuned")[:seeds])) for o in others}
        nadam = float(np.mean(losses[(problem, "tuned")]["nadam"]))
        references[problem] = {"tuned_loss": ref, "median": float(np.median(list(ref.values()))), "nadam": nadam,
                               "nadam_beats_median": nadam < float(np.median(list(ref.values())))}
    beats = [r["nadam_beats_median"] for r in references.values()] if references else None
    steps = {p: r.tuned["adam"][0].trial.steps for p, r in chosen.items() if r.tuned.get("adam")}
    long_enough = bool(steps) and all(steps[p] >= problems.PROBLEMS[p].default_steps
                                      for p in steps if p in problems.PROBLEMS)
    outcome = decide([tuple(c["ci95"]) for c in cells.values()], seeds, beats, long_enough=long_enough)

    if cells and seeds:
        d = np.array([suite.paired_log_ratios(v["nadam"], v["adam"]) for v in ranked.values()])  # (cells, S)
        median, interval = suite.pooled_median_ratio(d, seeds)
        effect, ci = suite.percent(median), tuple(suite.percent(v) for v in interval)
    else:
        effect, ci = math.nan, (math.nan, math.nan)
    worse = [c for c, d in cells.items() if d["ci95"][0] > 0]
    better = [c for c, d in cells.items() if d["ci95"][1] < 0]
    summary = (
        f"Nadam's held-out loss is {effect:+.1f}% relative to Adam's (95% CI {ci[0]:+.1f}% to {ci[1]:+.1f}%) on "
        f"{', '.join(chosen)}; Nadam is better beyond the noise in {len(better)} and worse in {len(worse)} of "
        f"{len(cells)} cells ({seeds} seeds, {'/'.join(map(str, sorted(set(steps.values()))))} steps)."
        + ("" if long_enough else " Too short to decide: the rule needs the problems' default 1,000 steps (full mode).")
        if cells else "No Nadam / Adam runs on deep networks to compare."
    )
    return CLAIM.verdict(
        outcome, effect, ci,
        problems=list(chosen), budget=max((r.study.budget for r in chosen.values()), default=0), seeds=seeds,
        summary=summary,
        details={"diverged_or_failed": suite.divergence_counts(chosen), "margin": MARGIN, "cells": cells, "nadam_better_in": better, "nadam_worse_in": worse,
                 "references": references or "none ran (quick mode): the reference condition is not applied"},
        plots=_plots(chosen, losses, groups), run_keys=suite.run_keys(chosen),
    )


def _plots(chosen: dict[str, StudyResult], losses: dict, groups: list[str]) -> list[Plot]:
    plots = []
    for problem, result in chosen.items():
        series = [suite.curve_series(f"{o} tuned", result.tuned.get(o, [])) for o in result.study.optimizers]
        series += [suite.curve_series(f"{o} untuned", result.defaults.get(o, [])) for o in ("adam", "nadam")]
        plots.append(Plot(
            "curves", f"Deep network {problem}: held-out loss", "step", "held-out loss",
            [s for s in series if s is not None], logy=True, caption="Mean over seeds with a 95% bootstrap band.",
        ))
    keys = list(losses)
    if keys:
        plots.append(Plot(
            "bars", "Nadam vs Adam on deep networks", "problem and setting", "held-out loss (mean over seeds, 95% CI)",
            [suite.bars(o, [losses[k][o] for k in keys]) for o in ("adam", "nadam")], logy=True,
            categories=[f"{p} {SETTINGS[g]}" for p, g in keys],
            caption="Tuned: best learning rate of the grid; untuned: lr 1e-3 for both (pytorch convention, Nadam's mu flat).",
        ))
    return plots
