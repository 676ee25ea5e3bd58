"""`optarena compare`: the fair comparison of the optimizers on a user's own model and data.

Every optimizer gets the same tuning budget over its search space (`optarena.tuning`; the learning
rate, log-uniform over `tuning.LR_RANGE`), selected on held-out loss with seed 0; the chosen
setting and the convention's defaults are then rerun over seeds 1..K (`optarena.study`). An
optimizer's result is the better of the two (both are in its budget). The recommendation is the
optimizer with the lowest mean held-out loss over those seeds, or the list of leaders when the
paired Student-t interval of their difference includes 0 (`stats.separable`, 95%: at most 5% false
positives for any number of seeds, where a percentile bootstrap over 2-3 seeds gave 23-48%). An
optimizer whose result diverged or failed on any seed ranks below every one that did not. Each row
also gives steps to target (the first evaluated step reaching the best loss any optimizer reached,
relaxed by 5%; median over seeds) and the measured seconds per step; the reason notes a chosen value
at the edge of the search space and a leader that is as good within the noise and cheaper per step.

"all" means the article's eight (sgd, momentum, adagrad, rmsprop, adam, adadelta, nadam, ftrl;
``--optimizers article``) and today's contenders (lion, adafactor, muon, schedulefree_adamw, soap,
lamb; ``--optimizers contenders``), each where it has the chosen convention.
FTRL-Proximal is a per-coordinate rule that applies to any differentiable model (Keras offers it for
every model); it was made for sparse linear models, and the comparison shows what it does on yours.
Under the pytorch convention, which has no FTRL (torch.optim has none), FTRL is left out.
"adamw" may be named explicitly.

The problem file (``optarena compare FILE.py``) defines ``model() -> nn.Module``,
``data() -> (train, val)``, optionally ``loss(output, target)`` and the constants ``batch_size``
and ``steps``; see `optarena.problems.user` for what each may be.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import hashlib
import html
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from optarena import console, stats, tuning
from optarena.backends import Backend
from optarena.plots import Plot, Series
from optarena.problems.user import UserCodeError, UserProblem, user_traceback
from optarena import rules
from optarena.rules import CONVENTIONS
from optarena.store import Store
from optarena.study import Setup, StudyKey, StudyResult, TunedStudy, execute, objective

OPTIMIZERS = tuple(rules.names())
EIGHT = tuple(rules.names("article"))
CONFIDENCE = 0.95
TARGET_SLACK = 0.05  # steps to target: the best loss any optimizer reached, relaxed by 5%
# Bootstrap resamples for the per-point bands of the curves (the verdict uses stats' default).
BAND_RESAMPLES = 2000


def resolve_optimizers(optimizers: str | Sequence[str] | None, convention: str = "article") -> tuple[str, ...]:
    """The optimizer names to compare: "all" (the article's eight and today's contenders, those
    with this convention), "article" (the eight), "contenders", or names ("adam,sgd" or a list)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; allowed: {', '.join(CONVENTIONS)}")
    groups = {"all": ("article", "contender"), "article": ("article",), "contenders": ("contender",)}
    if optimizers is None or (isinstance(optimizers, str) and optimizers.strip().lower() in groups):
        group = groups["all" if optimizers is None else optimizers.strip().lower()]
        return tuple(o for o in rules.names(group) if rules.has_convention(o, convention))
    if isinstance(optimizers, str):
        optimizers = [o.strip() for o in optimizers.split(",")]
    names = [str(o).strip().lower() for o in optimizers if str(o).strip()]
    valid = f"valid names: {', '.join(OPTIMIZERS)} (or {', '.join(map(repr, groups))})"
    if any(n in groups for n in names):
        raise ValueError(f"{', '.join(repr(n) for n in names if n in groups)} cannot be combined with other optimizer names")
    unknown = [o for o in names if o not in OPTIMIZERS]
    if unknown:
        raise ValueError(f"unknown optimizer{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; {valid}")
    if not names:
        raise ValueError(f"no optimizer named; {valid}")
    for o in names:
        if not rules.has_convention(o, convention):
            raise ValueError(f"{o} has no {convention!r} convention ({rules.entry(o).absent.get(convention, 'not defined')}); "
                             "use another --convention")
    return tuple(dict.fromkeys(names))


def _check_settings(budget: int, seeds: int, steps: int | None, method: str) -> None:
    for label, value, low in (("budget", budget, 1), ("seeds", seeds, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if method not in tuning.METHODS:
        raise ValueError(f"method must be one of {', '.join(tuning.METHODS)}, got {method!r}")


# ---- the comparison ----


def compare(
    model: Callable[[], torch.nn.Module],
    data: Any,
    loss: Callable | None = None,
    optimizers: str | Sequence[str] = "all",
    budget: int = 8,
    seeds: int = 3,
    steps: int | None = None,
    batch_size: int | None = None,
    convention: str = "article",
    method: str = "tpe",
    store: Store | str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
    name: str = "user",
    threads: int | str | None = "auto",
    tune: Sequence[str] = (),
    schedule: str = "constant",
    warmup: float | None = None,
    clip_grad_norm: float | None = None,
    optuna_storage: str | None = None,
) -> "Comparison":
    """Tune every optimizer with the same `budget` on `model` and `data`, rerun the best of each and
    its defaults over `seeds` seeds, and return the `Comparison`.

    `tune`: hyperparameters tuned besides lr within the same budget ("weight_decay", "momentum",
    "betas", ...; each optimizer tunes those it has, see `optarena optimizers`). `schedule`,
    `warmup`, `clip_grad_norm`: the training setup, the same for every optimizer (see
    `optarena.schedules`). `optuna_storage`: an Optuna storage URL for TPE, shared by drivers.

    `model`: a function returning a fresh nn.Module; `data`: (train, val), each (X, y) or a
    Dataset (or a function returning that); `loss(output, target)`: optional, a mean over the batch.
    `store`: a Store, a path (resumes from it) or None (in memory). `threads`: torch's intra-op
    threads during the comparison (restored after); "auto" is 1 for models under
    console.SMALL_MODEL parameters, None leaves torch's setting alone. Bad input raises ValueError
    (UserCodeError, naming the function and the cause, for the user's model, data and loss).
    """
    names = resolve_optimizers(optimizers, convention)
    _check_settings(budget, seeds, steps, method)
    device = console.check_device(str(device))
    setup = make_setup(steps, schedule, warmup, clip_grad_norm)
    tune = check_tune(tune, names)
    problem = UserProblem(model, data, loss=loss, batch_size=batch_size, steps=steps, name=name, device=device)
    return run_comparison(problem, names, budget, seeds, steps, convention, method, store, device, progress, threads,
                          tune=tune, setup=setup, optuna_storage=optuna_storage)


def make_setup(steps: int | None, schedule: str = "constant", warmup: float | None = None,
               clip_grad_norm: float | None = None) -> Setup:
    """The training setup (Setup checks it: ValueError naming the option); the warmup defaults to
    schedules.DEFAULT_WARMUP with a schedule."""
    from optarena import schedules

    warmup = (schedules.DEFAULT_WARMUP if schedule != "constant" else 0.0) if warmup is None else warmup
    return Setup(steps, schedule, warmup, clip_grad_norm)


def check_tune(tune: str | Sequence[str], optimizers: Sequence[str]) -> tuple[str, ...]:
    """The hyperparameters to tune besides lr ("weight_decay,momentum" or a list); ValueError for a
    name no compared optimizer has."""
    names = [t.strip() for t in (tune.split(",") if isinstance(tune, str) else tune) if t and t.strip()]
    names = ["beta1" if n == "betas" else n for n in names] + (["beta2"] if "betas" in names else [])
    known = {k for o in optimizers for k in tuning.tunable(o)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"--tune: {', '.join(unknown)} is not a hyperparameter of {', '.join(optimizers)}; "
                         f"tunable: {', '.join(sorted(known - {'lr'}))}")
    return tuple(dict.fromkeys(n for n in names if n != "lr"))


def run_comparison(
    problem: UserProblem,
    optimizers: Sequence[str],
    budget: int = 8,
    seeds: int = 3,
    steps: int | None = None,
    convention: str = "article",
    method: str = "tpe",
    store: Store | str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
    threads: int | str | None = "auto",
    backend: Backend | None = None,
    factory: Callable[[], UserProblem] | None = None,
    tune: Sequence[str] = (),
    setup: Setup | None = None,
    optuna_storage: str | None = None,
) -> "Comparison":
    """`compare` on a ready UserProblem. `backend`: where the batches run (default: this process);
    a backend in other processes needs `factory`, a picklable function that builds the same
    problem there (``optarena compare`` passes one that reloads the problem file)."""
    setup = setup or Setup(steps)
    if setup.steps is None:
        setup = dataclasses.replace(setup, steps=steps)
    study = TunedStudy(StudyKey("compare", problem.name), tuple(optimizers), convention, budget, seeds, method,
                       tune=tuple(tune), setup=setup, optuna_storage=optuna_storage)
    if backend is not None and backend.name != "local" and factory is None:
        raise ValueError(f"the {backend.name} backend needs factory= (how a worker builds the problem)")
    own_store = not isinstance(store, Store)
    store_obj = store if isinstance(store, Store) else Store(store)
    try:
        with console.threads(threads, problem.n_parameters), \
                console.progress(study.n_runs, f"compare {problem.name}", progress) as advance:
            result = execute(study, store_obj, device=device, progress=advance, problem=problem, backend=backend,
                             factory=factory or (lambda: problem))
    finally:
        if own_store:
            store_obj.close()
    return Comparison(result, _problem_info(problem))


def problem_from_file(path: str, steps: int | None = None, device: str = "cpu") -> UserProblem:
    """The UserProblem of a problem file (what a worker process of another backend builds)."""
    spec = load_problem_file(path)
    return UserProblem(spec.model, spec.data, loss=spec.loss, batch_size=spec.batch_size,
                       steps=steps or spec.steps, name=spec.name, device=device)


def _problem_info(problem: UserProblem) -> dict[str, Any]:
    return {
        "name": problem.name,
        "n_train": problem.n_train,
        "n_val": problem.n_val,
        "batch_size": problem.batch_size,
        "steps": problem.default_steps,
        "loss": problem.loss_name,
        "loss_bound": problem.loss_bound,
        "vmappable": problem.vmappable,
        "fallback_reason": problem.fallback_reason,
        "stochastic": problem.stochastic,
        "parameters": problem.n_parameters,
    }


@dataclass
class Comparison:
    """The outcome of `compare`: `best`, `table()`, `report(dir)`, `as_json()`."""

    result: StudyResult
    problem: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        study = self.result.study
        self.optimizers: tuple[str, ...] = study.optimizers
        self.steps = study.steps or self.problem.get("steps")
        # Each optimizer's result is the better of its tuned setting and its defaults (both ran in
        # its budget, on the same seeds): held-out loss per rerun seed, inf where a run diverged or failed.
        self.setting = {o: self._better_setting(o) for o in self.optimizers}
        self.chosen_runs = {o: getattr(self.result, self.setting[o]).get(o, []) for o in self.optimizers}
        self.seed_losses = {o: [objective(r) for r in self.chosen_runs[o]] for o in self.optimizers}
        self.target = self._target()
        self._rows = [self._row(o) for o in self.optimizers]
        self.recommendation, self.reason = self._recommend()
        self.reason += self._notes()

    def _notes(self) -> str:
        """What the reader must know beside the ranking: a chosen value at the edge of the search,
        a cheaper optimizer that is as good within the noise."""
        rec = self.recommendation
        if rec is None:
            return ""
        leaders = [rec] if isinstance(rec, str) else list(rec)
        rows = {r["optimizer"]: r for r in self._rows}
        notes = []
        for o in leaders:
            if rows[o]["at_edge"]:
                notes.append(f"{o}'s chosen {', '.join(rows[o]['at_edge'])} is at the edge of the values tried: "
                             "the best may lie outside the search space (widen it)")
        best = leaders[0]
        cost = {o: rows[o]["seconds_per_step"] for o in leaders}
        cheaper = [o for o in leaders[1:] if math.isfinite(cost[o]) and math.isfinite(cost[best]) and cost[o] < 0.8 * cost[best]]
        if cheaper:
            o = min(cheaper, key=cost.get)
            notes.append(f"{o} is as good within the noise and {cost[best] / cost[o]:.1f}x cheaper per step")
        return "".join(f" Note: {n}." for n in notes)

    def _better_setting(self, o: str) -> str:
        """"tuned" or "defaults": the one with the lower mean held-out loss over the rerun seeds."""
        tuned = [objective(r) for r in self.result.tuned.get(o, [])]
        defaults = [objective(r) for r in self.result.defaults.get(o, [])]
        mean = lambda v: float(np.mean(v)) if v and all(map(math.isfinite, v)) else math.inf  # noqa: E731
        return "defaults" if defaults and mean(defaults) < mean(tuned) else "tuned"

    def _target(self) -> float:
        """The target held-out loss for steps-to-target: the best final loss any optimizer's chosen
        setting reached (mean over seeds), relaxed by TARGET_SLACK."""
        means = [float(np.mean(v)) for v in self.seed_losses.values() if v and all(map(math.isfinite, v))]
        if not means:
            return math.nan
        best = min(means)
        return best * (1 + TARGET_SLACK) if best >= 0 else best * (1 - TARGET_SLACK)

    def _steps_to_target(self, o: str) -> float:
        """Median over seeds of the first evaluated step whose held-out loss reaches the target (inf if never)."""
        if not math.isfinite(self.target):
            return math.inf
        found = []
        for r in self.chosen_runs[o]:
            steps, losses = r.curve.get("step") or [], r.curve.get("val_loss") or []
            hit = next((s for s, v in zip(steps, losses) if math.isfinite(v) and v <= self.target), math.inf)
            found.append(hit)
        return float(np.median(found)) if found else math.inf

    def _seconds_per_step(self, o: str) -> float:
        """Mean measured wall time per training step of the chosen runs (model and update together,
        measured in the same batch as every other optimizer's runs)."""
        times = [sum(v for k, v in r.step_time.items() if k in ("model", "update")) for r in self.chosen_runs[o]
                 if r.step_time]
        return float(np.mean(times)) if times else math.nan

    def _at_edge(self, o: str) -> list[str]:
        """The tuned hyperparameters whose chosen value is the smallest or largest point tried."""
        best = self.result.best.get(o, {})
        points = [p for p, _ in self.result.points.get(o, [])]
        out = []
        for k, v in best.items():
            tried = sorted({p[k] for p in points if k in p})
            if len(tried) >= 3 and v in (tried[0], tried[-1]):
                out.append(k)
        return out

    # -- numbers --

    def _runs(self, optimizer: str) -> list:
        r = self.result
        return r.tuning.get(optimizer, []) + r.tuned.get(optimizer, []) + r.defaults.get(optimizer, [])

    def _row(self, o: str) -> dict[str, Any]:
        values = self.seed_losses[o]
        mean, low, high = _mean_ci(values)
        defaults = [objective(r) for r in self.result.defaults.get(o, [])]
        runs = self._runs(o)
        row = {
            "optimizer": o,
            "best_hparams": dict(self.result.best.get(o, {})) if self.setting[o] == "tuned" else {},
            "val_loss_mean": mean,
            "val_loss_ci95": [low, high],
            "default_val_loss": float(np.mean(defaults)) if defaults and all(map(math.isfinite, defaults)) else math.inf,
            "setting": self.setting[o],
            "steps_to_target": self._steps_to_target(o),
            "seconds_per_step": self._seconds_per_step(o),
            "at_edge": self._at_edge(o),
            "diverged_fraction": sum(r.status == "diverged" for r in runs) / len(runs) if runs else 0.0,
            "failed": sum(r.status == "failed" for r in runs),
            "runs": len(runs),
        }
        accuracy = [r.final.get("val_accuracy") for r in self.chosen_runs[o] if r.status == "done"]
        if accuracy and all(a is not None for a in accuracy) and len(accuracy) == len(values):
            row["val_accuracy_mean"] = float(np.mean(accuracy))
        return row

    def _recommend(self) -> tuple[str | list[str] | None, str]:
        seeds = self.result.study.seeds
        finite = [o for o in self.optimizers if self.seed_losses[o] and all(map(math.isfinite, self.seed_losses[o]))]
        ranked = sorted(finite, key=lambda o: (float(np.mean(self.seed_losses[o])), self.optimizers.index(o)))
        if not ranked:
            return None, ("every optimizer's tuned setting diverged or failed on at least one seed "
                          "(see diverged_fraction and failed in the table); check the model, the loss and "
                          "the data scale, or give more steps")
        best = ranked[0]
        row = self._rows[self.optimizers.index(best)]
        said = (f"held-out loss {_fmt(row['val_loss_mean'])} (95% CI [{_fmt(row['val_loss_ci95'][0])}, "
                f"{_fmt(row['val_loss_ci95'][1])}], {seeds} seed{'s' if seeds > 1 else ''}, "
                f"{_hparams(row['best_hparams']) if row['setting'] == 'tuned' else 'at its defaults'})")
        others_failed = len(finite) < len(self.optimizers)
        if len(self.optimizers) == 1:
            return best, f"{best} was the only optimizer compared: {said}."
        if len(ranked) == 1:
            return best, f"{best} reached {said}, while every other optimizer diverged or failed on at least one seed of its tuned setting."
        if seeds < 2:
            runner = ranked[1]
            return best, (f"{best} reached the lowest {said}, ahead of {runner} at {_fmt(np.mean(self.seed_losses[runner]))}; "
                          "with 1 seed the difference is not tested for separability.")
        leaders = [best] + [o for o in ranked[1:] if not stats.separable(self.seed_losses[o], self.seed_losses[best], CONFIDENCE)]
        if len(leaders) == 1:
            runner = ranked[1]
            d = _paired(self.seed_losses[runner], self.seed_losses[best])
            return best, (f"{best} reached the lowest {said}, separably below the runner-up {runner} at "
                          f"{_fmt(np.mean(self.seed_losses[runner]))} ({runner} minus {best}, paired over seeds: {_fmt(d['mean'])}, "
                          f"95% t interval [{_fmt(d['ci95'][0])}, {_fmt(d['ci95'][1])}]).")
        last = leaders[-1]
        d = _paired(self.seed_losses[last], self.seed_losses[best])
        losses = ", ".join(f"{o} {_fmt(np.mean(self.seed_losses[o]))}" for o in leaders)
        rest = [o for o in ranked if o not in leaders]
        tail = (f"; {rest[0]} and below are separably worse" if rest else "") + (
            "; the others diverged or failed" if others_failed else "")
        return leaders, (f"{_join(leaders)} are not separable at 95% over {seeds} seeds (held-out loss {losses}; "
                         f"{last} minus {best}, paired over seeds: {_fmt(d['mean'])}, 95% t interval "
                         f"[{_fmt(d['ci95'][0])}, {_fmt(d['ci95'][1])}]){tail}.")

    # -- views --

    @property
    def best(self) -> str | list[str] | None:
        """The recommended optimizer, the list of leaders not separable at 95%, or None when every
        optimizer's tuned setting diverged or failed."""
        return self.recommendation

    def table(self) -> list[dict[str, Any]]:
        """One row per optimizer: optimizer, setting ("tuned" or "defaults", the better one),
        best_hparams (of the tuned setting; {} for defaults), val_loss_mean, val_loss_ci95,
        default_val_loss, steps_to_target, seconds_per_step, at_edge (tuned values at the edge of the
        points tried), diverged_fraction (of all its runs), failed (count), runs (count) and
        val_accuracy_mean where it applies. A non-finite loss (diverged or failed) is inf."""
        return copy.deepcopy(self._rows)

    def failed_runs(self) -> list[dict[str, Any]]:
        out = []
        for o in self.optimizers:
            for r in self._runs(o):
                if r.status == "failed":
                    out.append({"optimizer": o, "hparams": dict(r.trial.hparams), "seed": r.trial.seed,
                                "error": error_line(r.error or ""), "traceback": r.error or ""})
        return out

    def as_json(self) -> dict[str, Any]:
        """What comparison.json holds (non-finite numbers as null)."""
        study = self.result.study
        return _jsonable({
            "recommendation": self.recommendation,
            "reason": self.reason,
            "rows": self._rows,
            "problem": self.problem,
            "settings": {"optimizers": list(study.optimizers), "convention": study.convention, "budget": study.budget,
                         "seeds": study.seeds, "steps": self.steps, "method": study.method,
                         "lr_range": list(study.lr_range), "tune": list(study.tune),
                         "schedule": study.setup.schedule, "warmup": study.setup.warmup,
                         "clip_grad_norm": study.setup.clip_grad_norm},
            "failed_runs": [{k: v for k, v in f.items() if k != "traceback"} for f in self.failed_runs()],
            "run_keys": self.result.run_keys(),
        })

    def report(self, path: str | os.PathLike) -> Path:
        """Write DIR/report.html and DIR/comparison.json (built in a temporary folder beside DIR
        and moved in at the end: nothing partial is left); return the HTML's path."""
        from optarena.report import write_report

        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            write_report([], tmp, title=f"optarena compare — {self.problem.get('name', '')}",
                         meta=self._meta(), extra_sections=self.sections())
            (tmp / "comparison.json").write_text(json.dumps(self.as_json(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
            out.mkdir(parents=True, exist_ok=True)
            for name in ("comparison.json", "report.html"):
                os.replace(tmp / name, out / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out / "report.html"

    def _meta(self) -> dict[str, Any]:
        study = self.result.study
        return {"problem": self.problem.get("name"), "convention": study.convention, "budget": study.budget,
                "seeds": study.seeds, "steps": self.steps, "method": study.method}

    def sections(self) -> list[dict[str, Any]]:
        """The report's sections: recommendation, table, curves, lr sensitivity, failures."""
        sections = [
            {"id": "recommendation", "title": "Recommendation", "html": self._recommendation_html()},
            {"id": "table", "title": "Every optimizer, same budget", "html": self._table_html(),
             "plots": [self._tuned_vs_default_plot()]},
            {"id": "curves", "title": "Held-out loss during training", "html": "",
             "plots": [self._curves_plot("val_loss", "held-out loss"), self._curves_plot("train_loss", "training loss"),
                       self._curves_plot("val_loss", "held-out loss", against_time=True)]},
            {"id": "lr-sensitivity", "title": "Learning-rate sensitivity", "html": "", "plots": [self._lr_plot()]},
        ]
        failed = self.failed_runs()
        if failed:
            sections.append({"id": "failures", "title": f"Failed runs ({len(failed)})", "html": _failures_html(failed)})
        return sections

    def _recommendation_html(self) -> str:
        rec = self.recommendation
        shown = "none" if rec is None else rec if isinstance(rec, str) else " / ".join(rec)
        p = self.problem
        mode = ("all runs of a stack vmapped together" if p.get("vmappable")
                else f"one run at a time ({p.get('fallback_reason')})")
        if p.get("vmappable") and p.get("stochastic"):
            mode += "; the model draws random numbers (dropout): runs sharing a seed are vmapped together"
        n_diverged = sum(r.status == "diverged" for o in self.optimizers for r in self._runs(o))
        n_failed = sum(r.status == "failed" for o in self.optimizers for r in self._runs(o))
        n_runs = sum(len(self._runs(o)) for o in self.optimizers)
        study = self.result.study
        return (
            f"<p class='recommendation'><strong>{html.escape(shown)}</strong></p>"
            f"<p>{html.escape(self.reason)}</p>"
            "<ul>"
            f"<li>Protocol: each optimizer gets {study.budget} tuning runs ({html.escape(study.method)}, learning rate "
            f"log-uniform in [{_fmt(study.lr_range[0])}, {_fmt(study.lr_range[1])}], seed 0, selected on held-out loss), "
            f"then its chosen setting and its {html.escape(study.convention)} defaults are rerun on seeds 1–{study.seeds}. "
            f"{self.steps} steps of batch {p.get('batch_size')}; {p.get('n_train')} training and {p.get('n_val')} held-out rows.</li>"
            "<li>Leaders: the lowest mean held-out loss, and every optimizer whose paired 95% bootstrap interval "
            "of the difference to it includes 0. A chosen setting that diverged or failed on any seed ranks last.</li>"
            f"<li>Runs: {n_runs}; diverged {n_diverged} (non-finite loss or above {_fmt(p.get('loss_bound'))}); failed {n_failed}.</li>"
            f"<li>Execution: {html.escape(mode)}.</li>"
            "</ul>"
        )

    def _table_html(self) -> str:
        rec = self.recommendation
        leaders = set([rec] if isinstance(rec, str) else rec or [])
        head = ("<tr><th>optimizer</th><th>setting</th><th>held-out loss (mean)</th><th>95% CI</th>"
                "<th>default held-out loss</th><th>steps to target</th><th>ms per step</th><th>diverged</th><th>failed</th>"
                + ("<th>accuracy</th>" if any("val_accuracy_mean" in r for r in self._rows) else "") + "</tr>")
        body = []
        for r in sorted(self._rows, key=lambda r: (r["val_loss_mean"], r["optimizer"])):
            name = html.escape(r["optimizer"])
            cells = [f"<strong>{name}</strong>" if r["optimizer"] in leaders else name,
                     html.escape(_hparams(r["best_hparams"]) if r["setting"] == "tuned" else "defaults")
                     + (" (at the edge)" if r["at_edge"] else ""), _fmt(r["val_loss_mean"]),
                     f"[{_fmt(r['val_loss_ci95'][0])}, {_fmt(r['val_loss_ci95'][1])}]", _fmt(r["default_val_loss"]),
                     _fmt(r["steps_to_target"]), _fmt(1e3 * r["seconds_per_step"]),
                     f"{r['diverged_fraction']:.0%}", str(r["failed"])]
            if "<th>accuracy</th>" in head:
                cells.append(_fmt(r.get("val_accuracy_mean")))
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        return ("<table class='compare'>" + head + "".join(body) + "</table>"
                "<p>Held-out loss: final value of the chosen setting, mean over seeds; ∞ where a seed diverged or failed. "
                "Diverged: share of all the optimizer's runs (tuning and reruns).</p>")

    def _curves_plot(self, metric: str, label: str, against_time: bool = False) -> Plot:
        """Mean `metric` of each optimizer's chosen setting over seeds, against steps or (with
        `against_time`) against wall time: steps x the optimizer's measured seconds per step."""
        series = []
        for o in self.optimizers:
            runs = [r for r in self.chosen_runs[o] if r.curve.get(metric)]
            per_step = self._seconds_per_step(o) if against_time else 1.0
            if not runs or not math.isfinite(per_step):
                continue
            steps = [s * per_step for s in max((r.curve["step"] for r in runs), key=len)]
            x, y, lo, hi = [], [], [], []
            for i, s in enumerate(steps):
                values = [r.curve[metric][i] for r in runs if i < len(r.curve[metric]) and math.isfinite(r.curve[metric][i])]
                if not values:
                    continue
                mean, low, high = _mean_ci(values, BAND_RESAMPLES)
                x.append(s), y.append(mean), lo.append(low), hi.append(high)
            series.append(Series(o, x, y, lo, hi))
        positive = all(v > 0 for s in series for v in s.y)
        if against_time:
            return Plot("curves", f"{label} of the chosen setting against time", "seconds (steps x measured seconds per step)",
                        label, series, logy=positive and bool(series),
                        caption="The same curves, each optimizer's steps scaled by its own measured time per step "
                                "(model and update, timed in the same batches): what a wall-clock budget buys.")
        return Plot("curves", f"{label} of the chosen setting", "step", label, series, logy=positive and bool(series),
                    caption="Mean over seeds with a 95% bootstrap band; a run that diverged stops where it diverged.")

    def _lr_plot(self) -> Plot:
        series, dropped, total = [], 0, 0
        for o in self.optimizers:
            points = sorted((r.trial.hparams.get("lr", math.nan), objective(r)) for r in self.result.tuning.get(o, []))
            total += len(points)
            finite = [(lr, v) for lr, v in points if math.isfinite(v)]
            dropped += len(points) - len(finite)
            if finite:
                series.append(Series(o, [p[0] for p in finite], [p[1] for p in finite]))
        positive = all(v > 0 for s in series for v in s.y)
        return Plot("curves", "final held-out loss against learning rate (tuning runs, seed 0)", "learning rate",
                    "held-out loss", series, logx=True, logy=positive and bool(series),
                    caption=f"{dropped} of {total} tuning runs diverged or failed and are not drawn.")

    def _tuned_vs_default_plot(self) -> Plot:
        tuned, default = Series("tuned", [], [], [], []), Series("defaults", [], [], [], [])
        for i, o in enumerate(self.optimizers):
            for s, values in ((tuned, self.seed_losses[o]), (default, [objective(r) for r in self.result.defaults.get(o, [])])):
                mean, low, high = _mean_ci(values)
                s.x.append(float(i)), s.y.append(mean), s.lo.append(low), s.hi.append(high)
        positive = all(v > 0 for s in (tuned, default) for v in s.y if math.isfinite(v))
        return Plot("bars", "held-out loss: tuned setting and defaults", "optimizer", "held-out loss", [tuned, default],
                    logy=positive, categories=list(self.optimizers),
                    caption="Mean over seeds with 95% bootstrap intervals; a missing bar diverged or failed on some seed.")


# ---- the problem file ----


@dataclass
class ProblemFile:
    """What a problem file defines."""

    path: Path
    model: Callable[[], torch.nn.Module]
    data: Callable[[], Any]
    loss: Callable | None = None
    batch_size: int | None = None
    steps: int | None = None

    @property
    def name(self) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.path.stem) or "user"


def load_problem_file(path: str | os.PathLike) -> ProblemFile:
    """Import a problem file (importlib, its folder first on sys.path); UserCodeError on bad input."""
    path = Path(path)
    if not path.is_file():
        raise UserCodeError("no such file" if not path.exists() else "not a file")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    module_name = f"optarena_problem_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserCodeError("cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up here
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException as e:  # SystemExit from the file included; KeyboardInterrupt passes
        sys.modules.pop(module_name, None)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise UserCodeError(f"importing the file raised {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}".rstrip(": ")) from e
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    missing = [f"{n}()" for n in ("model", "data") if not callable(getattr(module, n, None))]
    if missing:
        raise UserCodeError(
            f"defines no {' and no '.join(missing)} function; a problem file must define "
            "model() -> torch.nn.Module and data() -> (train, val)")
    loss = getattr(module, "loss", None)
    if loss is not None and not callable(loss):
        raise UserCodeError(f"loss must be a function loss(output, target) -> Tensor, got {type(loss).__name__}")
    constants = {}
    for constant in ("batch_size", "steps"):
        value = getattr(module, constant, None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserCodeError(f"the constant {constant} must be an integer >= 1, got {value!r}")
        constants[constant] = value
    return ProblemFile(path, module.model, module.data, loss, **constants)


# ---- the command line ----


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `optarena compare FILE.py`."""
    parser.add_argument("file", metavar="FILE.py", help="problem file defining model(), data() and optionally loss(), batch_size, steps")
    parser.add_argument("--optimizers", default="all", help=f"comma-separated names, 'article' (the article's eight), 'contenders' or 'all' (both; default); valid: {', '.join(OPTIMIZERS)}")
    parser.add_argument("--budget", type=int, default=8, help="tuning runs per optimizer (default 8)")
    parser.add_argument("--seeds", type=int, default=3, help="reruns of the chosen setting and the defaults (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default: the file's steps, else 500)")
    parser.add_argument("--convention", choices=CONVENTIONS, default="article", help="the optimizers' formulas and defaults")
    parser.add_argument("--method", choices=tuning.METHODS, default="tpe", help="tuning search (default tpe)")
    parser.add_argument("--tune", default="", help="hyperparameters tuned besides lr in the same budget, e.g. "
                        "weight_decay,momentum or weight_decay,betas (each optimizer tunes those it has)")
    parser.add_argument("--schedule", default="constant", choices=("constant", "warmup-linear", "warmup-cosine"),
                        help="learning-rate schedule for every optimizer (default constant)")
    parser.add_argument("--warmup", type=float, default=None, help="warmup fraction of the steps (default 0.05 with a schedule)")
    parser.add_argument("--clip-grad-norm", type=float, default=None, help="clip each run's gradient norm to this")
    parser.add_argument("--optuna-storage", default=None,
                        help="Optuna storage URL for TPE (e.g. sqlite:///tpe.db) so several drivers share one study")
    parser.add_argument("--store", default=None, help="results database, resumed if present (default OUT/optarena.sqlite)")
    parser.add_argument("--out", default=None, help="output folder (default results/compare-<file name>)")
    console.add_execution_arguments(parser, threads_default="auto")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    """Run `optarena compare`; 0 on success, 2 on bad input (one message on stderr, nothing written)."""
    file = str(args.file)
    try:
        names = resolve_optimizers(args.optimizers, args.convention)
        _check_settings(args.budget, args.seeds, args.steps, args.method)
        threads = _parse_threads(args.threads)
        setup = make_setup(args.steps, args.schedule, args.warmup, args.clip_grad_norm)
        tune = check_tune(args.tune, names)
    except ValueError as e:
        return _fail(str(e))
    backend = console.backend_from(args)
    try:
        spec = load_problem_file(file)
        problem = problem_from_file(file, args.steps, args.device)
    except UserCodeError as e:
        return _fail(f"{file}: {e.message}", e.__cause__)
    out = Path(args.out) if args.out else Path("results") / f"compare-{spec.name}"
    store_path = Path(args.store) if args.store else out / "optarena.sqlite"
    factory = functools.partial(problem_from_file, str(Path(file).resolve()), args.steps, args.device)
    from optarena.files import check_writable_dir

    check_writable_dir(out.parent if not out.exists() else out)  # before any training
    if not store_path.parent.exists() or store_path.parent != out:
        check_writable_dir(store_path.parent, "--store")
    try:
        with Store(store_path) as store:
            steps = args.steps or spec.steps
            comparison = run_comparison(problem, names, args.budget, args.seeds, steps,
                                        args.convention, args.method, store, args.device, args.progress, threads,
                                        backend=backend, factory=factory, tune=tune,
                                        setup=dataclasses.replace(setup, steps=steps),
                                        optuna_storage=args.optuna_storage)
    finally:
        if hasattr(backend, "close"):
            backend.close()
    report = comparison.report(out)
    rec = comparison.recommendation
    print(f"recommendation: {rec if rec is None or isinstance(rec, str) else ', '.join(rec)}")
    print(comparison.reason)
    print(f"report: {report}")
    print(f"data:   {out / 'comparison.json'}")
    print(f"store:  {store_path}")
    failed = comparison.failed_runs()
    runs = sum(row["runs"] for row in comparison.table())
    if runs and len(failed) == runs:
        # Nothing trained: the report says so, and so does the exit code (1), with the first error.
        raise console.RunFailed(f"every one of the {runs} runs failed; the first error: {failed[0]['error']} "
                                f"({failed[0]['optimizer']} {compare_hparams(failed[0]['hparams'])}, seed "
                                f"{failed[0]['seed']}); the report has the traceback")
    return 0


def _paired(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Mean of a - b over seeds and the paired t interval that `stats.separable` decides with (so
    the interval printed is the one the recommendation rests on)."""
    return {"mean": float(np.mean(np.asarray(a) - np.asarray(b))), "ci95": stats.t_interval(a, b, CONFIDENCE)}


def error_line(traceback_text: str) -> str:
    """The line of a traceback that says what went wrong: the last "SomeError: message" line (a
    C++ dispatcher's trailing lines, e.g. "aten::select_backward ... SparseCPU", are not it)."""
    lines = [line.strip() for line in traceback_text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b:?", line):
            return line
    return lines[-1] if lines else ""


def compare_hparams(h: dict[str, float]) -> str:
    return _hparams(h) if h else "defaults"


def _parse_threads(value: str | int | None) -> int | str | None:
    if value is None or value == "auto" or isinstance(value, int):
        return value
    if str(value).isdigit() and int(value) >= 1:
        return int(value)
    raise ValueError(f"--threads must be 'auto' or an integer >= 1, got {value!r}")


def _fail(message: str, cause: BaseException | None = None) -> int:
    print(f"optarena compare: error: {message}", file=sys.stderr)
    trace = user_traceback(cause) if cause is not None else ""
    if trace:
        print("\n" + trace.rstrip(), file=sys.stderr)
    return 2


# ---- formatting ----


def _mean_ci(values: Sequence[float], n_resamples: int = 10_000) -> tuple[float, float, float]:
    if not values or not all(map(math.isfinite, values)):
        return math.inf, math.inf, math.inf
    return stats.mean_ci(values, CONFIDENCE, n_resamples=n_resamples)


def _fmt(x: Any) -> str:
    if x is None:
        return "—"
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.4g}"


def _hparams(h: dict[str, float]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(h.items())) or "defaults"


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _failures_html(failed: list[dict[str, Any]]) -> str:
    items = "".join(
        f"<li>{html.escape(f['optimizer'])} {html.escape(_hparams(f['hparams']))}, seed {f['seed']}: "
        f"<code>{html.escape(f['error'])}</code></li>" for f in failed[:20])
    more = f"<li>… and {len(failed) - 20} more (comparison.json lists them all)</li>" if len(failed) > 20 else ""
    return (f"<p>These runs raised; the comparison went on without them.</p><ul>{items}{more}</ul>"
            f"<details><summary>traceback of the first</summary><pre>{html.escape(failed[0]['traceback'])}</pre></details>")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
