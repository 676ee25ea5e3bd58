"""Open a report in headless Chromium and check what a reader would see.

Shared by the report tests (the ``browser`` fixture in conftest.py) and by later tests of the real
claims report: ``check_report(driver, path, expected_rows)``.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from pathlib import Path

import pytest

INSTALL_HINT = "install them with: apt-get install chromium chromium-driver"
# Without these Chromium waits on the network (closed in CI and sandboxes) and hangs.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)
PAGE_LOAD_TIMEOUT_S = 120


def find_chromium() -> tuple[str | None, str | None]:
    """(browser binary, chromedriver) paths, or None where absent."""
    binary = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser"))
                   if p), None)
    driver = shutil.which("chromedriver")
    if binary is None and os.path.exists("/usr/bin/chromium"):
        binary = "/usr/bin/chromium"
    if driver is None and os.path.exists("/usr/bin/chromedriver"):
        driver = "/usr/bin/chromedriver"
    return binary, driver


def skip_or_fail(reason: str) -> None:
    """In CI (which installs the browser) a missing browser is a failure; elsewhere a skip."""
    message = f"{reason}; {INSTALL_HINT}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so the browser check must run)")
    pytest.skip(message)


def start_browser(user_data_dir: str):
    """A selenium driver for headless Chromium with a fresh profile in ``user_data_dir``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, chromedriver = find_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
    driver.set_script_timeout(PAGE_LOAD_TIMEOUT_S)
    return driver


def browser_fixture():
    """Generator behind the ``browser`` fixture: yields a driver, quits it afterwards."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        skip_or_fail("selenium is not installed (pip install -e '.[test]')")
    binary, chromedriver = find_chromium()
    if binary is None or chromedriver is None:
        missing = [name for name, path in (("chromium", binary), ("chromedriver", chromedriver))
                   if path is None]
        skip_or_fail(f"{' and '.join(missing)} not found")
    with tempfile.TemporaryDirectory(prefix="optarena-chromium-") as profile:
        driver = start_browser(profile)
        try:
            yield driver
        finally:
            driver.quit()


def check_report(driver, path: str | Path, expected_rows: int, full_page: bool = False) -> Path:
    """Open the report, check its verdict table and figures; return the path of a screenshot
    saved beside it (the whole page when ``full_page``, else the first screen)."""
    path = Path(path).resolve()
    driver.get(path.as_uri())
    driver.execute_async_script(
        "const done = arguments[0];"
        "if (document.readyState === 'complete') done();"
        "else window.addEventListener('load', () => done());"
    )
    rows = driver.find_elements("css selector", "#verdict-table tr.verdict-row")
    assert len(rows) == expected_rows, f"{len(rows)} verdict rows, expected {expected_rows}"

    images = driver.execute_script(
        "return Array.from(document.images).map(i => "
        "[i.alt, i.complete, i.naturalWidth, i.src.slice(0, 22)]);"
    )
    for alt, complete, width, src in images:
        assert complete and width > 0, f"figure {alt!r} did not load"
        assert src == "data:image/png;base64,", f"figure {alt!r} is not inline: {src!r}"

    # Self-contained: nothing was fetched, and every in-page link has a target.
    fetched = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith('data:'));"
    )
    assert fetched == [], f"the report fetched {fetched}"
    dangling = driver.execute_script(
        "return Array.from(document.querySelectorAll('a[href^=\"#\"]'))"
        ".map(a => a.getAttribute('href').slice(1))"
        ".filter(id => !document.getElementById(id));"
    )
    assert dangling == [], f"links to missing anchors: {sorted(set(dangling))}"

    screenshot = path.with_name(path.stem + "-screenshot.png")
    if full_page:
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        screenshot.write_bytes(base64.b64decode(shot["data"]))
    else:
        assert driver.save_screenshot(str(screenshot)), "screenshot failed"
    data = screenshot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000, "screenshot is not a PNG"
    return screenshot
