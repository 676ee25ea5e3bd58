"""Faults: kill -9 during a write, a full disk, corrupted stores, concurrent writers.

A kill is simulated by a child process that stops at a chosen point (a patched hook that says
"ready" and sleeps) and is then sent SIGKILL; a full disk by an OSError(ENOSPC) or SQLite's "disk
is full" error raised at the point of writing.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

import optarena.files
import optarena.store
from optarena.console import UsageError
from optarena.files import check_writable_dir, write_text_atomic
from optarena.store import SCHEMA_VERSION, Store, StoreError
from optarena.trial import RunResult, Trial


def results(name: str, n: int, start: int = 0) -> list[RunResult]:
    return [RunResult(Trial(name, "sgd", hparams={"lr": 0.1}, seed=start + i, steps=5), "done",
                      curve={"step": [0, 5], "train_loss": [1.0, 0.5]},
                      final={"train_loss": 0.5 + i, "val_loss": 0.7}) for i in range(n)]


def run_until_ready(script: str, *args: str) -> None:
    """Start `script` in a child, wait for its "ready" line, then kill -9 it."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args],
                             stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.strip() == "ready", f"child did not reach the kill point: {line!r}"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()


# ---- kill -9 ------------------------------------------------------------------------------------


KILLED_STORE_WRITER = """
    import sys, time
    import optarena.store
    from optarena.store import Store
    from optarena.trial import RunResult, Trial

    def stop():
        print("ready", flush=True)
        time.sleep(60)

    optarena.store._before_commit = stop
    with Store(sys.argv[1]) as store:
        store.put_many(RunResult(Trial("killed", "sgd", seed=i, steps=5), "done", final={"train_loss": 9.0})
                       for i in range(50))
"""


def test_kill_during_a_store_write_loses_only_the_batch_in_flight(tmp_path):
    path = tmp_path / "runs.db"
    before = results("kept", 20)
    with Store(path) as store:
        store.put_many(before)
    run_until_ready(KILLED_STORE_WRITER, str(path))
    with Store(path) as store:
        assert len(store) == 20
        assert store.results(problem="killed") == []
        got = store.get_many(r.trial for r in before)
        assert [got[r.trial.run_key].final for r in before] == [r.final for r in before]
        store.put_many(results("after", 3))  # and it still takes writes
        assert len(store) == 23


KILLED_FILE_WRITER = """
    import os, sys, time
    import optarena.files

    def stop(fd):
        print("ready", flush=True)
        time.sleep(60)

    optarena.files.os.fsync = stop
    optarena.files.write_text_atomic(sys.argv[1], "new " * 1_000_000)
"""


def test_kill_during_write_text_atomic_leaves_the_previous_file(tmp_path):
    path = tmp_path / "report.html"
    path.write_text("previous report")
    run_until_ready(KILLED_FILE_WRITER, str(path))
    assert path.read_text() == "previous report"
    orphans = [p for p in tmp_path.iterdir() if p != path]
    assert len(orphans) == 1  # a killed process cannot clean up ...
    write_text_atomic(path, "next report")
    assert path.read_text() == "next report"
    assert list(tmp_path.iterdir()) == [path]  # ... the next write of that file does


# ---- full disk ----------------------------------------------------------------------------------


def test_full_disk_during_write_text_atomic_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "verdicts.json"
    path.write_text("previous")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(optarena.files.os, "fsync", full)
    with pytest.raises(UsageError, match=r"cannot write .*verdicts\.json: No space left on device"):
        write_text_atomic(path, "new content")
    assert path.read_text() == "previous"
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("exception", [KeyboardInterrupt(), RuntimeError("boom"), MemoryError()])
def test_no_temporary_file_survives_any_exception(tmp_path, monkeypatch, exception):
    path = tmp_path / "meta.json"
    path.write_text("previous")

    def fail(fd):
        raise exception

    monkeypatch.setattr(optarena.files.os, "fsync", fail)
    with pytest.raises(type(exception)):
        write_text_atomic(path, "new")
    assert path.read_text() == "previous"
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("fault", [sqlite3.OperationalError("database or disk is full"),
                                   OSError(errno.ENOSPC, "No space left on device")])
def test_full_disk_during_the_store_commit_keeps_the_stored_runs(tmp_path, monkeypatch, fault):
    path = tmp_path / "runs.db"
    with Store(path) as store:
        store.put_many(results("kept", 5))

        def full():
            raise fault

        monkeypatch.setattr(optarena.store, "_before_commit", full)
        with pytest.raises(StoreError, match=r"runs\.db: the disk is full .*none of these 7 runs"):
            store.put_many(results("lost", 7))
        monkeypatch.undo()
        assert len(store) == 5
        store.put_many(results("later", 2))  # the transaction was rolled back: the store goes on
    with Store(path) as store:
        assert len(store) == 7 and store.results(problem="lost") == []


# ---- corrupted stores ---------------------------------------------------------------------------


def filled_store(path) -> list[RunResult]:
    runs = results("q", 300)
    with Store(path) as store:
        store.put_many(runs)
    return runs


def test_garbage_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(StoreError, match=r"garbage\.db: not a readable optarena store.*new --store"):
        Store(path)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "cut.db"
    filled_store(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(StoreError, match=r"cut\.db: not a readable optarena store"):
        Store(path)


def test_another_format_version_is_refused(tmp_path):
    path = tmp_path / "future.db"
    filled_store(path)
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=rf"future\.db: format {SCHEMA_VERSION + 1}, this optarena "
                                         rf"reads format {SCHEMA_VERSION}; use a new --store"):
        Store(path)


def test_old_table_layout_is_refused(tmp_path):
    # The layout of optarena 0.1 (no format version, no code column).
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE runs (run_key TEXT PRIMARY KEY, problem TEXT, optimizer TEXT, "
                     "convention TEXT, seed INTEGER, steps INTEGER, hparams TEXT, status TEXT, "
                     "final TEXT, curve TEXT, wall_time REAL, version TEXT)")
    with pytest.raises(StoreError, match=r"old\.db: an older table layout"):
        Store(path)


def test_a_tampered_row_is_refused_naming_its_key(tmp_path):
    path = tmp_path / "tampered.db"
    runs = filled_store(path)
    victim = runs[7].trial
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runs SET hparams = ? WHERE run_key = ?", (json.dumps({"lr": 0.2}), victim.run_key))
    with Store(path) as store:
        assert store.get(runs[0].trial) is not None  # other rows still read
        for read in (lambda: store.get(victim), lambda: store.get_many([victim]), store.results):
            with pytest.raises(StoreError, match=rf"tampered\.db: the row of run {victim.run_key} does not match"):
                read()


def test_a_row_that_does_not_decode_is_refused_naming_its_key(tmp_path):
    path = tmp_path / "broken.db"
    runs = filled_store(path)
    victim = runs[3].trial
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runs SET curve = '{not json' WHERE run_key = ?", (victim.run_key,))
    with Store(path) as store, pytest.raises(StoreError, match=rf"the row of run {victim.run_key} is broken"):
        store.get(victim)


# ---- concurrency --------------------------------------------------------------------------------


SAME_KEYS_WRITER = """
    import sys
    from optarena.store import Store
    from optarena.trial import RunResult, Trial
    with Store(sys.argv[1]) as store:
        for batch in range(10):
            store.put_many(RunResult(Trial("shared", "sgd", seed=batch * 10 + i, steps=5), "done",
                                     final={"train_loss": 1.0}) for i in range(10))
"""


def test_two_processes_creating_and_writing_one_store(tmp_path):
    # Both open a file that does not exist yet (the format is set up under a write lock) and write
    # the same trials: no lock error, no duplicate row.
    path = tmp_path / "new" / "shared.db"
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(SAME_KEYS_WRITER), str(path)],
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [(p.wait(timeout=60), p.stderr.read()) for p in procs]
    for p in procs:
        p.stderr.close()
    assert outcomes == [(0, ""), (0, "")]
    with Store(path) as store:
        assert len(store) == 100
        assert len({r.trial.run_key for r in store.results(all_versions=True)}) == 100


# ---- output folders -----------------------------------------------------------------------------


def test_check_writable_dir_creates_a_missing_folder(tmp_path):
    target = tmp_path / "a" / "b"
    assert check_writable_dir(target) == target and target.is_dir()
    assert list(target.iterdir()) == []  # the probe file is gone


def test_check_writable_dir_refuses_a_file(tmp_path):
    target = tmp_path / "out"
    target.write_text("x")
    with pytest.raises(UsageError, match=r"--out .*out: is a file"):
        check_writable_dir(target)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_check_writable_dir_refuses_a_read_only_folder_and_parent(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UsageError, match=r"--store-dir .*locked: the folder is not writable"):
            check_writable_dir(locked, option="--store-dir")
        with pytest.raises(UsageError, match=r"--out .*locked/sub: cannot create the folder"):
            check_writable_dir(locked / "sub")
    finally:
        locked.chmod(0o700)


def test_check_writable_dir_refuses_a_folder_it_cannot_write_into(tmp_path, monkeypatch):
    # The same refusal as above, where permissions cannot be tested (running as root).
    def denied(**kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(optarena.files.tempfile, "mkstemp", denied)
    with pytest.raises(UsageError, match=r"--out .*: the folder is not writable \(Permission denied\)"):
        check_writable_dir(tmp_path)
