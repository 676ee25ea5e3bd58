"""Fixtures for the report tests: synthetic verdicts and a headless browser."""

from __future__ import annotations

import pytest

from optarena.claims.base import Verdict

from browser_check import browser_fixture
from report_samples import make_verdicts


@pytest.fixture(scope="session")
def browser():
    """A selenium driver for headless Chromium, one per session; skipped where Chromium is
    absent (a failure when CI is set). Use with ``browser_check.check_report``."""
    yield from browser_fixture()


@pytest.fixture(scope="session")
def twelve_verdicts() -> list[Verdict]:
    return make_verdicts()


@pytest.fixture(scope="session")
def twelve_report(tmp_path_factory, twelve_verdicts):
    """report.html (and verdicts.json) of the twelve synthetic verdicts, written once."""
    from optarena.report import write_report

    out = tmp_path_factory.mktemp("report")
    meta = {"mode": "quick", "runs": 240, "wall time": "12.3 s"}
    return write_report(twelve_verdicts, out, meta=meta)
