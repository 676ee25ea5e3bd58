"""R5: Adam is a good default for most problems.

"Good default" read as the practitioner means it: Adam at its defaults, untuned, lands close to
what the best optimizer reaches after tuning (Schmidt et al. 2021, "Descending through a crowded
valley": defaults of several optimizers come close to tuning one). Measurement: Adam's
default regret on a problem, r = mean held-out loss of untuned Adam / mean held-out loss of the best
tuned optimizer (of all seven, article convention, same seeds) - the Dolan-More performance ratio of
Adam's default against the best tuned run (Dolan & More 2002), read at tau = 1.5 (and 1.2, reported).

On neural-network problems (the claim's domain), at budgets of 1x and 3x each problem's default
steps (full mode: digits_mlp also at 10x), because short runs favour optimizers whose defaults take large steps: the
claims review found Adam's default rank going from 5.67 to 3.33 of 7 at 10x the steps. The verdict
is the one at the largest budget; the summary states the budgets at which it holds. Adam's defaults
under the pytorch and keras conventions (eps placement and value differ) and the default ranks of
all seven under each convention are reported beside it.
"""

from __future__ import annotations

import math

import numpy as np

from optarena import stats
from optarena.claims import suite
from optarena.claims.base import Claim, Verdict, mode
from optarena.plots import Plot, Series
from optarena.study import Study, StudyKey, StudyResult, Sweep, TunedStudy
from optarena.trial import Trial

ID = "R5"
TEXT_ZH = "Adam:Adam 通过自适应调整学习率来提高训练效率。它通常对于大多数问题都是一个良好的默认选择。"
TEXT_EN = "Adam: Adam improves training efficiency by adapting the learning rate. It is usually a good default choice for most problems."
TAU = 1.5
TAU_STRICT = 1.2
MARGIN = TAU
MIN_PROBLEMS = 2
CONVENTIONS = ("article", "pytorch", "keras")
QUICK_CANNOT_DECIDE = "quick mode runs one neural network; the rule needs 2"
RULE = (
    "Neural-network problems (quick: digits_mlp; full: digits_mlp, mnist_mlp), each at 1x and 3x its default "
    "steps (full: digits_mlp also at 10x). At each budget every optimizer of the seven is tuned on the shared grid "
    "and rerun on seeds 1..S; Adam also runs untuned at its defaults on the same seeds. Per problem, regret "
    "r = mean held-out loss of untuned Adam / that of the best tuned optimizer, 95% bootstrap interval over "
    f"seeds (resampled together). Per problem 'good' if the interval lies at or below tau = {TAU} (Adam's "
    f"default within {TAU}x of the best tuned loss beyond the noise), 'poor' if it lies above {TAU}, "
    "'undecided' otherwise. At a budget: supported if more than half of the problems are good, contradicted "
    "if more than half are poor, inconclusive otherwise or with fewer than 2 problems or 3 seeds. The verdict "
    "is the one at the largest budget with at least 2 problems (article convention), with the budgets at which it holds; effect = "
    "Adam's default regret there (geometric mean over problems). Reported, not deciding: regret under the "
    "pytorch and keras defaults, rho(1.2) and rho(1.5), the default ranks of all seven per convention."
)
REVISIONS = [{
    "date": "2026-12-03",
    "change": "Adam's mean default rank among seven untuned optimizers on 3-5 mixed problems at their "
              "default steps replaced by Adam's default regret against the best tuned optimizer on "
              "neural-network problems, with a budget sweep and the other conventions' defaults",
    "seen": "quick mode contradicted, Adam's mean rank 5.67 of 7; the claims review's rerun at 10x the steps "
            "(rank 3.33) and per convention (5.67 / 5.33 / 3.67)",
}]
EFFECT_NAME = f"Adam's default regret: untuned Adam's held-out loss / the best tuned optimizer's (1 = as good; good if <= {TAU})"
CLAIM = Claim(ID, TEXT_ZH, TEXT_EN, RULE, effect_name=EFFECT_NAME, margin=MARGIN, revisions=REVISIONS,
              quick_cannot_decide=QUICK_CANNOT_DECIDE)


def design(quick: bool) -> list[Study]:
    return list(suite.budget_studies(quick)) + [defaults_study(s, quick) for s in suite.budget_studies(quick)]


def defaults_key(study: TunedStudy, quick: bool) -> StudyKey:
    return StudyKey(f"R5-defaults-{study.key.kind}", study.problem, mode(quick))


def defaults_study(study: TunedStudy, quick: bool) -> Sweep:
    """Every optimizer untuned under the pytorch and keras conventions, on the rerun seeds and steps
    of `study` (its own defaults are the article convention's)."""
    from optarena import problems, rules

    steps = study.steps or problems.PROBLEMS[study.problem].default_steps
    trials = tuple(Trial(study.problem, o, c, {}, s, steps) for c in CONVENTIONS[1:] for o in study.optimizers
                   if rules.has_convention(o, c) for s in study.rerun_seeds())
    return Sweep(defaults_key(study, quick), trials)


def decide(classes: list[str], n_seeds: int) -> str:
    n = len(classes)
    if n < MIN_PROBLEMS or n_seeds < suite.MIN_SEEDS:
        return "inconclusive"
    if sum(c == "good" for c in classes) > n / 2:
        return "supported"
    if sum(c == "poor" for c in classes) > n / 2:
        return "contradicted"
    return "inconclusive"


def classify(ci: tuple[float, float], tau: float = TAU) -> str:
    if not all(math.isfinite(v) for v in ci):
        return "undecided"
    if ci[1] <= tau:
        return "good"
    if ci[0] > tau:
        return "poor"
    return "undecided"


def _default_losses(result: StudyResult, extra: StudyResult | None, optimizer: str, convention: str, seeds: int) -> np.ndarray:
    if convention == "article":
        return suite.seed_losses(result, optimizer, "defaults")[:seeds]
    runs = sorted((r for r in (extra.runs if extra is not None else []) if r.trial.optimizer == optimizer
                   and r.trial.convention == convention), key=lambda r: r.trial.seed)
    fallback = suite.study_fallback(result)
    return np.array([suite.scored_loss(r, fallback) for r in runs], dtype=float)[:seeds]


def regret(adam: np.ndarray, best: np.ndarray) -> tuple[float, tuple[float, float]]:
    """mean(adam) / mean(best) and its 95% bootstrap interval over seeds (pairs kept)."""
    n = min(len(adam), len(best))
    if n == 0:
        return math.nan, (math.nan, math.nan)
    a, b = adam[:n], best[:n]
    value = float(a.mean() / b.mean())
    ci = suite.seed_bootstrap(lambda idx: a[idx].mean(axis=-1) / b[idx].mean(axis=-1), n) if n > 1 else (math.nan, math.nan)
    return value, ci


def analyse(result: StudyResult, extra: StudyResult | None) -> dict:
    optimizers = [o for o in result.study.optimizers if result.tuned.get(o)]
    seeds = min((len(result.tuned[o]) for o in optimizers), default=0)
    tuned = {o: suite.seed_losses(result, o, "tuned")[:seeds] for o in optimizers}
    best = min(tuned, key=lambda o: float(np.mean(tuned[o]))) if tuned else None
    out = {"best_tuned": best, "best_tuned_loss": float(np.mean(tuned[best])) if best else math.nan,
           "steps": result.tuned[best][0].trial.steps if best else 0, "seeds": seeds, "conventions": {}}
    for c in CONVENTIONS:
        defaults = {o: _default_losses(result, extra, o, c, seeds) for o in optimizers}
        defaults = {o: v for o, v in defaults.items() if len(v) == seeds and seeds}
        if "adam" not in defaults or best is None:
            continue
        value, ci = regret(defaults["adam"], tuned[best])
        means = {o: float(np.mean(v)) for o, v in defaults.items()}
        ranks = stats.rank_average({o: [m] for o, m in means.items()})
        out["conventions"][c] = {"regret": value, "ci95": list(ci), "class": classify(ci),
                                 "adam_default_loss": means["adam"], "default_rank_of_adam": ranks["adam"],
                                 "default_ranks": ranks, "n_defaults": len(means)}
    return out


def verdict(results: dict[StudyKey, StudyResult]) -> Verdict:
    sweep = suite.by_budget(results)
    quick = not any(k.mode == "full" for k in results)
    per_budget: dict[int, dict] = {}
    run_keys: set[str] = set()
    for k, chosen in sorted(sweep.items()):
        rows = {}
        for p, r in chosen.items():
            extra = results.get(defaults_key(r.study, quick)) if isinstance(r.study, TunedStudy) else None
            rows[p] = analyse(r, extra)
            run_keys.update(r.run_keys())
            if extra is not None:
                run_keys.update(extra.run_keys())
        per_budget[k] = rows
    outcomes = {}
    for k, rows in per_budget.items():
        for c in CONVENTIONS:
            classes = [row["conventions"][c]["class"] for row in rows.values() if c in row["conventions"]]
            seeds = min((row["seeds"] for row in rows.values()), default=0)
            outcomes[(k, c)] = decide(classes, seeds)
    # The verdict's budget: the largest with enough problems for the rule (else the largest).
    enough = [k for k, rows in per_budget.items() if len(rows) >= MIN_PROBLEMS]
    largest = max(enough or per_budget, default=None)
    if largest is None or not any("article" in row["conventions"] for row in per_budget[largest].values()):
        return CLAIM.inconclusive("No tuned and untuned runs of the budget sweep in the results.",
                                  run_keys=sorted(run_keys))
    rows = per_budget[largest]
    outcome = outcomes[(largest, "article")]
    effect, ci = _geometric_regret(sweep[largest], rows)
    holds = [k for k in sorted(per_budget) if outcomes[(k, "article")] == outcome]
    steps = {k: sorted({row["steps"] for row in per_budget[k].values()}) for k in per_budget}
    parts = []
    for k in sorted(per_budget):
        cells = ", ".join(
            f"{p} {row['conventions']['article']['regret']:.2f} [{row['conventions']['article']['ci95'][0]:.2f}, "
            f"{row['conventions']['article']['ci95'][1]:.2f}] ({row['conventions']['article']['class']})"
            for p, row in per_budget[k].items() if "article" in row["conventions"])
        parts.append(f"{k}x ({'/'.join(map(str, steps[k]))} steps): {cells} -> {outcomes[(k, 'article')]}")
    others = "; ".join(
        f"{c}: " + ", ".join(f"{p} {row['conventions'][c]['regret']:.2f}" for p, row in rows.items() if c in row["conventions"])
        for c in CONVENTIONS[1:])
    seeds = min(row["seeds"] for row in rows.values())
    summary = (
        "Adam's default regret against the best tuned optimizer (loss ratio, 95% CI): " + "; ".join(parts)
        + f". {outcome.capitalize()} at {', '.join(f'{k}x' for k in holds)} the default steps"
        + (f" (quick mode has {len(rows)} problem; the rule needs {MIN_PROBLEMS})" if len(rows) < MIN_PROBLEMS else "")
        + f". At {largest}x under the other conventions' defaults: {others}."
    )
    details = {
        "tau": TAU,
        "steps_per_budget": {f"{k}x": v for k, v in steps.items()},
        "rho": {f"{k}x": _rho(per_budget[k]) for k in per_budget},
        "outcome_per_budget_and_convention": {f"{k}x/{c}": v for (k, c), v in outcomes.items()},
        "holds_at_budgets": [f"{k}x" for k in holds],
        "per_budget": {f"{k}x": v for k, v in per_budget.items()},
        "diverged_or_failed": {f"{k}x": suite.divergence_counts(chosen) for k, chosen in sweep.items()},
    }
    return CLAIM.verdict(outcome, effect, ci, problems=sorted(rows),
                         budget=max(r.study.budget for r in sweep[largest].values()),
                         seeds=seeds, summary=summary, details=details, plots=_plots(per_budget),
                         run_keys=sorted(run_keys))


def _rho(rows: dict) -> dict:
    """rho_Adam(tau): the share of problems where Adam's default is within tau of the best tuned."""
    out = {}
    for c in CONVENTIONS:
        values = [row["conventions"][c]["regret"] for row in rows.values() if c in row["conventions"]]
        if values:
            out[c] = {f"{tau:g}": float(np.mean([v <= tau for v in values])) for tau in (TAU_STRICT, TAU)}
    return out


def _geometric_regret(chosen: dict[str, StudyResult], rows: dict) -> tuple[float, tuple[float, float]]:
    problems = [p for p, row in rows.items() if "article" in row["conventions"]]
    seeds = min(rows[p]["seeds"] for p in problems)
    adam = np.array([suite.seed_losses(chosen[p], "adam", "defaults")[:seeds] for p in problems])  # (P, S)
    best = np.array([suite.seed_losses(chosen[p], rows[p]["best_tuned"], "tuned")[:seeds] for p in problems])
    if seeds < 2:
        return float(np.exp(np.mean(np.log(adam.mean(1) / best.mean(1))))), (math.nan, math.nan)

    def statistic(idx):
        return np.exp(np.log(suite.mean_over_seeds(adam, idx) / suite.mean_over_seeds(best, idx)).mean(axis=0))

    effect = float(np.exp(np.mean(np.log(adam.mean(1) / best.mean(1)))))
    return effect, tuple(float(v) for v in suite.seed_bootstrap(statistic, seeds))


def _plots(per_budget: dict[int, dict]) -> list[Plot]:
    if not per_budget:
        return []
    series = []
    problems = sorted({p for rows in per_budget.values() for p in rows})
    for p in problems:
        for c in CONVENTIONS:
            pts = [(k, rows[p]["conventions"][c]) for k, rows in sorted(per_budget.items())
                   if p in rows and c in rows[p]["conventions"]]
            if pts:
                series.append(Series(f"{p} ({c} defaults)", [float(k) for k, _ in pts], [v["regret"] for _, v in pts],
                                     [v["ci95"][0] for _, v in pts], [v["ci95"][1] for _, v in pts]))
    return [Plot("curves", "Adam's default regret against the best tuned optimizer, by budget",
                 "budget (multiple of the problem's default steps)", "untuned Adam loss / best tuned loss",
                 series, logx=True, logy=True,
                 caption=f"1 = as good as the best tuned optimizer; the rule calls a problem good at or below {TAU} "
                         "beyond the noise. Bands: 95% bootstrap interval over seeds.")]
