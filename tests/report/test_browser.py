"""The browser check: the twelve-verdict report opens offline in headless Chromium."""

from __future__ import annotations

import pytest

import browser_check
from browser_check import check_report


def test_report_reads_in_a_browser(browser, twelve_report, twelve_verdicts):
    screenshot = check_report(browser, twelve_report, expected_rows=len(twelve_verdicts))
    assert screenshot.parent == twelve_report.parent
    assert screenshot.stat().st_size > 0
    # Every figure made it onto the page.
    n_images = browser.execute_script("return document.images.length;")
    assert n_images == sum(len(v.plots) for v in twelve_verdicts)


def test_missing_browser_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.setattr(browser_check, "find_chromium", lambda: (None, None))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium chromium-driver"):
        next(browser_check.browser_fixture())
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        next(browser_check.browser_fixture())
