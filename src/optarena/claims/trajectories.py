"""The shared trajectory study: every optimizer's 2-D path on Rosenbrock and the narrow valley (the
article's eight and today's contenders).

Not a claim: it makes the figures people expect (DESIGN.md, "2-D trajectories of every optimizer on
Rosenbrock and a narrow valley"). Claim M1 lists these studies in its design and shows the plots.
Each optimizer runs once (seed 0, the problem's jittered start) at a learning rate fixed in
``LRS`` below: hand-picked from the problems' scales for a readable picture, not tuned, and no
verdict depends on them. On a 2-D problem the parameter is one vector, so Muon runs its AdamW
fallback (it orthogonalises matrices only) and SOAP's preconditioner is a 2 x 2 rotation.
"""

from __future__ import annotations

import numpy as np

from optarena import problems, rules
from optarena.claims.base import mode
from optarena.plots import Plot, Series
from optarena.study import Study, StudyKey, StudyResult, Sweep
from optarena.trial import RunResult, Trial

OPTIMIZERS = tuple(rules.names("article")) + tuple(rules.names("contender"))
PROBLEMS = ("rosenbrock", "narrow_valley")
CONVENTION = "article"
SEED = 0

# Rosenbrock's curvature near the start is about 1900, so plain gradient steps need lr < 2/1900 ~ 1e-3;
# the valley's steep curvature is 100 (lr < 0.02). Adaptive methods move about lr per coordinate and
# step, so their lr is set to cross the picture in a few hundred steps. Adadelta keeps its default.
# The contenders' were read off a sweep of 1e-3 ... 0.3 (the one that crosses the picture readably).
LRS: dict[str, dict[str, float]] = {
    "rosenbrock": {"sgd": 1e-3, "momentum": 1e-3, "adagrad": 1.0, "rmsprop": 1e-2, "adam": 3e-2,
                   "adadelta": 1.0, "nadam": 3e-2, "ftrl": 1.0, "lion": 1e-2, "adafactor": 1e-2,
                   "muon": 0.1, "schedulefree_adamw": 0.3, "soap": 1e-2, "lamb": 3e-2},
    "narrow_valley": {"sgd": 1e-2, "momentum": 1e-2, "adagrad": 0.3, "rmsprop": 1e-2, "adam": 3e-2,
                      "adadelta": 1.0, "nadam": 3e-2, "ftrl": 0.3, "lion": 3e-2, "adafactor": 0.1,
                      "muon": 0.1, "schedulefree_adamw": 0.3, "soap": 3e-2, "lamb": 3e-2},
}
STEPS = {"rosenbrock": 1000, "narrow_valley": 200}
# The frame of each picture: (x range, y range); it holds the start and the minimum.
BOX = {"rosenbrock": ((-2.0, 2.0), (-1.0, 3.0)), "narrow_valley": ((-2.5, 1.0), (-2.0, 1.0))}


def name(problem: str, quick: bool) -> StudyKey:
    return StudyKey("trajectories", problem, mode(quick))


def study(problem: str, quick: bool) -> Study:
    """One run per optimizer at its ``LRS`` entry, with the parameters traced every step."""
    trials = tuple(
        Trial(problem, o, CONVENTION, {"lr": LRS[problem][o]}, SEED, STEPS[problem]) for o in OPTIMIZERS
    )
    return Sweep(name(problem, quick), trials, trace=("params",))


def design(quick: bool) -> list[Study]:
    return [study(p, quick) for p in PROBLEMS]


def contour(problem: str, n: int = 81) -> dict:
    """The loss surface on the problem's frame, for ``Plot.contour`` (with the minimum's star)."""
    p = problems.get(problem)
    (x0, x1), (y0, y1) = BOX[problem]
    xs, ys = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
    z = p.surface(xs, ys)
    return {"x": xs.tolist(), "y": ys.tolist(), "z": z.tolist(), "minimum": list(p.minimum)}


def path(run: RunResult, label: str | None = None, max_points: int = 400) -> Series:
    """The run's 2-D path (parameters after every step; a diverged run up to its divergence).

    Long paths are thinned evenly to at most `max_points` points, first and last kept."""
    xy = np.asarray(run.trace.get("params") or [[np.nan, np.nan]], dtype=float)
    if len(xy) > max_points:
        keep = np.unique(np.linspace(0, len(xy) - 1, max_points).round().astype(int))
        xy = xy[keep]
    xy = np.where(np.isfinite(xy), xy, np.nan)
    return Series(label or run.trial.optimizer, xy[:, 0].tolist(), xy[:, 1].tolist())


def plot(result: StudyResult) -> Plot:
    problem = result.study.problem
    series = []
    for r in result.runs:
        lr = r.trial.hparams.get("lr", float("nan"))
        tail = "" if r.status == "done" else f", {r.status}"
        series.append(path(r, f"{r.trial.optimizer} (lr={lr:g}{tail})"))
    steps = result.study.steps or STEPS.get(problem, 0)
    return Plot(
        "trajectories",
        f"Every optimizer on {problem} ({steps} steps)",
        "x",
        "y",
        series,
        contour=contour(problem),
        caption=(
            f"Article conventions, one run each from the same start (seed {SEED}); learning rates "
            "hand-picked for the picture (trajectories.LRS), not tuned. On one 2-D vector Muon runs its AdamW "
            "fallback. Circle: start; square: end; star: minimum."
        ),
    )


def plots(results: dict[str, StudyResult]) -> list[Plot]:
    """The trajectory figures present in `results` (full mode preferred over quick)."""
    out = []
    for problem in PROBLEMS:
        for quick in (False, True):
            key = name(problem, quick)
            if key in results and results[key].runs:
                out.append(plot(results[key]))
                break
    return out


def run_keys(results: dict[str, StudyResult]) -> list[str]:
    keys: set[str] = set()
    for problem in PROBLEMS:
        for quick in (False, True):
            key = name(problem, quick)
            if key in results:
                keys.update(results[key].run_keys())
                break
    return sorted(keys)
