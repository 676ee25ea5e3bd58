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

Budget dependence (issue 12): in full mode the deep networks also run at 3x their default steps,
and deep_mlp at 10x, Adam and Nadam only (``suite.DEEP_SWEEP``). The verdict is the outcome at the
largest budget run on every deep problem (3x); a larger budget run on some of them (10x, deep_mlp)
is decided by the same rule on its cells and reported beside it: the summary and
``details["outcome_per_budget"]`` give the outcome at each budget, ``holds_at_budgets`` every budget
with the verdict's outcome.
"""

from __future__ import annotations

import math

import numpy as np

from optarena import problems
from optarena.claims import suite
from optarena.claims.base import Claim, Verdict
from optarena.plots import Plot, Series
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
    "A diverged or failed rerun is ranked, not scored: worse than any finished run (log ratio +inf or -inf against one), a tie with another diverged one; hence the median. "
    "Budget sweep (full mode): the same rule at 1x and 3x the default steps on both deep problems and at 10x on "
    "deep_mlp (beyond 1x: Adam and Nadam tuned on 7 lrs from 3e-6 to 3e-3, 5 seeds; the reference condition taken "
    "from 1x, where the references ran); the verdict is the outcome at the largest budget run on both problems, "
    "with every budget at which it holds (10x decided on deep_mlp's cells alone)."
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
}, {
    "date": "2026-12-03",
    "change": "budget sweep: Adam and Nadam also at 3x the default steps (3,000), tuned on 7 lrs from 3e-6 to 3e-3 "
              "(the 1x optima lie between 4e-5 and 8e-4), 5 seeds; the verdict is the one at the largest budget, "
              "the reference condition taken from 1x (issue 12: R5, R6 and R7 run a budget sweep). 10x (10,000 "
              "steps) is not run: with the 1x and 3x studies it would take full mode past its hour on 2 cores",
    "seen": "full mode inconclusive at 1x: Nadam over Adam +2.1% [-0.6, +4.3], worse beyond the noise in 0 of 4 "
            "cells, tuned Nadam below the median reference (momentum, RMSprop) on neither deep problem",
}, {
    "date": "2026-12-04",
    "change": "deep_mlp also at 10x (10,000 steps, the same 7 lrs and 5 seeds; residual_mlp at 10x would take full "
              "mode past its hour); the verdict is the outcome at the largest budget run on both deep problems (3x), "
              "10x decided on deep_mlp's cells and reported beside it (issue 12: 1x, 3x, 10x)",
    "seen": "full mode inconclusive at 3x: Nadam over Adam -0.2% [-0.8, +0.6], worse beyond the noise in 0 of 4 "
            "cells; at 1x inconclusive +2.1% [-0.6, +4.3]",
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
    return list(suite.deep_studies(quick)) + list(suite.deep_sweep_studies(quick))


def _budget(chosen: dict[str, StudyResult]) -> dict:
    """The cells, the reference comparison and the steps of one budget's deep studies."""
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
    steps = {p: r.tuned["adam"][0].trial.steps for p, r in chosen.items() if r.tuned.get("adam")}
    long_enough = bool(steps) and all(steps[p] >= problems.PROBLEMS[p].default_steps
                                      for p in steps if p in problems.PROBLEMS)
    if cells and seeds:
        d = np.array([suite.paired_log_ratios(v["nadam"], v["adam"]) for v in ranked.values()])  # (cells, S)
        median, interval = suite.pooled_median_ratio(d, seeds)
        effect, ci = suite.percent(median), tuple(suite.percent(v) for v in interval)
    else:
        effect, ci = math.nan, (math.nan, math.nan)
    return {"groups": groups, "seeds": seeds, "losses": losses, "cells": cells, "references": references,
            "steps": steps, "long_enough": long_enough, "effect": effect, "ci95": ci}


def verdict(results: dict[str, StudyResult]) -> Verdict:
    sweep = {k: {p: r for p, r in chosen.items() if {"adam", "nadam"} <= set(r.study.optimizers)}
             for k, chosen in suite.by_budget(results, suite.DEEP_SWEEP, suite.deep_budget_key).items()}
    sweep = {k: chosen for k, chosen in sweep.items() if chosen}
    if 1 not in sweep:  # the sweep's 1x studies are the "deep" ones; without them nothing to decide
        sweep = {}
    per_budget = {k: _budget(chosen) for k, chosen in sorted(sweep.items())}
    # The reference condition where references ran (1x: see suite.DEEP_SWEEP); a budget without
    # references takes it from the largest budget with them, so that no budget is decided on a
    # weaker rule than 1x.
    with_references = [k for k, b in per_budget.items() if b["references"]]
    outcomes = {}
    for k, b in per_budget.items():
        source = per_budget[k if b["references"] else max(with_references)] if with_references else None
        beats = [r["nadam_beats_median"] for r in source["references"].values()] if source else None
        outcomes[k] = decide([tuple(c["ci95"]) for c in b["cells"].values()], b["seeds"], beats,
                             long_enough=b["long_enough"])
    # The verdict's budget: the largest one run on every problem of 1x (a budget run on fewer
    # problems is reported, not generalised from).
    covering = [k for k in per_budget if set(sweep[k]) >= set(sweep[1])]
    largest = max(covering, default=None)
    if largest is None:
        return CLAIM.inconclusive("No Nadam / Adam runs on deep networks to compare.", problems=[])
    partial = {k: sorted(sweep[k]) for k in per_budget if k not in covering}
    b, chosen = per_budget[largest], sweep[largest]
    outcome = outcomes[largest]
    holds = [k for k in per_budget if outcomes[k] == outcome]
    seeds, cells, steps = b["seeds"], b["cells"], b["steps"]
    effect, ci = b["effect"], b["ci95"]
    worse = [c for c, d in cells.items() if d["ci95"][0] > 0]
    better = [c for c, d in cells.items() if d["ci95"][1] < 0]
    by_budget = "; ".join(
        f"{k}x ({'/'.join(map(str, sorted(set(v['steps'].values()))))} steps"
        f"{', ' + ', '.join(partial[k]) + ' only' if k in partial else ''}): {outcomes[k]}, "
        f"{v['effect']:+.1f}% ({v['ci95'][0]:+.1f}% to {v['ci95'][1]:+.1f}%)" for k, v in per_budget.items())
    summary = (
        f"At {largest}x the default steps, Nadam's held-out loss is {effect:+.1f}% relative to Adam's (95% CI "
        f"{ci[0]:+.1f}% to {ci[1]:+.1f}%) on {', '.join(chosen)}; Nadam is better beyond the noise in {len(better)} "
        f"and worse in {len(worse)} of {len(cells)} cells ({seeds} seeds). By budget: {by_budget}. "
        f"The verdict ({outcome}) holds at {', '.join(f'{k}x' for k in holds)}."
        + ("" if b["long_enough"] else " Too short to decide: the rule needs the problems' default 1,000 steps (full mode).")
        if cells else "No Nadam / Adam runs on deep networks to compare."
    )
    return CLAIM.verdict(
        outcome, effect, ci,
        problems=list(chosen), budget=max((r.study.budget for r in chosen.values()), default=0), seeds=seeds,
        summary=summary,
        details={"diverged_or_failed": {f"{k}x": suite.divergence_counts(c) for k, c in sweep.items()},
                 "margin": MARGIN, "cells": cells, "nadam_better_in": better, "nadam_worse_in": worse,
                 "budget": f"{largest}x", "holds_at_budgets": [f"{k}x" for k in holds],
                 "budgets_on_some_problems": {f"{k}x": v for k, v in partial.items()},
                 "outcome_per_budget": {f"{k}x": v for k, v in outcomes.items()},
                 "steps_per_budget": {f"{k}x": sorted(set(v["steps"].values())) for k, v in per_budget.items()},
                 "per_budget": {f"{k}x": {"effect_percent": v["effect"], "ci95": list(v["ci95"]), "seeds": v["seeds"],
                                          "cells": v["cells"]} for k, v in per_budget.items()},
                 "references": {f"{k}x": v["references"] for k, v in per_budget.items() if v["references"]}
                 or "none ran (quick mode): the reference condition is not applied"},
        plots=_plots(sweep, per_budget), run_keys=suite.run_keys({f"{p}@{k}": r for k, c in sweep.items() for p, r in c.items()}),
    )


def _plots(sweep: dict[int, dict[str, StudyResult]], per_budget: dict[int, dict]) -> list[Plot]:
    plots = []
    for k, chosen in sweep.items():
        for problem, result in chosen.items():
            series = [suite.curve_series(f"{o} tuned", result.tuned.get(o, [])) for o in result.study.optimizers]
            series += [suite.curve_series(f"{o} untuned", result.defaults.get(o, [])) for o in ("adam", "nadam")]
            plots.append(Plot(
                "curves", f"Deep network {problem} at {k}x the default steps: held-out loss", "step", "held-out loss",
                [s for s in series if s is not None], logy=True, caption="Mean over seeds with a 95% bootstrap band.",
            ))
    for k, b in per_budget.items():
        keys = list(b["losses"])
        if keys:
            plots.append(Plot(
                "bars", f"Nadam vs Adam on deep networks, {k}x the default steps", "problem and setting",
                "held-out loss (mean over seeds, 95% CI)",
                [suite.bars(o, [b["losses"][key][o] for key in keys]) for o in ("adam", "nadam")], logy=True,
                categories=[f"{p} {SETTINGS[g]}" for p, g in keys],
                caption="Tuned: best learning rate of the grid; untuned: lr 1e-3 for both (pytorch convention, Nadam's mu flat).",
            ))
    if len(per_budget) > 1:
        cells = sorted({c for b in per_budget.values() for c in b["cells"]})
        series = []
        for c in cells:
            pts = [(k, b["cells"][c]) for k, b in per_budget.items() if c in b["cells"]]
            series.append(Series(c, [float(k) for k, _ in pts], [v["percent"] for _, v in pts],
                                 [suite.percent(v["ci95"][0]) for _, v in pts], [suite.percent(v["ci95"][1]) for _, v in pts]))
        plots.append(Plot(
            "curves", "Nadam over Adam by budget", "budget (multiple of the problem's default steps)",
            "Nadam / Adam held-out loss - 1 (%)", series, logx=True,
            caption=f"Median over seeds with its 95% bootstrap interval; < 0: Nadam better. The rule's margin is +{MARGIN:.0%}.",
        ))
    return plots
