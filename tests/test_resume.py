"""A study killed with SIGKILL mid-run and started again finishes, runs no committed trial twice, and
gives the results of an uninterrupted run (tests/resume_study.py is the study)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optarena.store import Store

sys.path.insert(0, str(Path(__file__).parent))
import resume_study  # noqa: E402

SCRIPT = Path(__file__).with_name("resume_study.py")
TRIALS = resume_study.trials()
KEYS = {t.run_key for t in TRIALS}


def start(store: Path, log: Path, delay: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), str(store), str(log), "--delay", str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> None:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err


def stored_keys(store: Path) -> set[str]:
    """Keys of the committed rows, read as another process would (WAL: committed data only)."""
    if not store.exists():
        return set()
    try:
        with sqlite3.connect(store, timeout=5) as conn:
            return {row[0] for row in conn.execute("SELECT run_key FROM runs")}
    except sqlite3.OperationalError:  # the table is not created yet
        return set()


def batches(log: Path) -> list[list[str]]:
    """The batches a process started training, in order (one line each)."""
    if not log.exists():
        return []
    return [line.split() for line in log.read_text().splitlines() if line.strip()]


def kill_with_a_batch_in_flight(process: subprocess.Popen, store: Path, log: Path) -> None:
    """SIGKILL once some batches are committed, none is missing, and one more has started."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the study finished (rc {process.returncode}) before it could be killed: {process.stderr.read()}")
        done = len(stored_keys(store))
        if 0 < done < len(KEYS) and len(batches(log)) * resume_study.BATCH_SIZE > done:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            assert process.returncode == -signal.SIGKILL
            return
        time.sleep(0.01)
    process.kill()
    pytest.fail("the study made no progress in 60 s")


def results_by_key(store: Path) -> dict[str, tuple]:
    with Store(store) as s:
        return {r.trial.run_key: (r.status, json.dumps(r.curve, sort_keys=True), json.dumps(r.final, sort_keys=True))
                for r in s.results()}


def test_a_killed_study_resumes_without_rerunning_committed_batches(tmp_path):
    store, log = tmp_path / "killed.sqlite", tmp_path / "killed.log"
    first = start(store, log, delay=0.5)
    kill_with_a_batch_in_flight(first, store, log)

    committed = stored_keys(store)
    started = batches(log)
    # Every batch is one transaction: all batches but the last are stored whole, and the last
    # (in flight when killed) is stored whole or not at all.
    *earlier, in_flight = started
    assert all(set(b) <= committed for b in earlier)
    assert set(in_flight).isdisjoint(committed) or set(in_flight) <= committed
    assert committed == set().union(*[set(b) for b in started if set(b) <= committed])
    assert 0 < len(committed) < len(KEYS)
    assert set(in_flight).isdisjoint(committed)  # killed while that batch was training

    finish(start(store, log))
    restarted = batches(log)[len(started):]
    rerun = [k for b in restarted for k in b]
    assert set(rerun).isdisjoint(committed)  # a committed batch is never trained again
    assert sorted(rerun) == sorted(KEYS - committed)  # the rest exactly once
    assert set(in_flight) <= set(rerun)

    # Over both processes a trial was trained at most twice, and twice only if its batch was in flight.
    counts: dict[str, int] = {}
    for b in batches(log):
        for k in b:
            counts[k] = counts.get(k, 0) + 1
    assert set(counts) == KEYS
    assert {k for k, n in counts.items() if n == 2} == set(in_flight)
    assert max(counts.values()) == 2

    # Equal to a run never interrupted (committed batches are whole chunks of 8 from the start, so
    # the restart forms the same batches: the results are bitwise equal).
    clean_store = tmp_path / "clean.sqlite"
    finish(start(clean_store, tmp_path / "clean.log"))
    resumed, clean = results_by_key(store), results_by_key(clean_store)
    assert set(resumed) == set(clean) == KEYS
    assert all(status == "done" for status, _, _ in clean.values())
    assert resumed == clean
