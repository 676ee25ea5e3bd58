"""Synthetic verdicts and plots for the report tests (no runs needed)."""

from __future__ import annotations

import math

from optarena.claims.base import Verdict
from optarena.plots import Plot, Series

LRS = [10.0 ** e for e in range(-5, 1)]  # 1e-5 ... 1: the learning-rate grid
IDS = ["R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "M1", "M2", "M3", "M4"]
VERDICT_CYCLE = ["supported", "contradicted", "inconclusive"]


def curves_plot(title: str = "loss curves") -> Plot:
    steps = list(range(0, 100, 5))
    series = []
    for k, name in enumerate(["sgd", "adam", "rmsprop"]):
        y = [math.exp(-(k + 1) * s / 50) + 0.05 for s in steps]
        series.append(Series(name, steps, y, lo=[v * 0.9 for v in y], hi=[v * 1.1 for v in y]))
    series[0].y[3] = math.nan  # a diverged evaluation point
    return Plot("curves", title, "step", "training loss", series, logy=True,
                caption="Mean over seeds; bands: 95% bootstrap interval.")


def sensitivity_plot() -> Plot:
    series = [Series(name, LRS, [abs(math.log10(lr) + 2 + k) + 0.1 for lr in LRS])
              for k, name in enumerate(["sgd", "adagrad"])]
    series[1].y[-1] = math.inf  # diverged at the largest learning rate
    return Plot("curves", "learning-rate sensitivity", "learning rate", "final loss", series,
                logx=True, caption="Final held-out loss at each learning rate.")


def profile_plot() -> Plot:
    taus = [1, 1.5, 2, 4, 8, 16]
    series = [Series(name, taus, [min(1.0, (k + 1) * 0.15 * i) for i in range(len(taus))])
              for k, name in enumerate(["sgd", "momentum", "adam", "nadam"])]
    return Plot("profile", "performance profile at defaults", "tau", "rho(tau)", series,
                logx=True)


def bars_plot() -> Plot:
    categories = ["zipf-logreg", "ctr-like", "digits"]
    series = [Series(name, [0, 1, 2], [0.3 + k * 0.1, 0.5, 0.2 + k * 0.05],
                     lo=[0.25 + k * 0.1, 0.45, 0.15], hi=[0.35 + k * 0.1, 0.55, 0.3])
              for k, name in enumerate(["adagrad", "sgd", "adam"])]
    return Plot("bars", "held-out loss by problem", "problem", "log loss", series,
                categories=categories)


def rosenbrock_contour() -> dict:
    xs = [-2 + 4 * i / 60 for i in range(61)]
    ys = [-1 + 4 * j / 60 for j in range(61)]
    z = [[(1 - x) ** 2 + 100 * (y - x * x) ** 2 for x in xs] for y in ys]  # 0 ... ~2.5e3
    return {"x": xs, "y": ys, "z": z, "minimum": [1.0, 1.0]}


def trajectories_plot() -> Plot:
    paths = []
    for k, name in enumerate(["sgd", "momentum", "adam"]):
        t = [i / 30 for i in range(31)]
        paths.append(Series(name, [-1.5 + 2.5 * s for s in t],
                            [2 - (1 + 0.3 * k) * s + 0.3 * math.sin(8 * s) for s in t]))
    return Plot("trajectories", "paths on Rosenbrock", "x", "y", paths,
                contour=rosenbrock_contour())


PLOT_MAKERS = [curves_plot, sensitivity_plot, profile_plot, bars_plot, trajectories_plot]


def make_verdicts() -> list[Verdict]:
    verdicts = []
    for i, claim_id in enumerate(IDS):
        plots = [PLOT_MAKERS[i % len(PLOT_MAKERS)]()]
        if i % 2 == 0:
            plots.append(PLOT_MAKERS[(i + 2) % len(PLOT_MAKERS)]())
        verdicts.append(Verdict(
            id=claim_id,
            claim_zh=f"论断 {claim_id}：Adam 通常是一个不错的默认选择。",
            claim_en=f"Claim {claim_id}: Adam is a good default for most problems.",
            verdict=VERDICT_CYCLE[i % 3],
            effect=0.1234567 * (i + 1) * (-1) ** i,
            ci95=(0.05 * i - 0.1, 0.05 * i + 0.2),
            problems=["rosenbrock", "digits", "zipf-logreg"][: 1 + i % 3],
            budget=50,
            seeds=5,
            rule="supported if the 95% CI of the paired difference lies above 0; contradicted if "
                 "below 0; inconclusive otherwise.",
            effect_name="paired difference in final loss",
            summary=f"Summary for {claim_id}.",
            details={"best_lr": {"sgd": 0.0123456, "adam": 1e-3}, "ranks": [1, 2, 3.5],
                     "n_problems": 3, "note": "synthetic", "missing": None},
            plots=plots,
            run_keys=[f"{claim_id.lower()}-{k:04d}" for k in range(20 * (i + 1))],
        ))
    return verdicts
