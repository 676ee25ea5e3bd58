"""The comparison's report sections, rendered from the templates in ``comparison/templates``
(jinja2, autoescaped: names, settings and error messages from the user's code are escaped). The
page around them is the claims report's (`optarena.report.write_report`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optarena.comparison.result import fmt, hparams_text
from optarena.report.html import template_environment

if TYPE_CHECKING:
    from optarena.comparison.result import Comparison

MAX_FAILURES = 20  # failed runs listed in the report; comparison.json lists them all

_environment = template_environment("optarena.comparison")
_environment.filters["num"] = fmt
_environment.filters["hparams"] = hparams_text


def render(template: str, **context: Any) -> str:
    return _environment.get_template(template).render(**context)


def sections(c: "Comparison") -> list[dict[str, Any]]:
    """Recommendation, table, curves, learning-rate sensitivity and (if any) failed runs."""
    rec = c.recommendation
    leaders = [] if rec is None else [rec] if isinstance(rec, str) else list(rec)
    rows = sorted(c.table(), key=lambda r: (r["val_loss_mean"], r["optimizer"]))
    out = [
        {"id": "recommendation", "title": "Recommendation",
         "html": render("recommendation.html", shown=" / ".join(leaders) if leaders else "none", reason=c.reason,
                        study=c.result.study, steps=c.steps, problem=c.problem, execution=c.execution(),
                        counts=c.status_counts())},
        {"id": "table", "title": "Every optimizer, same budget",
         "html": render("table.html", rows=rows, leaders=set(leaders),
                        accuracy=any("val_accuracy_mean" in r for r in rows)),
         "plots": [c.tuned_vs_default_plot()]},
        {"id": "curves", "title": "Held-out loss during training", "html": "",
         "plots": [c.curves_plot("val_loss", "held-out loss"), c.curves_plot("train_loss", "training loss"),
                   c.curves_plot("val_loss", "held-out loss", against_time=True)]},
        {"id": "lr-sensitivity", "title": "Learning-rate sensitivity", "html": "", "plots": [c.lr_plot()]},
    ]
    failed = c.failed_runs()
    if failed:
        out.append({"id": "failures", "title": f"Failed runs ({len(failed)})",
                    "html": render("failures.html", failed=failed[:MAX_FAILURES], more=len(failed) - MAX_FAILURES,
                                   first=failed[0])})
    return out
