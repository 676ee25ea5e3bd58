"""report.html is one self-contained page; verdicts.json holds every verdict."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from optarena.claims.base import VERDICTS
from optarena.plots import Plot, Series
from optarena.report import write_html, write_report
from optarena.report.html import flatten, format_value

from report_samples import IDS, bars_plot, curves_plot, make_verdicts

REQUIRED_KEYS = {"id", "claim_zh", "claim_en", "verdict", "effect", "ci95", "problems", "budget",
                 "seeds", "rule"}


class Page(HTMLParser):
    """The parts of the page the tests look at: ids, verdict rows, images, links, resources."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.rows: list[dict] = []
        self.images: list[dict] = []
        self.links: list[str] = []
        self.resources: list[tuple[str, str]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "tr" and "verdict-row" in (a.get("class") or "").split():
            self.rows.append(a)
        if tag == "img":
            self.images.append(a)
        if tag == "a":
            self.links.append(a.get("href", ""))
        if tag in ("script", "link", "iframe", "object", "embed"):
            self.resources.append((tag, str(a)))
        for name in ("src", "href"):
            if name in a and tag not in ("img", "a"):
                self.resources.append((tag, a[name]))


@pytest.fixture(scope="module")
def page(twelve_report) -> Page:
    return Page(twelve_report.read_text(encoding="utf-8"))


def test_report_and_json_are_written(twelve_report):
    assert twelve_report.name == "report.html" and twelve_report.is_file()
    assert (twelve_report.parent / "verdicts.json").is_file()


def test_verdict_table_has_one_row_per_verdict(page, twelve_report):
    assert "verdict-table" in page.ids
    assert [row["data-claim"] for row in page.rows] == IDS
    # every row links to its claim's section, and every section exists
    for claim_id in IDS:
        assert f"#{claim_id}" in page.links
        assert claim_id in page.ids
    assert len(page.ids) == len(set(page.ids)), "duplicate ids"


def test_badges_carry_the_verdict(twelve_report, twelve_verdicts):
    text = twelve_report.read_text(encoding="utf-8")
    for v in twelve_verdicts:
        assert f'<span class="badge {v.verdict}">{v.verdict}</span>' in text


def test_page_is_self_contained(page, twelve_report, twelve_verdicts):
    text = twelve_report.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert page.resources == [], f"external resources: {page.resources}"
    n_plots = sum(len(v.plots) for v in twelve_verdicts)
    assert len(page.images) == n_plots
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        assert img["alt"]
    assert all(href.startswith("#") for href in page.links)


def test_sections_show_rule_details_figures_and_runs(twelve_report, twelve_verdicts):
    text = twelve_report.read_text(encoding="utf-8")
    v = twelve_verdicts[4]
    section = text[text.index(f'<section id="{v.id}"'):]
    section = section[: section.index("</section>")]
    assert v.claim_zh in section and v.claim_en in section
    assert "lies above 0" in section  # the rule in words
    assert "best_lr.sgd" in section and "0.01235" in section  # flattened, 4 significant digits
    assert "1, 2, 3.5" in section  # a list of numbers joined
    assert f"traced to {len(v.run_keys)} runs" in section
    assert "<details>" in section and v.run_keys[-1] in section
    assert 'alt="paths on Rosenbrock"' in section and 'alt="learning-rate sensitivity"' in section
    assert "<figcaption>Final held-out loss at each learning rate.</figcaption>" in section


def test_meta_is_in_the_header(twelve_report):
    text = twelve_report.read_text(encoding="utf-8")
    header = text[text.index("<header>"): text.index("</header>")]
    for shown in ("mode", "quick", "runs", "240", "optarena", "generated"):
        assert shown in header


def test_verdicts_json(twelve_report):
    records = json.loads((twelve_report.parent / "verdicts.json").read_text(encoding="utf-8"))
    assert isinstance(records, list) and len(records) == 12
    for record in records:
        assert REQUIRED_KEYS <= set(record)
        assert record["verdict"] in VERDICTS
        assert isinstance(record["ci95"], list) and len(record["ci95"]) == 2
        assert "plots" not in record
    assert [r["id"] for r in records] == IDS
    assert records[0]["claim_zh"].startswith("论断")  # written as UTF-8, not \u escapes


def test_verdicts_json_is_strict_json(tmp_path):
    v = make_verdicts()[0]
    v.effect = math.nan
    v.ci95 = (-math.inf, np.float64(0.5))
    v.details = {"array": np.arange(3), "scalar": np.float32(1.5), "tuple": (1, 2),
                 "nan": math.nan}
    write_report([v], tmp_path)
    text = (tmp_path / "verdicts.json").read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    record = json.loads(text)[0]
    assert record["effect"] is None and record["ci95"] == [None, 0.5]
    assert record["details"] == {"array": [0, 1, 2], "scalar": 1.5, "tuple": [1, 2], "nan": None}


def test_user_text_is_escaped(tmp_path):
    evil = "<script>alert('x')</script>"
    v = make_verdicts()[0]
    v.claim_en = v.claim_zh = v.rule = v.summary = v.effect_name = evil
    v.problems = [evil]
    v.details = {evil: evil}
    v.run_keys = [evil]
    v.plots = [Plot("curves", evil, "x", "y", [Series(evil, [0, 1], [1, 0])], caption=evil)]
    path = write_report([v], tmp_path, title=evil, meta={evil: evil})
    text = path.read_text(encoding="utf-8")
    assert "<script" not in text
    assert "&lt;script&gt;" in text


def test_zero_verdicts_with_extra_sections(tmp_path):
    sections = [
        {"id": "compare adam vs nadam", "title": "Adam against Nadam",
         "html": "<p class='trusted'>Paired difference: <b>0.012</b></p>",
         "plots": [curves_plot(), bars_plot()]},
        {"id": "notes", "title": "Notes <on> things", "html": ""},
    ]
    path = write_report([], tmp_path, title="compare", extra_sections=sections)
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert "verdict-table" not in page.ids and page.rows == []
    assert "compare-adam-vs-nadam" in page.ids and "notes" in page.ids
    assert "<p class='trusted'>Paired difference: <b>0.012</b></p>" in text  # trusted HTML as is
    assert "Notes &lt;on&gt; things" in text  # titles escaped
    assert len(page.images) == 2
    assert json.loads((tmp_path / "verdicts.json").read_text(encoding="utf-8")) == []


def test_verdicts_and_extra_sections_together(tmp_path):
    verdicts = make_verdicts()[:2]
    path = write_report(verdicts, tmp_path, extra_sections=[{"id": "R1", "title": "more on R1"}])
    page = Page(path.read_text(encoding="utf-8"))
    assert len(page.rows) == 2
    assert "R1" in page.ids and "R1-2" in page.ids  # section ids never collide


def test_write_html_uses_the_same_template(tmp_path):
    path = write_html(tmp_path / "sub" / "compare.html", "just sections",
                      [{"id": "a", "title": "A", "html": "<p>hi</p>", "plots": []}])
    text = path.read_text(encoding="utf-8")
    assert "<title>just sections</title>" in text and "<p>hi</p>" in text
    assert "http://" not in text and "https://" not in text


def test_unknown_section_key_is_explained(tmp_path):
    with pytest.raises(ValueError, match="unknown.*'plot'"):
        write_html(tmp_path / "x.html", "t", [{"id": "a", "plot": []}])


def test_a_figure_that_cannot_be_drawn_does_not_lose_the_report(tmp_path):
    v = make_verdicts()[0]
    v.plots = [Plot("trajectories", "broken surface", "x", "y", [],
                    contour={"x": [0, 1, 2], "y": [0, 1], "z": [[1]]}), curves_plot()]
    with pytest.warns(UserWarning, match="broken surface"):
        path = write_report([v], tmp_path)
    text = path.read_text(encoding="utf-8")
    assert "could not be drawn" in text
    assert len(re.findall(r'<img src="data:image/png;base64,', text)) == 1


def test_format_value_and_flatten():
    assert format_value(0.000123456) == "0.0001235"
    assert format_value(123456.789) == "1.235e+05"
    assert format_value(3.0) == "3"
    assert format_value(np.float32(0.5)) == "0.5"
    assert format_value([1, 2.5, math.nan]) == "1, 2.5, nan"
    assert format_value(None) == "—"
    assert flatten({"a": {"b": {"c": 1}}, "d": [{"e": 2.0}], "f": True}) == [
        ("a.b.c", "1"), ("d[0].e", "2"), ("f", "true")]
