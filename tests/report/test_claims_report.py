"""The main job end to end: `optarena claims --quick` writes a report with all twelve claims,
which opens in headless Chromium with every figure loaded, and `optarena report` rebuilds it from
the store without training anything.

This is the demo itself (a few minutes on one core), run once per test session.
"""

from __future__ import annotations

import json

import pytest

from browser_check import check_report
from optarena import cli
from optarena.claims import IDS
from optarena.claims.base import VERDICTS
from optarena.store import Store

REQUIRED = {"id", "claim_zh", "claim_en", "verdict", "effect", "ci95", "problems", "budget", "seeds", "rule"}


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("claims")
    assert cli.main(["claims", "--quick", "--out", str(out)]) == 0
    return out


def test_verdicts_json_has_all_twelve_claims(quick_study):
    out = quick_study
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert [v["id"] for v in verdicts] == list(IDS)
    for v in verdicts:
        assert REQUIRED <= set(v), v["id"]
        assert v["verdict"] in VERDICTS
        assert len(v["ci95"]) == 2
        assert v["rule"] and v["claim_zh"] and v["claim_en"]
        # a verdict that could not be computed says so in its details; none may
        assert "error" not in (v.get("details") or {}), (v["id"], v["details"].get("error"))
        assert v["run_keys"], f"{v['id']} is traced to no runs"


def test_report_opens_in_a_browser_with_every_figure(quick_study, browser):
    out = quick_study
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 12  # figures inline, at least one per claim
    screenshot = check_report(browser, out / "report.html", expected_rows=12)
    assert screenshot.read_bytes().startswith(b"\x89PNG")


def test_report_rebuilds_from_the_store_without_training(quick_study, tmp_path):
    out = quick_study
    with Store(out / "optarena.sqlite") as store:
        runs_before = len(store)
    assert cli.main(["report", "--quick", "--store", str(out / "optarena.sqlite"), "--out", str(tmp_path)]) == 0
    with Store(out / "optarena.sqlite") as store:
        assert len(store) == runs_before  # nothing was trained again
    first = json.loads((out / "verdicts.json").read_text())
    second = json.loads((tmp_path / "verdicts.json").read_text())
    assert [v["verdict"] for v in first] == [v["verdict"] for v in second]
    assert [v["effect"] for v in first] == [v["effect"] for v in second]
    assert sorted(first[0]["run_keys"]) == sorted(second[0]["run_keys"])
