"""The report: one self-contained HTML file (figures inline, CSS inline, nothing fetched) and
``verdicts.json``.

One template serves both uses: ``write_report`` (the claims, with their verdict table) and
``write_html`` (any sections, e.g. from ``optarena compare``); ``write_report`` is ``write_html``
with the verdicts turned into a table and sections.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

import optarena
from optarena.claims.base import Verdict
from optarena.plots import Plot
from optarena.files import write_text_atomic
from optarena.report.figures import render, to_data_uri
from optarena.report.format import MAX_LIST_ITEMS, flatten, format_value, jsonable

DEFAULT_TITLE = "optarena — the article's claims, tested"

def template_environment(package: str) -> jinja2.Environment:
    """The jinja2 settings of every optarena page: `package`'s ``templates/`` folder, autoescaped
    (text from users' code and results is escaped), undefined names an error, tidy whitespace."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


_environment = template_environment("optarena.report")


def write_report(
    verdicts: Sequence[Verdict],
    out_dir: str | Path,
    title: str = DEFAULT_TITLE,
    meta: Mapping[str, Any] | None = None,
    extra_sections: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` and ``out_dir/verdicts.json``; return the HTML's path.

    ``extra_sections``: dicts {"id", "title", "html" (trusted HTML), "plots": [Plot]} appended
    after the claims. With no verdicts the report holds just those sections (no verdict table).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = [jsonable(v.as_json()) for v in verdicts]
    write_text_atomic(out_dir / "verdicts.json", json.dumps(records, ensure_ascii=False, indent=2, allow_nan=False) + "\n")
    return write_html(out_dir / "report.html", title, extra_sections or (), verdicts=verdicts,
                      meta=meta)


def write_html(
    path: str | Path,
    title: str,
    sections: Iterable[Mapping[str, Any]] = (),
    *,
    verdicts: Sequence[Verdict] = (),
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write one self-contained HTML page: the verdict table and one section per verdict (if
    any verdicts), then ``sections`` (dicts {"id", "title", "html", "plots"}); return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, render_html(title, sections, verdicts=verdicts, meta=meta))
    return path


def render_template(name: str, **context: Any) -> Markup:
    """A template of report/templates rendered with `context` (autoescaped), as trusted HTML to put
    in a section's "html": the one way optarena builds HTML, never f-strings."""
    return Markup(_environment.get_template(name).render(**context))


def render_html(
    title: str,
    sections: Iterable[Mapping[str, Any]] = (),
    *,
    verdicts: Sequence[Verdict] = (),
    meta: Mapping[str, Any] | None = None,
) -> str:
    """The page as a string (what ``write_html`` writes)."""
    ids = _UniqueIds()
    claims = [_verdict_view(v, ids.take(v.id)) for v in verdicts]
    extras = [_section_view(s, ids.take(str(s.get("id") or s.get("title") or "section")))
              for s in sections]
    counts = {name: sum(v.verdict == name for v in verdicts)
              for name in ("supported", "contradicted", "inconclusive")}
    return _environment.get_template("report.html").render(
        title=title,
        meta=_meta_items(meta),
        claims=claims,
        counts=counts,
        sections=extras,
    )


# ---- views: plain dicts of display-ready strings for the template ----


def _verdict_view(v: Verdict, anchor: str) -> dict[str, Any]:
    return {
        "anchor": anchor,
        "id": v.id,
        "claim_en": v.claim_en,
        "claim_zh": v.claim_zh,
        "verdict": v.verdict,
        "effect": format_value(v.effect),
        "effect_name": v.effect_name,
        "ci95": f"[{format_value(v.ci95[0])}, {format_value(v.ci95[1])}]",
        "problems": list(v.problems),
        "budget": format_value(v.budget),
        "seeds": format_value(v.seeds),
        "rule": v.rule,
        "margin": None if v.margin is None else format_value(v.margin),
        "revisions": [dict(r) for r in v.revisions],
        "kind": v.kind,
        "summary": v.summary,
        "details": flatten(v.details),
        "figures": [_figure_view(p) for p in v.plots],
        "run_keys": list(v.run_keys),
    }


def _section_view(section: Mapping[str, Any], anchor: str) -> dict[str, Any]:
    unknown = set(section) - {"id", "title", "html", "plots"}
    if unknown:
        raise ValueError(
            "a report section takes the keys id, title, html, plots; "
            f"got unknown {sorted(unknown)}"
        )
    return {
        "anchor": anchor,
        "title": str(section.get("title") or section.get("id") or ""),
        # Trusted by contract: the caller (optarena's own commands) builds this HTML.
        "html": Markup(section.get("html") or ""),
        "figures": [_figure_view(p) for p in section.get("plots") or ()],
    }


def _figure_view(plot: Plot) -> dict[str, str]:
    try:
        src = to_data_uri(render(plot))
    except Exception as error:  # one bad figure must not cost the whole report
        warnings.warn(f"figure {plot.title!r} could not be drawn: {error!r}", stacklevel=3)
        return {"src": "", "alt": plot.title, "caption": plot.caption,
                "error": f"{type(error).__name__}: {error}"}
    return {"src": src, "alt": plot.title, "caption": plot.caption, "error": ""}


def _meta_items(meta: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    items: dict[str, Any] = {
        "optarena": optarena.__version__,
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    torch = sys.modules.get("torch")  # reported when in use; never imported just for this
    if torch is not None:
        items["torch"] = getattr(torch, "__version__", "?")
    items.update(meta or {})
    return [(str(k), format_value(v)) for k, v in items.items()]


class _UniqueIds:
    """HTML ids from claim ids and section names: no whitespace, no repeats."""

    def __init__(self) -> None:
        self.used: set[str] = {"verdict-table", "top"}

    def take(self, name: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "section"
        anchor, n = base, 2
        while anchor in self.used:
            anchor, n = f"{base}-{n}", n + 1
        self.used.add(anchor)
        return anchor
