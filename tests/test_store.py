"""Tests of optarena.store: round trips, resuming, exports, WAL and concurrent writers."""

from __future__ import annotations

import csv
import json
import math
import sqlite3
import subprocess
import sys
import textwrap

import pytest

import optarena.trial
from optarena.store import Store
from optarena.trial import RunResult, Trial


def make_trials(n: int, problem: str = "quadratic", optimizer: str = "adam") -> list[Trial]:
    return [Trial(problem, optimizer, hparams={"lr": 10.0 ** -(1 + i % 4)}, seed=i, steps=10)
            for i in range(n)]


def fake_result(trial: Trial) -> RunResult:
    loss = float(trial.seed) + trial.hparams.get("lr", 0.0)
    return RunResult(trial, "done", curve={"step": [0, trial.steps], "train_loss": [1.0, loss]},
                     final={"train_loss": loss, "val_loss": loss + 1}, wall_time=0.01)


class CountingRunner:
    """Stands in for the engine; records every batch and can fail on a chosen call."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.batches: list[list[Trial]] = []
        self.fail_on_call = fail_on_call

    def __call__(self, trials: list[Trial]) -> list[RunResult]:
        self.batches.append(list(trials))
        if self.fail_on_call is not None and len(self.batches) == self.fail_on_call:
            raise RuntimeError("simulated crash")
        return [fake_result(t) for t in trials]

    @property
    def n_run(self) -> int:
        return sum(len(b) for b in self.batches)


def assert_same_result(got: RunResult, want: RunResult) -> None:
    assert got.trial == want.trial
    assert got.trial.as_dict() == want.trial.as_dict()
    assert got.status == want.status
    assert got.wall_time == want.wall_time
    assert got.diverged_at == want.diverged_at
    assert got.error == want.error
    # NaN != NaN, so nested traces are compared through their JSON text (NaN written as NaN).
    assert json.dumps(got.trace, sort_keys=True) == json.dumps(want.trace, sort_keys=True)
    assert got.final.keys() == want.final.keys()
    for k in want.final:
        a, b = got.final[k], want.final[k]
        assert (math.isnan(a) and math.isnan(b)) or a == b, k
    assert got.curve.keys() == want.curve.keys()
    for k in want.curve:
        assert len(got.curve[k]) == len(want.curve[k])
        for a, b in zip(got.curve[k], want.curve[k]):
            assert (math.isnan(a) and math.isnan(b)) or a == b, k


def test_round_trip_keeps_every_field_including_nan_and_inf(tmp_path):
    trial = Trial("rosenbrock", "rmsprop", "keras", {"lr": 0.01, "rho": 0.9}, seed=3, steps=50)
    result = RunResult(
        trial, "diverged",
        curve={"step": [0, 10, 20], "train_loss": [1.5, float("inf"), float("nan")],
               "val_loss": [1.6, -float("inf"), float("nan")]},
        final={"train_loss": float("nan"), "val_loss": float("inf"), "accuracy": 0.25},
        wall_time=1.25, diverged_at=17, error=None,
        trace={"params": [[0.0, 1.0], [0.5, float("nan")]]},
    )
    failed = RunResult(Trial("user", "sgd", seed=1), "failed", error="Traceback ...\nValueError: boom")
    path = tmp_path / "sub" / "dir" / "runs.db"
    with Store(path) as store:
        store.put(result)
        store.put(failed)
        assert_same_result(store.get(trial), result)
    with Store(path) as store:  # survives reopening the file
        assert len(store) == 2
        assert_same_result(store.get(trial), result)
        assert_same_result(store.get(failed.trial), failed)
        assert store.get(Trial("rosenbrock", "rmsprop", seed=4)) is None


def test_numpy_and_torch_values_are_stored_as_plain_numbers():
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    trial = Trial("q", "sgd")
    result = RunResult(trial, "done", curve={"train_loss": np.array([1.0, np.nan], dtype=np.float32)},
                       final={"train_loss": np.float32(0.5), "val_loss": torch.tensor(0.25).item()},
                       trace={"params": torch.zeros(2, 2)})
    with Store() as store:
        store.put(result)
        got = store.get(trial)
    assert got.final == {"train_loss": 0.5, "val_loss": 0.25}
    assert got.curve["train_loss"][0] == 1.0 and math.isnan(got.curve["train_loss"][1])
    assert got.trace == {"params": [[0.0, 0.0], [0.0, 0.0]]}


def test_put_replaces_a_row_with_the_same_key():
    trial = Trial("q", "adam", seed=0)
    with Store(":memory:") as store:
        store.put(RunResult(trial, "failed", error="x"))
        store.put(RunResult(trial, "done", final={"train_loss": 1.0}))
        assert len(store) == 1
        assert store.get(trial).status == "done"


def test_missing_after_partial_puts_keeps_order_and_drops_duplicates():
    trials = make_trials(10)
    with Store() as store:
        store.put_many(fake_result(t) for t in trials[::2])
        asked = trials + trials[::-1]
        assert store.missing(asked) == trials[1::2]
        assert store.missing(trials[::2]) == []
        assert Trial("new", "sgd") in store.missing([Trial("new", "sgd")])
        assert trials[0] in store and trials[1] not in store


def test_missing_can_treat_failed_runs_as_missing():
    trials = make_trials(3)
    with Store() as store:
        store.put(RunResult(trials[0], "failed", error="oom"))
        store.put(RunResult(trials[1], "diverged", diverged_at=3))
        assert store.missing(trials) == [trials[2]]
        assert store.missing(trials, rerun_failed=True) == [trials[0], trials[2]]


def test_get_many_handles_more_keys_than_one_query_holds():
    trials = make_trials(1234)
    with Store() as store:
        store.put_many(fake_result(t) for t in trials[:1100])
        found = store.get_many(trials)
        assert set(found) == {t.run_key for t in trials[:1100]}
        assert found[trials[7].run_key].trial == trials[7]
        assert store.missing(trials) == trials[1100:]


def test_results_filters():
    with Store() as store:
        store.put_many(fake_result(t) for t in make_trials(4, "a", "adam") + make_trials(3, "b", "sgd"))
        store.put(RunResult(Trial("b", "adam", seed=9), "diverged"))
        assert len(store.results()) == 8
        assert len(store.results(problem="a")) == 4
        assert len(store.results(problem="b", optimizer="sgd")) == 3
        assert [r.trial.seed for r in store.results(status="diverged")] == [9]
        assert store.results(problem="nope") == []


def test_put_many_is_one_transaction():
    trials = make_trials(3)

    def results():
        yield fake_result(trials[0])
        yield RunResult(trials[1], "done", final={"x": object()})  # cannot be stored

    with Store() as store:
        with pytest.raises(TypeError, match="cannot store"):
            store.put_many(results())
        assert len(store) == 0
        store.put_many([])  # nothing to do
        assert len(store) == 0


def test_wal_mode_is_on(tmp_path):
    path = tmp_path / "runs.db"
    with Store(path) as store:
        store.put(fake_result(Trial("q", "sgd")))
        assert store.journal_mode == "wal"
    other = sqlite3.connect(path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


def test_another_version_is_another_row(monkeypatch):
    trial = Trial("q", "adam", seed=1)
    with Store() as store:
        store.put(fake_result(trial))
        old_key = trial.run_key
        monkeypatch.setattr(optarena.trial, "__version__", "999.0.0")
        trial = Trial("q", "adam", seed=1)  # a fresh trial: keys are cached per instance
        assert trial.run_key != old_key
        assert store.get(trial) is None
        assert store.missing([trial]) == [trial]
        store.put(fake_result(trial))
        assert len(store) == 2
        assert len(store.results()) == 1  # the current version's run
        assert len(store.results(all_versions=True)) == 2
        versions = {row[0] for row in store._conn.execute("SELECT version FROM runs")}
        assert versions == {"999.0.0", optarena.__version__}


def test_export_csv(tmp_path):
    trials = make_trials(5) + [Trial("q", "momentum", hparams={"lr": 0.1, "momentum": 0.9})]
    with Store() as store:
        store.put_many(fake_result(t) for t in trials)
        store.put(RunResult(Trial("q", "sgd", seed=2), "diverged", final={"train_loss": float("nan")},
                            diverged_at=4))
        csv_path = store.export_csv(tmp_path / "out" / "runs.csv")

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7
    for column in ("run_key", "problem", "optimizer", "convention", "seed", "steps", "status",
                   "wall_time", "diverged_at", "hparams", "hp_lr", "hp_momentum",
                   "final_train_loss", "final_val_loss"):
        assert column in rows[0], column
    assert rows[5]["hp_momentum"] == "0.9" and rows[0]["hp_momentum"] == ""
    assert rows[6]["final_train_loss"] == "nan" and rows[6]["diverged_at"] == "4"
    assert not [p for p in csv_path.parent.iterdir() if p.name != "runs.csv"]  # no temp file left


WRITER = textwrap.dedent("""
    import sys
    from optarena.store import Store
    from optarena.trial import RunResult, Trial
    path, name = sys.argv[1], sys.argv[2]
    with Store(path) as store:
        for batch in range(20):
            store.put_many(RunResult(Trial(name, "sgd", seed=batch * 10 + i), "done",
                                     final={"train_loss": 1.0}) for i in range(10))
""")


def test_two_processes_can_write_the_same_file(tmp_path):
    path = tmp_path / "shared.db"
    Store(path).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name]) for name in ("p1", "p2")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    with Store(path) as store:
        assert len(store) == 400
        assert len(store.results(problem="p1")) == len(store.results(problem="p2")) == 200


def test_package_version_matches_pyproject():
    import re
    from pathlib import Path

    import optarena

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', text, re.M).group(1) == optarena.__version__
