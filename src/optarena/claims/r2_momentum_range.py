"""R2: the momentum parameter is usually best between 0.8 and 0.9.

A sweep of the momentum value, each with its learning rate tuned on the same grid, on problems where
momentum is meant to help: ill-conditioned with noise (DeepOBS's quadratic), plain gradient noise
(noisy_quadratic) and, in full mode, a small network (digits_mlp).

Which momentum? The article's form is the moving average v = b*v + (1-b)*g, w -= lr*v; PyTorch's heavy
ball v = mu*v + g, w -= lr*v is the same method with lr_heavy = lr_ema * (1 - mu), so with the lr tuned
per momentum value both pick the same best momentum up to the lr grid. The article's form decides;
full mode runs the heavy ball too, as a check.
"""

from __future__ import annotations

import math

import numpy as np

from optarena import stats
from optarena.claims.base import Claim, Verdict, mode
from optarena.plots import Plot, Series
from optarena.study import Study, StudyKey, StudyResult, Sweep, by_kind
from optarena.trial import RunResult, Trial

ID = "R2"
TEXT_ZH = (
    "当需要考虑前一次梯度调整对后续修正的影响时,这个方法不错。"
    "Momentum 的参数 momentum 控制了之前梯度的影响程度,一般取值在 0.8 到 0.9 之间。"
)
TEXT_EN = (
    "When the effect of earlier gradient steps on later corrections should be taken into account, this method "
    "works well. Momentum's parameter momentum controls how much earlier gradients count; it is usually "
    "between 0.8 and 0.9."
)

MOMENTA = (0.0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)
IN_RANGE = (0.8, 0.85, 0.9)
# problem -> (steps, learning-rate grid of the article's EMA form)
PROBLEMS = {
    True: {
        "quadratic_deepobs": (300, tuple(np.logspace(-3, 0, 13).tolist())),
        "noisy_quadratic": (500, tuple(np.logspace(-3, 0, 13).tolist())),
    },
    False: {
        "quadratic_deepobs": (300, tuple(np.logspace(-3, 0, 13).tolist())),
        "noisy_quadratic": (500, tuple(np.logspace(-3, 0, 13).tolist())),
        "digits_mlp": (500, tuple(np.logspace(-2, 1, 7).tolist())),
    },
}
# The heavy ball's best lr is (1 - mu) times the EMA's: its grid reaches lower (full mode, quadratics).
HEAVY_BALL_LRS = tuple(np.logspace(-4, 0, 17).tolist())
SEEDS = {True: 6, False: 8}
TAIL = 5  # evaluation points averaged at the end of a run (about its last fifth): noise averages out
MARGIN = math.log(1.05)  # a gap below 5% in loss does not count against the range
DIVERGED = 1e30  # the loss a diverged run counts as
N_RESAMPLES = 2000
REVISIONS = [{
    "date": "2026-12-03",
    "change": "per-problem 'within the noise' (the gap's interval reaches down to 5%) and 'in range' (the best "
              "momentum lies in [0.8, 0.9]) counted as support; now only 'equivalent' (the gap's upper bound "
              "below 5%) does, following the claims review",
    "seen": "quick mode: supported, effect 0.0117, 95% CI [0, 0.138], the best momentum 0.95 on both problems",
}]

RULE = (
    "Momentum in {0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99}, article (EMA) form, each value with its learning "
    "rate chosen from a log grid (quadratics 1e-3 ... 1, 13 values; digits_mlp 1e-2 ... 10, 7 values), every "
    "(momentum, lr) run on seeds 1..S (quick: quadratic_deepobs and noisy_quadratic, 6 seeds; full: also "
    "digits_mlp, 8 seeds). A run's loss is its held-out loss averaged over the last 5 evaluation points. For "
    "each momentum value the lr with the lowest mean loss over seeds is taken; the best momentum is the one "
    "with the lowest such loss. Gap = log(best loss with momentum in [0.8, 0.9]) - log(best loss overall) "
    "(0 when the best lies in the range); its 95% interval comes from resampling seeds, redoing both choices "
    "in every resample. The claim is that the range is as good as any momentum, so it is tested for "
    "equivalence with a margin of 5% in loss: per problem 'equivalent' if the gap's upper 95% bound lies "
    "below log(1.05) (the range is within 5% of the best, beyond the noise); 'outside' if the gap's lower "
    "bound lies above log(1.05); 'undecided' otherwise (a gap that cannot be negative always has an "
    "interval starting near 0, which alone shows nothing). Supported if more than half of the problems are "
    "equivalent; contradicted if more than half are outside; inconclusive otherwise or with fewer than 2 "
    "problems or 3 seeds. Effect = the gap averaged over problems. PyTorch's heavy ball (full mode) is "
    "reported beside it, not deciding."
)
CLAIM = Claim(
    ID, TEXT_ZH, TEXT_EN, RULE, margin=MARGIN, revisions=REVISIONS,
    effect_name="log(best loss with momentum in [0.8, 0.9]) - log(best loss over all momenta), mean over problems; 0: the range holds the best",
)


def name(problem: str, quick: bool, convention: str = "article") -> StudyKey:
    tag = "" if convention == "article" else "-heavy-ball"
    return StudyKey(ID + tag, problem, mode(quick))


def study(problem: str, quick: bool, convention: str = "article", seeds: int | None = None,
          steps: int | None = None, lrs: tuple[float, ...] | None = None, momenta=MOMENTA) -> Study:
    default_steps, default_lrs = PROBLEMS[quick].get(problem) or PROBLEMS[False][problem]
    steps = steps or default_steps
    lrs = lrs or (default_lrs if convention == "article" else HEAVY_BALL_LRS)
    trials = tuple(
        Trial(problem, "momentum", convention, {"lr": lr, "momentum": m}, s, steps)
        for m in momenta for lr in lrs for s in range(1, (seeds or SEEDS[quick]) + 1)
    )
    return Sweep(name(problem, quick, convention), tuple(trials))


def design(quick: bool) -> list[Study]:
    studies = [study(p, quick) for p in PROBLEMS[quick]]
    if not quick:
        studies += [study(p, quick, "pytorch") for p in ("quadratic_deepobs", "noisy_quadratic")]
    return studies


# -- measurement -------------------------------------------------------------------------------------


def tail_loss(run: RunResult, tail: int = TAIL) -> float:
    """Held-out loss averaged over the last `tail` evaluation points; DIVERGED unless the run finished."""
    values = run.curve.get("val_loss") or []
    if run.status != "done" or not values:
        return DIVERGED
    v = float(np.mean(values[-tail:]))
    return v if math.isfinite(v) else DIVERGED


class MomentumGrid:
    """Tail losses of one study as an array (momentum, lr, seed), and the choices made on it."""

    def __init__(self, result: StudyResult):
        runs = result.runs
        self.momenta = sorted({float(r.trial.hparams["momentum"]) for r in runs})
        self.lrs = sorted({float(r.trial.hparams["lr"]) for r in runs})
        self.seeds = sorted({int(r.trial.seed) for r in runs})
        self.loss = np.full((len(self.momenta), len(self.lrs), len(self.seeds)), np.nan)
        for r in runs:
            i = self.momenta.index(float(r.trial.hparams["momentum"]))
            j = self.lrs.index(float(r.trial.hparams["lr"]))
            self.loss[i, j, self.seeds.index(int(r.trial.seed))] = tail_loss(r)
        # A missing run counts as diverged: it cannot be chosen.
        self.loss = np.where(np.isnan(self.loss), DIVERGED, np.maximum(self.loss, 1e-30))
        self.in_range = np.array([m in IN_RANGE for m in self.momenta])

    def best_per_momentum(self, seeds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(loss at the chosen lr, index of the chosen lr) per momentum, on the given seed indices."""
        loss = self.loss if seeds is None else self.loss[:, :, seeds]
        mean = loss.mean(-1)
        j = mean.argmin(1)
        return mean[np.arange(len(self.momenta)), j], j

    def gap(self, seeds: np.ndarray | None = None) -> float:
        """log(best loss in the range) - log(best loss overall); inf if the range has no value."""
        v, _ = self.best_per_momentum(seeds)
        if not self.in_range.any():
            return math.inf
        return float(np.log(v[self.in_range].min()) - np.log(v.min()))

    def best(self, seeds: np.ndarray | None = None) -> float:
        v, _ = self.best_per_momentum(seeds)
        return self.momenta[int(v.argmin())]


def classify(gap_ci: tuple[float, float]) -> str:
    """'equivalent', 'outside' or 'undecided' for one problem: the gap's interval against the margin."""
    if gap_ci[1] < MARGIN:
        return "equivalent"
    if gap_ci[0] > MARGIN:
        return "outside"
    return "undecided"


def decide(classes: list[str], n_seeds: int) -> str:
    """The rule over the per-problem classes."""
    n = len(classes)
    if n < 2 or n_seeds < 3:
        return "inconclusive"
    if sum(c == "equivalent" for c in classes) > n / 2:
        return "supported"
    if sum(c == "outside" for c in classes) > n / 2:
        return "contradicted"
    return "inconclusive"


def analyse(result: StudyResult) -> dict:
    """Per-problem numbers: best momentum, gap and its interval, chosen lrs, losses relative to the best."""
    sweep = MomentumGrid(result)
    index = np.arange(len(sweep.seeds))
    value, j = sweep.best_per_momentum()
    gap = sweep.gap()
    gap_ci = stats.bootstrap_ci(index, lambda idx: sweep.gap(np.asarray(idx, dtype=int)), n_resamples=N_RESAMPLES)
    rng = np.random.default_rng(0)
    draws = [sweep.best(rng.integers(0, len(index), len(index))) for _ in range(N_RESAMPLES)]
    best = sweep.best()
    relative = {}
    for i, m in enumerate(sweep.momenta):
        def ratio(idx, i=i):
            v, _ = sweep.best_per_momentum(np.asarray(idx, dtype=int))
            return float(v[i] / v.min())
        lo, hi = stats.bootstrap_ci(index, ratio, n_resamples=N_RESAMPLES)
        relative[m] = {"ratio": float(value[i] / value.min()), "ci95": [lo, hi], "lr": sweep.lrs[int(j[i])],
                       "loss": float(value[i])}
    zero = relative.get(0.0)
    return {
        "best_momentum": best,
        "gap": gap,
        "gap_ci95": list(gap_ci),
        "class": classify(gap_ci),
        "best_in_range": best in IN_RANGE,
        "share_best_in_range": float(np.mean([d in IN_RANGE for d in draws])),
        "per_momentum": relative,
        "range_vs_no_momentum": None if zero is None else float(
            min(relative[m]["ratio"] for m in IN_RANGE if m in relative) / zero["ratio"]),
        "seeds": len(sweep.seeds),
        "sweep": sweep,
    }


# -- verdict -----------------------------------------------------------------------------------------


def found(results: dict[StudyKey, StudyResult], prefix: str = ID) -> dict[str, StudyResult]:
    """This claim's studies of kind `prefix` in `results` (full mode preferred), keyed by problem."""
    return by_kind(results, prefix)


def verdict(results: dict[str, StudyResult]) -> Verdict:
    mine = {p: r for p, r in found(results).items() if r.runs}
    heavy = {p: r for p, r in found(results, f"{ID}-heavy-ball").items() if r.runs}
    keys = sorted({k for r in (*mine.values(), *heavy.values()) for k in r.run_keys()})
    budget = max((len({float(x.trial.hparams["lr"]) for x in r.runs}) for r in mine.values()), default=0)
    if not mine:
        return CLAIM.verdict("inconclusive", math.nan, (math.nan, math.nan), problems=[], budget=0, seeds=0,
                             effect_name="log loss gap of the best momentum in [0.8, 0.9] to the best momentum",
                             summary="No R2 runs in the results.", run_keys=keys)
    analyses = {p: analyse(r) for p, r in sorted(mine.items())}
    classes = [a["class"] for a in analyses.values()]
    n_seeds = min(a["seeds"] for a in analyses.values())
    outcome = decide(classes, n_seeds)
    sweeps = [a["sweep"] for a in analyses.values()]
    effect = float(np.mean([a["gap"] for a in analyses.values()]))
    if len({len(s.seeds) for s in sweeps}) == 1:
        # Problems are independent, so resampling one set of seed indices for all of them is valid.
        index = np.arange(len(sweeps[0].seeds))
        ci = stats.bootstrap_ci(index, lambda idx: float(np.mean([s.gap(np.asarray(idx, dtype=int)) for s in sweeps])),
                                n_resamples=N_RESAMPLES)
    else:
        ci = (min(a["gap_ci95"][0] for a in analyses.values()), max(a["gap_ci95"][1] for a in analyses.values()))
    heavy_details = {p: {k: v for k, v in analyse(r).items() if k != "sweep"} for p, r in sorted(heavy.items())}
    parts = [
        f"{p}: best {a['best_momentum']:g} ({a['class']}, gap {100 * (math.exp(a['gap']) - 1):.1f}% "
        f"[{100 * (math.exp(a['gap_ci95'][0]) - 1):.1f}, {100 * (math.exp(a['gap_ci95'][1]) - 1):.1f}]%)"
        for p, a in analyses.items()
    ]
    summary = (
        f"With lr tuned per momentum value over {n_seeds} seeds, " + "; ".join(parts)
        + f". Mean log-loss gap of the best value in [0.8, 0.9] to the best value: {effect:.3f}, 95% CI "
        f"[{ci[0]:.3f}, {ci[1]:.3f}]."
    )
    if heavy_details:
        summary += " Heavy ball (check): best " + ", ".join(
            f"{p} {d['best_momentum']:g}" for p, d in heavy_details.items()) + "."
    details = {
        "per_problem": {p: {k: v for k, v in a.items() if k != "sweep"} for p, a in analyses.items()},
        "heavy_ball": heavy_details,
        "momenta": list(MOMENTA),
        "range": list(IN_RANGE),
        "margin": MARGIN,
    }
    return CLAIM.verdict(
        outcome, effect, ci, problems=sorted(mine), budget=budget, seeds=n_seeds,
        summary=summary, details=details, plots=_plots(analyses, heavy_details), run_keys=keys,
    )


def _plots(analyses: dict, heavy: dict) -> list[Plot]:
    loss_series, lr_series = [], []
    for label, table in (("", analyses), (" (heavy ball)", heavy)):
        for p, a in table.items():
            ms = sorted(a["per_momentum"])
            rows = [a["per_momentum"][m] for m in ms]
            loss_series.append(Series(p + label, ms, [r["ratio"] for r in rows],
                                      [r["ci95"][0] for r in rows], [r["ci95"][1] for r in rows]))
            lr_series.append(Series(p + label, ms, [r["lr"] for r in rows]))
    return [
        Plot("curves", "Held-out loss at each momentum (lr tuned per value), relative to the best", "momentum",
             "loss / best loss", loss_series, logy=True,
             caption="Mean over seeds of the loss averaged over the last evaluation points; bands: 95% bootstrap "
                     "interval (seeds resampled, lr re-chosen). The claim's range is 0.8-0.9."),
        Plot("curves", "Learning rate chosen for each momentum value", "momentum", "learning rate", lr_series,
             logy=True, caption="Article EMA form: lr multiplies the average; heavy ball: lr multiplies the sum."),
    ]
