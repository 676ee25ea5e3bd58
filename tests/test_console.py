"""optarena.console.progress when stderr is not a terminal (a log file, CI): plain lines, not a
live bar that a log never shows."""

from __future__ import annotations

import io

from rich.console import Console

from optarena import console


def test_progress_into_a_log_writes_lines(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(console, "stderr", Console(file=out, force_terminal=False, width=200))
    clock = iter([0.0, 1.0, 61.0, 62.0, 130.0, 131.0])
    monkeypatch.setattr(console, "_now", lambda: next(clock))
    with console.progress(100, "runs") as advance:  # started at 0
        advance(10)   # 1 s: too soon, nothing
        advance(30)   # 61 s: a line
        advance(10)   # 62 s: too soon
        advance(50)   # 130 s: the total reached: a line
    lines = out.getvalue().splitlines()
    assert lines == ["runs: 40/100 runs (40%), 1.0 min elapsed, ETA 1.5 min",
                     "runs: 100/100 runs (100%), 2.2 min elapsed"]


def test_a_total_that_grows_and_a_new_label(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(console, "stderr", Console(file=out, force_terminal=False, width=200))
    monkeypatch.setattr(console, "LOG_EVERY_S", 0.0)
    with console.progress(2, "runs") as advance:
        advance.describe("R1")
        advance(3)
    assert out.getvalue().splitlines()[-1].startswith("R1: 3/3 runs (100%)")


def test_disabled_progress_writes_nothing(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(console, "stderr", Console(file=out, force_terminal=False))
    with console.progress(5, "runs", enabled=False) as advance:
        advance(5)
    assert out.getvalue() == ""
