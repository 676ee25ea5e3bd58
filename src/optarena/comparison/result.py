"""`Comparison`: what a comparison's runs say. Each optimizer's result, the ranking and the
recommendation with its reason, the table, comparison.json and the report (its HTML from the
templates in ``comparison/templates``, see `optarena.comparison.html`)."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from optarena import stats
from optarena.plots import Plot, Series
from optarena.report.format import format_value, jsonable
from optarena.study import StudyResult, objective

CONFIDENCE = 0.95
TARGET_SLACK = 0.05  # steps to target: the best loss any optimizer reached, relaxed by 5%
# Bootstrap resamples for the per-point bands of the curves (the verdict uses stats' default).
BAND_RESAMPLES = 2000


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
        said = (f"held-out loss {fmt(row['val_loss_mean'])} (95% CI [{fmt(row['val_loss_ci95'][0])}, "
                f"{fmt(row['val_loss_ci95'][1])}], {seeds} seed{'s' if seeds > 1 else ''}, "
                f"{hparams_text(row['best_hparams']) if row['setting'] == 'tuned' else 'at its defaults'})")
        others_failed = len(finite) < len(self.optimizers)
        if len(self.optimizers) == 1:
            return best, f"{best} was the only optimizer compared: {said}."
        if len(ranked) == 1:
            return best, f"{best} reached {said}, while every other optimizer diverged or failed on at least one seed of its tuned setting."
        if seeds < 2:
            runner = ranked[1]
            return best, (f"{best} reached the lowest {said}, ahead of {runner} at {fmt(np.mean(self.seed_losses[runner]))}; "
                          "with 1 seed the difference is not tested for separability.")
        leaders = [best] + [o for o in ranked[1:] if not stats.separable(self.seed_losses[o], self.seed_losses[best], CONFIDENCE)]
        if len(leaders) == 1:
            runner = ranked[1]
            d = _paired(self.seed_losses[runner], self.seed_losses[best])
            return best, (f"{best} reached the lowest {said}, separably below the runner-up {runner} at "
                          f"{fmt(np.mean(self.seed_losses[runner]))} ({runner} minus {best}, paired over seeds: {fmt(d['mean'])}, "
                          f"95% t interval [{fmt(d['ci95'][0])}, {fmt(d['ci95'][1])}]).")
        last = leaders[-1]
        d = _paired(self.seed_losses[last], self.seed_losses[best])
        losses = ", ".join(f"{o} {fmt(np.mean(self.seed_losses[o]))}" for o in leaders)
        rest = [o for o in ranked if o not in leaders]
        tail = (f"; {rest[0]} and below are separably worse" if rest else "") + (
            "; the others diverged or failed" if others_failed else "")
        return leaders, (f"{join_names(leaders)} are not separable at 95% over {seeds} seeds (held-out loss {losses}; "
                         f"{last} minus {best}, paired over seeds: {fmt(d['mean'])}, 95% t interval "
                         f"[{fmt(d['ci95'][0])}, {fmt(d['ci95'][1])}]){tail}.")

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
        return jsonable({
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
        """The report's sections: recommendation, table, curves, lr sensitivity, failures
        (their HTML from the templates, `optarena.comparison.html`)."""
        from optarena.comparison import html

        return html.sections(self)

    def execution(self) -> str:
        """How the runs were executed, in words (vmapped, or one at a time and why)."""
        p = self.problem
        mode = ("all runs of a stack vmapped together" if p.get("vmappable")
                else f"one run at a time ({p.get('fallback_reason')})")
        if p.get("vmappable") and p.get("stochastic"):
            mode += "; the model draws random numbers (dropout): runs sharing a seed are vmapped together"
        return mode

    def status_counts(self) -> dict[str, int]:
        """Runs of every optimizer (tuning and reruns): all, diverged, failed."""
        runs = [r for o in self.optimizers for r in self._runs(o)]
        return {"runs": len(runs), "diverged": sum(r.status == "diverged" for r in runs),
                "failed": sum(r.status == "failed" for r in runs)}

    def curves_plot(self, metric: str, label: str, against_time: bool = False) -> Plot:
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

    def lr_plot(self) -> Plot:
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

    def tuned_vs_default_plot(self) -> Plot:
        tuned, default = Series("tuned", [], [], [], []), Series("defaults", [], [], [], [])
        for i, o in enumerate(self.optimizers):
            for s, values in ((tuned, self.seed_losses[o]), (default, [objective(r) for r in self.result.defaults.get(o, [])])):
                mean, low, high = _mean_ci(values)
                s.x.append(float(i)), s.y.append(mean), s.lo.append(low), s.hi.append(high)
        positive = all(v > 0 for s in (tuned, default) for v in s.y if math.isfinite(v))
        return Plot("bars", "held-out loss: tuned setting and defaults", "optimizer", "held-out loss", [tuned, default],
                    logy=positive, categories=list(self.optimizers),
                    caption="Mean over seeds with 95% bootstrap intervals; a missing bar diverged or failed on some seed.")


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


def _mean_ci(values: Sequence[float], n_resamples: int = 10_000) -> tuple[float, float, float]:
    if not values or not all(map(math.isfinite, values)):
        return math.inf, math.inf, math.inf
    return stats.mean_ci(values, CONFIDENCE, n_resamples=n_resamples)


def fmt(x: Any) -> str:
    """A number for the report and the reason, as the claims report writes them
    (`optarena.report.format.format_value`: 4 significant digits, ∞ / nan spelled out, None as —)."""
    return format_value(None if x is None else float(x))


def hparams_text(h: dict[str, float]) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in sorted(h.items())) or "defaults"


def join_names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
