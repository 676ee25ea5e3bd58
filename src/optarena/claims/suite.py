"""The shared tuned comparison behind claims R1, R4, R5, R6 (and, on the deep problems, R7).

One `TunedStudy` per problem: the seven optimizers the article names, in the article's convention,
each given the same grid of `budget` learning rates over `tuning.LR_RANGE`, every point on seeds
0..2 (selection on the mean held-out loss over them), then the chosen learning rate and the untuned
defaults rerun on seeds 3..S+2.

    quick: noisy_quadratic, breast_cancer_logreg, digits_mlp; 12 lrs, 3 seeds
    full:  quadratic_deepobs, noisy_quadratic, breast_cancer_logreg, digits_mlp, mnist_mlp,
           sparse_zipf; 36 lrs from 1e-5 to 1e2 (DeepOBS), 10 seeds
    both modes train for each problem's default number of steps (short runs would favour the
    optimizers whose defaults take large steps, which would bias R5).

Study keys are shared ("tuned/<problem>/<quick|full>"): the claims runner executes each key once,
so every claim that uses the comparison gets the same study objects from here. The budget sweep
(``budget_studies``, claims R5 and R6) tunes the neural-network problems again at 3x (and 10x) their
default steps; ``deep_sweep_studies`` does the same for R7's deep networks at 3x.

Left out of full mode: rosenbrock (its minimum is 0, so a relative margin and Dolan-Moré ratios
degenerate), and mnist_cnn (its 21 evaluations per run alone would take the 392 runs of a full study
past the full-mode time budget of ~35 min on 2 CPU cores).

The helpers below turn runs into the numbers the claims compare. In the paired comparisons of two
optimizers (R4, R6, R7) a diverged (or failed) rerun is ranked: worse than any finished run, a tie
with another diverged one, and the effect is a median over seeds (`paired_log_ratio`). Where a mean
or a ratio of losses is needed (bars, R5's performance profile), a diverged run scores the held-out
loss it started from, i.e. it counts as a run that did not train: finite, never better than
training (a profile at tau = 1.2 / 1.5 counts it as beyond tau either way). Where a run has no curve
at all (it failed before its first evaluation) it scores the worst starting loss of its study.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from optarena import stats
from optarena.plots import Series
from optarena.study import Setup, StudyKey, StudyResult, TunedStudy, by_kind, objective
from optarena.trial import RunResult

OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adadelta", "nadam")
CONVENTION = "article"

QUICK_PROBLEMS = ("noisy_quadratic", "breast_cancer_logreg", "digits_mlp")
FULL_PROBLEMS = ("quadratic_deepobs", "noisy_quadratic", "breast_cancer_logreg", "digits_mlp", "mnist_mlp", "sparse_zipf")
SELECTION_SEEDS = 3  # tuning points run on seeds 0..2; selection on the mean over them
QUICK_BUDGET, QUICK_SEEDS = 12, 3
FULL_BUDGET, FULL_SEEDS = 36, 10

# Claim R7 (deep networks), without the confounds the claims review found: both optimizers in the
# pytorch convention (eps outside the root for both), Nadam's momentum schedule made flat
# (momentum_decay 1e3: mu_t = beta1 from the first step, instead of ~0.46 over 300 steps) and its
# untuned lr equal to Adam's (1e-3). Full mode runs the problems' own 1,000 steps with momentum and
# RMSprop as references; quick mode runs Adam and Nadam for 300 steps over three learning rates
# around their defaults, too short to decide (the rule says inconclusive below the default steps).
DEEP_PROBLEMS = ("deep_mlp", "residual_mlp")
DEEP_CONVENTION = "pytorch"
DEEP_QUICK_OPTIMIZERS = ("adam", "nadam")
DEEP_FULL_OPTIMIZERS = ("momentum", "rmsprop", "adam", "nadam")
DEEP_QUICK_BUDGET, DEEP_QUICK_SEEDS, DEEP_QUICK_STEPS = 3, 3, 300
DEEP_QUICK_LR_RANGE = (1e-4, 1e-2)
DEEP_FULL_BUDGET, DEEP_FULL_SEEDS, DEEP_FULL_STEPS = 12, 5, 1000
DEEP_FIXED = (("nadam", (("lr", 1e-3), ("momentum_decay", 1e3))),)

MIN_SEEDS = 3
"""Fewer reruns than this per optimizer and a comparison over seeds is called inconclusive: with two
seeds a bootstrap interval is just the two values."""

N_RESAMPLES = 4000


def mode(quick: bool) -> str:
    return "quick" if quick else "full"


def study_name(kind: str, problem: str, quick: bool) -> StudyKey:
    return StudyKey(kind, problem, mode(quick))


@functools.lru_cache(maxsize=4)
def tuned_studies(quick: bool) -> tuple[TunedStudy, ...]:
    """The shared comparison: one study per problem (the same objects on every call)."""
    if quick:
        return tuple(
            TunedStudy(study_name("tuned", p, True), OPTIMIZERS, CONVENTION, QUICK_BUDGET, QUICK_SEEDS,
                       selection_seeds=SELECTION_SEEDS)
            for p in QUICK_PROBLEMS
        )
    return tuple(TunedStudy(study_name("tuned", p, False), OPTIMIZERS, CONVENTION, FULL_BUDGET, FULL_SEEDS,
                            selection_seeds=SELECTION_SEEDS)
                 for p in FULL_PROBLEMS)


@functools.lru_cache(maxsize=4)
def deep_studies(quick: bool) -> tuple[TunedStudy, ...]:
    """Claim R7's studies on the deep networks."""
    if quick:
        return tuple(
            TunedStudy(study_name("deep", p, True), DEEP_QUICK_OPTIMIZERS, DEEP_CONVENTION, DEEP_QUICK_BUDGET,
                       DEEP_QUICK_SEEDS, setup=Setup(DEEP_QUICK_STEPS), lr_range=DEEP_QUICK_LR_RANGE, fixed=DEEP_FIXED,
                       selection_seeds=SELECTION_SEEDS)
            for p in DEEP_PROBLEMS
        )
    return tuple(
        TunedStudy(study_name("deep", p, False), DEEP_FULL_OPTIMIZERS, DEEP_CONVENTION, DEEP_FULL_BUDGET,
                   DEEP_FULL_SEEDS, setup=Setup(DEEP_FULL_STEPS), fixed=DEEP_FIXED, selection_seeds=SELECTION_SEEDS)
        for p in DEEP_PROBLEMS
    )


# The budget sweep (claims R5 and R6): the neural-network problems tuned again at 3x (and, in full
# mode, 10x) their default steps, with the same protocol (fewer points and seeds than the 1x study
# in full mode, to fit its time budget). 1x is the shared comparison itself.
# mode -> problem -> budget multiples (mnist_mlp at 10x would not fit full mode's hour on 2 cores)
BUDGET_SWEEP = {True: {"digits_mlp": (1, 3)}, False: {"digits_mlp": (1, 3, 10), "mnist_mlp": (1, 3)}}
SWEEP_BUDGET = {True: QUICK_BUDGET, False: 12}
SWEEP_SEEDS = {True: QUICK_SEEDS, False: 5}


def budget_key(problem: str, multiple: int, quick: bool) -> StudyKey:
    return StudyKey("tuned" if multiple == 1 else f"tuned-x{multiple}", problem, mode(quick))


@functools.lru_cache(maxsize=4)
def budget_studies(quick: bool) -> tuple[TunedStudy, ...]:
    """The tuned comparison of every neural-network problem at each budget multiple (1x: the
    shared study object)."""
    from optarena import problems

    shared = {s.key: s for s in tuned_studies(quick)}
    out = []
    for p, multiples in BUDGET_SWEEP[quick].items():
        for k in multiples:
            key = budget_key(p, k, quick)
            out.append(shared.get(key) or TunedStudy(key, OPTIMIZERS, CONVENTION, SWEEP_BUDGET[quick], SWEEP_SEEDS[quick],
                                                     selection_seeds=SELECTION_SEEDS,
                                                     setup=Setup(k * problems.PROBLEMS[p].default_steps)))
    return tuple(out)


# Claim R7's budget sweep: the deep networks again at 3x their default steps in full mode, and
# deep_mlp (the plain deep network, the claim's own case) also at 10x, Adam and Nadam only (the
# references momentum and RMSprop run at 1x: beyond it they would take full mode past its hour, as
# would residual_mlp at 10x), on a grid of 7 learning rates half a decade apart from 3e-6 to 3e-3. The
# 1x study had put every optimizer's best lr between 4e-5 and 8e-4 on both problems and found every lr
# from 1.5e-2 up poor or diverged; a longer run's best lr is not larger. Quick mode runs no sweep.
DEEP_SWEEP = {True: {p: (1,) for p in DEEP_PROBLEMS}, False: {"deep_mlp": (1, 3, 10), "residual_mlp": (1, 3)}}
DEEP_SWEEP_OPTIMIZERS = ("adam", "nadam")
DEEP_SWEEP_BUDGET, DEEP_SWEEP_LR_RANGE = 7, (3e-6, 3e-3)


def deep_budget_key(problem: str, multiple: int, quick: bool) -> StudyKey:
    return StudyKey("deep" if multiple == 1 else f"deep-x{multiple}", problem, mode(quick))


@functools.lru_cache(maxsize=4)
def deep_sweep_studies(quick: bool) -> tuple[TunedStudy, ...]:
    """Claim R7's deep-network studies beyond 1x (the 1x ones are `deep_studies`)."""
    return tuple(
        TunedStudy(deep_budget_key(p, k, quick), DEEP_SWEEP_OPTIMIZERS, DEEP_CONVENTION, DEEP_SWEEP_BUDGET,
                   DEEP_FULL_SEEDS, setup=Setup(k * DEEP_FULL_STEPS), lr_range=DEEP_SWEEP_LR_RANGE, fixed=DEEP_FIXED,
                   selection_seeds=SELECTION_SEEDS)
        for p, multiples in DEEP_SWEEP[quick].items() for k in multiples if k != 1
    )


def by_budget(results: Mapping[StudyKey, StudyResult], sweep: Mapping[bool, Mapping[str, Sequence[int]]] = BUDGET_SWEEP,
              key: Callable[[str, int, bool], StudyKey] = budget_key) -> dict[int, dict[str, StudyResult]]:
    """{budget multiple: {problem: result}} of a budget sweep in `results` (full mode preferred):
    by default R5's and R6's (`BUDGET_SWEEP`, `budget_key`), with `DEEP_SWEEP`, `deep_budget_key` R7's."""
    for quick in (False, True):
        found: dict[int, dict[str, StudyResult]] = {}
        for p, multiples in sweep[quick].items():
            for k in multiples:
                r = results.get(key(p, k, quick))
                if r is not None:
                    found.setdefault(k, {})[p] = r
        if found:
            return found
    return {}


def select(results: Mapping[StudyKey, StudyResult], kind: str) -> dict[str, StudyResult]:
    """{problem: result} of the `kind` ("tuned" or "deep") studies in `results`, full mode when present."""
    return by_kind(results, kind)


def divergence_counts(results: Mapping[str, StudyResult]) -> dict[str, dict[str, dict[str, int]]]:
    """{problem: {optimizer: {"tuning" | "tuned" | "defaults": runs that diverged or failed}}}, only
    where there were any: a diverged rerun scores its starting loss (see the module docstring), so
    the reader must see how many there were."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for problem, r in results.items():
        for group in ("tuning", "tuned", "defaults"):
            for o, runs in getattr(r, group).items():
                n = sum(x.status != "done" for x in runs)
                if n:
                    out.setdefault(problem, {}).setdefault(o, {})[group] = n
    return out


def run_keys(results: Mapping[str, StudyResult]) -> list[str]:
    return sorted({k for r in results.values() for k in r.run_keys()})


# -- losses -----------------------------------------------------------------------------------------


def start_loss(run: RunResult, metric: str = "val_loss") -> float:
    values = run.curve.get(metric) or []
    return float(values[0]) if values and math.isfinite(values[0]) else math.inf


def scored_loss(run: RunResult, fallback: float = math.inf, metric: str = "val_loss") -> float:
    """Held-out loss; a diverged or failed run scores its starting loss (else `fallback`)."""
    value = objective(run, metric)
    if math.isfinite(value):
        return value
    start = start_loss(run, metric)
    return start if math.isfinite(start) else fallback


def study_fallback(result: StudyResult) -> float:
    starts = [start_loss(r) for r in result.all_runs()]
    finite = [s for s in starts if math.isfinite(s)]
    return max(finite) if finite else math.inf


def seed_losses(result: StudyResult, optimizer: str, group: str) -> np.ndarray:
    """Scored held-out losses of the reruns ("tuned" or "defaults") of `optimizer`, in seed order."""
    runs = sorted(getattr(result, group).get(optimizer, []), key=lambda r: r.trial.seed)
    fallback = study_fallback(result)
    return np.array([scored_loss(r, fallback) for r in runs], dtype=float)


def log_losses(values: np.ndarray) -> np.ndarray:
    """ln(loss); losses are held-out losses (> 0), floored at 1e-300 so a perfect 0 stays finite."""
    return np.log(np.maximum(values, 1e-300))


def n_seeds(results: Mapping[str, StudyResult], optimizers: Sequence[str] | None, group: str) -> int:
    """The number of seeds every optimizer (default: each study's own) has in every result: the usable
    paired sample size."""
    counts = [len(getattr(r, group).get(o, [])) for r in results.values()
              for o in (r.study.optimizers if optimizers is None else optimizers)]
    return min(counts) if counts else 0


def percent(log_ratio: float) -> float:
    """A log ratio as a percentage: 100 (e^d - 1); +inf stays +inf (-inf: -100)."""
    if math.isnan(log_ratio):
        return math.nan
    return 100.0 * math.expm1(log_ratio) if math.isfinite(log_ratio) else (math.inf if log_ratio > 0 else -100.0)


def rerun_losses(result: StudyResult, optimizer: str, group: str) -> np.ndarray:
    """Held-out losses of the reruns ("tuned" or "defaults") of `optimizer` in seed order, a
    diverged or failed rerun as +inf: for paired comparisons, which rank it (`paired_log_ratios`)."""
    runs = sorted(getattr(result, group).get(optimizer, []), key=lambda r: r.trial.seed)
    return np.array([objective(r) for r in runs], dtype=float)


def paired_log_ratios(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ln(a_s / b_s) per seed (pairs share a seed). A diverged rerun (an infinite loss) is ranked,
    not scored: worse than any finished run, +inf where only a's diverged, -inf where only b's, 0
    (a tie) where both did; so it counts by its order alone, never by a made-up size."""
    la, lb = log_losses(np.asarray(a, dtype=float)), log_losses(np.asarray(b, dtype=float))
    both = np.isinf(la) & np.isinf(lb)
    with np.errstate(invalid="ignore"):
        return np.where(both, 0.0, la - np.where(both, 0.0, lb))


def paired_log_ratio(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> dict:
    """Median over seeds of ln(a_s / b_s) (`paired_log_ratios`: diverged reruns ranked) with its
    percentile bootstrap interval, the pairs resampled; ``diverged_pairs``: pairs where a rerun
    diverged or failed. A median and its percentile interval depend on infinite values only through
    their order: the median is infinite only when at least half of the pairs favour one side by a
    divergence."""
    n = min(len(a), len(b))
    empty = {"median": math.nan, "ci": (math.nan, math.nan), "ci95": (math.nan, math.nan), "n": 0, "diverged_pairs": 0}
    if n == 0:
        return empty
    d = paired_log_ratios(a[:n], b[:n])
    interval = {c: stats.bootstrap_ci(d, np.median, c, N_RESAMPLES, quantiles="inverted_cdf") for c in {confidence, 0.95}}
    diverged = int(np.sum(~np.isfinite(np.asarray(a[:n], dtype=float)) | ~np.isfinite(np.asarray(b[:n], dtype=float))))
    return {"median": float(np.median(d)), "ci": tuple(interval[confidence]), "ci95": tuple(interval[0.95]), "n": n,
            "diverged_pairs": diverged}


def pooled_median_ratio(ratios: np.ndarray, n_seeds: int) -> tuple[float, tuple[float, float]]:
    """Median of paired log ratios over (problem or cell, seed), shape (P, S), with the 95% interval
    of the seeds resampled together (`seed_bootstrap`): the headline effect of R6 and R7."""
    if ratios.size == 0 or n_seeds < 1:
        return math.nan, (math.nan, math.nan)
    interval = seed_bootstrap(lambda idx: np.median(ratios[:, idx], axis=(0, 2)), n_seeds, quantiles="inverted_cdf")
    return float(np.median(ratios)), interval


def seed_bootstrap(statistic: Callable[[np.ndarray], np.ndarray], n: int, quantiles: str = "linear") -> tuple[float, float]:
    """95% percentile interval of a statistic of the n seeds when they are resampled together (the
    same seed draw on every problem and for every optimizer, which keeps the pairing by seed).

    `statistic(idx)` takes seed indices of shape (B, n) and returns one value per row, shape (B,).
    """
    if n < 1:
        return math.nan, math.nan

    def on_rows(samples: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(np.atleast_2d(samples).astype(int))

    return stats.bootstrap_ci(np.arange(n, dtype=float), on_rows, n_resamples=N_RESAMPLES, quantiles=quantiles)


def mean_over_seeds(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """values (..., n) resampled along the seed axis with idx (B, n): means of shape (..., B)."""
    return values[..., idx].mean(axis=-1)


# -- learning-rate sensitivity ----------------------------------------------------------------------


def sensitivity(result: StudyResult, optimizer: str, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(lrs, held-out losses) of the tuning grid, sorted by lr: the mean over the selection seeds
    (inf where any diverged), or one `seed`'s; diverged runs are inf."""
    by_lr: dict[float, list[float]] = {}
    for r in result.tuning.get(optimizer, []):
        if "lr" in r.trial.hparams and (seed is None or r.trial.seed == seed):
            by_lr.setdefault(float(r.trial.hparams["lr"]), []).append(objective(r))
    lrs = sorted(by_lr)
    losses = [float(np.mean(by_lr[lr])) if all(map(math.isfinite, by_lr[lr])) else math.inf for lr in lrs]
    return np.array(lrs, dtype=float), np.array(losses, dtype=float)


def tuning_seeds(result: StudyResult) -> list[int]:
    """The seeds the tuning grid ran on (the selection seeds)."""
    return sorted({r.trial.seed for runs in result.tuning.values() for r in runs})


def lr_width(result: StudyResult, optimizer: str, margin: float, reference: float | None = None,
             seed: int | None = None) -> float:
    """Decades of lr whose held-out loss lies within `margin` (relative) of `reference` (default:
    the optimizer's own best) on the tuning grid (mean over seeds, or one `seed`'s)."""
    lrs, losses = sensitivity(result, optimizer, seed)
    if lrs.size < 2:
        return math.nan
    # Rounded: the width is a sum of grid cells, and float noise (1e-16) must not make widths differ.
    return round(stats.good_lr_width(lrs, losses, margin=margin, relative=True, reference=reference), 9)


def lr_widths(result: StudyResult, margin: float) -> dict[str, float]:
    """Every optimizer's good-lr width against its own best (mean over the tuning seeds)."""
    return {o: lr_width(result, o, margin) for o in result.study.optimizers}


def sensitivity_series(result: StudyResult, optimizers: Sequence[str]) -> list[Series]:
    out = []
    for o in optimizers:
        lrs, losses = sensitivity(result, o)
        if lrs.size:
            out.append(Series(o, lrs.tolist(), [v if math.isfinite(v) else math.nan for v in losses]))
    return out


# -- curves and bars --------------------------------------------------------------------------------


def curve_series(label: str, runs: Sequence[RunResult], metric: str = "val_loss") -> Series | None:
    """Mean curve over seeds with a 95% bootstrap band; a diverged run leaves the curve where it stopped."""
    curves = [(r.curve.get("step") or [], r.curve.get(metric) or []) for r in runs]
    curves = [(s, v) for s, v in curves if s and v]
    if not curves:
        return None
    steps = max((s for s, _ in curves), key=len)
    x, y, lo, hi = [], [], [], []
    for i, step in enumerate(steps):
        values = [v[i] for _, v in curves if i < len(v) and math.isfinite(v[i])]
        if not values:
            continue
        low, high = stats.bootstrap_ci(values, n_resamples=1000)
        x.append(float(step))
        y.append(float(np.mean(values)))
        lo.append(low)
        hi.append(high)
    return Series(label, x, y, lo, hi)


def mean_with_ci(values: np.ndarray) -> tuple[float, float, float]:
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean, low, high = stats.mean_ci(values, n_resamples=N_RESAMPLES)
    return mean, low, high


def bars(label: str, values: Sequence[np.ndarray]) -> Series:
    """One bar per category (mean over seeds with its 95% bootstrap interval)."""
    cells = [mean_with_ci(v) for v in values]
    return Series(label, list(range(len(cells))), [c[0] for c in cells], [c[1] for c in cells], [c[2] for c in cells])


def finite_or_nan(x: float) -> float:
    return float(x) if x is not None and math.isfinite(x) else math.nan
