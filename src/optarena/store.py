"""Results on disk: the only module that touches the database.

One SQLite file in WAL mode with one table, `runs`, holding one row per run keyed by
`Trial.run_key` (a hash of the trial, the optarena version and the source of the code that
determines results, so changed code never reuses an old result). The file carries its format in
`PRAGMA user_version` (`SCHEMA_VERSION`); a file of another format, an older table layout or a
file that is not a SQLite database is refused with a `StoreError` when the store is opened, before
any training. Every row read is re-hashed and checked against its key. Every `put_many` is one transaction: a killed process loses at most the batch in
flight, and `optarena.study.run_missing` resumes a study by running only the trials that have no row yet.

Two processes may share a file: WAL lets readers go on while one writer commits, and a writer
waits up to 30 s for another's transaction (`busy_timeout`).

Curves, final metrics, traces and hyperparameters are stored as JSON. Python's `json` writes
non-finite floats as the tokens `NaN`, `Infinity`, `-Infinity` and reads them back as floats, so a
diverged run's `nan` survives the round trip.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from optarena import trial as _trial_module
from optarena.console import UsageError
from optarena.files import write_text_atomic
from optarena.trial import RunResult, Trial

__all__ = ["SCHEMA_VERSION", "Store", "StoreError"]

# The format of the file: bump it whenever _SCHEMA or the meaning of a column changes.
SCHEMA_VERSION = 2


class StoreError(UsageError):
    """A store file that cannot be used as it is (wrong format, not a database, a tampered row,
    a full disk): the message names the file and what to do; the CLI prints it and exits 2."""

BUSY_TIMEOUT_S = 30.0
# Keys per `IN (...)` query; well under SQLite's limit on bound variables (999 before 3.32).
_CHUNK = 500

_COLUMNS = (
    "run_key", "problem", "optimizer", "convention", "seed", "steps", "schedule", "warmup", "clip_grad_norm",
    "hparams", "status", "final", "curve", "trace", "step_time", "wall_time", "diverged_at", "error",
    "created_at", "version", "code",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_key     TEXT PRIMARY KEY,
    problem     TEXT NOT NULL,
    optimizer   TEXT NOT NULL,
    convention  TEXT NOT NULL,
    seed        INTEGER NOT NULL,
    steps       INTEGER NOT NULL,
    schedule    TEXT NOT NULL,
    warmup      REAL NOT NULL,
    clip_grad_norm REAL,
    hparams     TEXT NOT NULL,
    status      TEXT NOT NULL,
    final       TEXT NOT NULL,
    curve       TEXT NOT NULL,
    trace       TEXT NOT NULL,
    step_time   TEXT NOT NULL,
    wall_time   REAL,
    diverged_at INTEGER,
    error       TEXT,
    created_at  TEXT NOT NULL,
    version     TEXT NOT NULL,
    code        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_problem_optimizer ON runs (problem, optimizer);
"""


def _current_version() -> str:
    # Read at call time: the version that `Trial.run_key` hashes is the one in optarena.trial.
    return str(_trial_module.__version__)


def _to_builtin(obj: Any) -> Any:
    """`json` fallback for NumPy / torch values: arrays and tensors become lists, scalars numbers."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot store a value of type {type(obj).__name__} as JSON: {obj!r}")


def _dumps(obj: Any) -> str:
    # allow_nan=True (the default) writes NaN / Infinity, which json.loads reads back as floats.
    return json.dumps(obj, default=_to_builtin, allow_nan=True, separators=(",", ":"))


def _current_code() -> str:
    return _trial_module.code_fingerprint()


def _row_of(result: RunResult, version: str, created_at: str) -> tuple:
    t = result.trial
    return (
        t.run_key, t.problem, t.optimizer, t.convention, int(t.seed), int(t.steps), t.schedule,
        float(t.warmup), t.clip_grad_norm, _dumps(dict(t.hparams)), result.status, _dumps(result.final),
        _dumps(result.curve), _dumps(result.trace), _dumps(result.step_time), float(result.wall_time),
        None if result.diverged_at is None else int(result.diverged_at), result.error,
        created_at, version, _current_code(),
    )


def _result_of(row: sqlite3.Row, where: str) -> RunResult:
    """The row as a RunResult; StoreError if it does not decode or (for a row of this version
    and code, whose key can be recomputed) if its trial does not hash to its run_key."""
    key = row["run_key"]
    try:
        result = _decode(row)
    except (ValueError, TypeError, KeyError) as e:
        raise StoreError(f"store {where}: the row of run {key} is broken ({e}); "
                         f"delete that row or use a new --store path") from None
    current = row["version"] == _current_version() and row["code"] == _current_code()
    if current and result.trial.run_key != key:
        raise StoreError(f"store {where}: the row of run {key} does not match its key (it was "
                         f"changed after it was written); delete that row or use a new --store path")
    return result


def _decode(row: sqlite3.Row) -> RunResult:
    trial = Trial(
        problem=row["problem"], optimizer=row["optimizer"], convention=row["convention"],
        hparams=json.loads(row["hparams"]), seed=row["seed"], steps=row["steps"],
        schedule=row["schedule"], warmup=row["warmup"], clip_grad_norm=row["clip_grad_norm"],
    )
    return RunResult(
        trial=trial, status=row["status"], curve=json.loads(row["curve"]),
        final=json.loads(row["final"]), wall_time=row["wall_time"] or 0.0,
        diverged_at=row["diverged_at"], error=row["error"], trace=json.loads(row["trace"]),
        step_time=json.loads(row["step_time"]),
    )


def _before_commit() -> None:
    """Called inside put_many's transaction just before COMMIT; a seam for the fault tests
    (a kill or a full disk at that point), a no-op otherwise."""


def _chunks(seq: Sequence, size: int = _CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def _unique(trials: Iterable[Trial]) -> list[Trial]:
    seen: set[str] = set()
    out = []
    for t in trials:
        if t.run_key not in seen:
            seen.add(t.run_key)
            out.append(t)
    return out


class Store:
    """A SQLite file of run results, one row per `Trial.run_key`.

    `Store()` or `Store(":memory:")` keeps everything in memory (tests, throwaway studies);
    `Store("results/arena.db")` creates the parent folders and the file if needed.
    Use as a context manager, or call `close()`.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        if path is None or str(path) == ":memory:":
            self.path: Path | None = None
            target = ":memory:"
        else:
            self.path = Path(path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            target = str(self.path)
        # isolation_level=None: no implicit transactions; put_many opens its own.
        self._open(target)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self._where_name!r})"

    @property
    def _where_name(self) -> str:
        return str(self.path) if self.path else ":memory:"

    def _open(self, target: str) -> None:
        """Connect, set up WAL, and create or check the format (StoreError if it is not ours)."""
        fix = "use a new --store path (or move this file away)"
        try:
            self._conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            # quick_check reads every page: a truncated or overwritten file fails here, not later.
            check = self._conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(check)
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if version == 0 and not tables:
                    # Statement by statement: executescript would COMMIT the open transaction first.
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    version = SCHEMA_VERSION
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as e:
            self._close_quietly()
            raise StoreError(f"store {self._where_name}: not a readable optarena store ({e}); {fix}") from None
        if version != SCHEMA_VERSION:
            self._close_quietly()
            found = "an older table layout (no format version)" if version == 0 else f"format {version}"
            raise StoreError(f"store {self._where_name}: {found}, this optarena reads format "
                             f"{SCHEMA_VERSION}; {fix}")
        columns = tuple(r[1] for r in self._conn.execute("PRAGMA table_info(runs)"))
        if columns != _COLUMNS:
            self._close_quietly()
            raise StoreError(f"store {self._where_name}: the runs table has columns {list(columns)}, "
                             f"expected {list(_COLUMNS)}; {fix}")

    def _close_quietly(self) -> None:
        try:
            self._conn.close()
        except sqlite3.Error:
            pass

    @property
    def journal_mode(self) -> str:
        """"wal" for a file store ("memory" for an in-memory one, where WAL does not apply)."""
        return self._conn.execute("PRAGMA journal_mode").fetchone()[0]

    # -- writing --------------------------------------------------------------------------------

    def put_many(self, results: Iterable[RunResult]) -> None:
        """Write results in ONE transaction (all or none); a result replaces any row with its key."""
        version = _current_version()
        created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        rows = [_row_of(r, version, created_at) for r in results]
        if not rows:
            return
        placeholders = ",".join("?" * len(_COLUMNS))
        # BEGIN IMMEDIATE takes the write lock up front, so a second process waits (busy_timeout)
        # instead of failing halfway through a deferred transaction.
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    f"INSERT OR REPLACE INTO runs ({','.join(_COLUMNS)}) VALUES ({placeholders})", rows
                )
                _before_commit()
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        except (sqlite3.OperationalError, OSError) as e:
            full = getattr(e, "errno", None) == errno.ENOSPC or "full" in str(e)
            if not full:
                raise
            raise StoreError(f"store {self._where_name}: the disk is full ({e}); none of these "
                             f"{len(rows)} runs was written, the stored ones are intact; free space "
                             f"and rerun to resume") from None

    def put(self, result: RunResult) -> None:
        self.put_many([result])

    # -- reading --------------------------------------------------------------------------------

    def get(self, trial: Trial) -> RunResult | None:
        row = self._conn.execute("SELECT * FROM runs WHERE run_key = ?", (trial.run_key,)).fetchone()
        return None if row is None else _result_of(row, self._where_name)

    def get_many(self, trials: Iterable[Trial]) -> dict[str, RunResult]:
        """Stored results of `trials`, by run_key; trials with no row are left out."""
        keys = list(dict.fromkeys(t.run_key for t in trials))
        found: dict[str, RunResult] = {}
        for chunk in _chunks(keys):
            query = f"SELECT * FROM runs WHERE run_key IN ({','.join('?' * len(chunk))})"
            for row in self._conn.execute(query, chunk):
                found[row["run_key"]] = _result_of(row, self._where_name)
        return found

    def _present_keys(self, keys: Sequence[str], rerun_failed: bool) -> set[str]:
        present: set[str] = set()
        status_filter = " AND status != 'failed'" if rerun_failed else ""
        for chunk in _chunks(keys):
            query = (f"SELECT run_key FROM runs WHERE run_key IN ({','.join('?' * len(chunk))})"
                     + status_filter)
            present.update(row[0] for row in self._conn.execute(query, chunk))
        return present

    def missing(self, trials: Iterable[Trial], rerun_failed: bool = False) -> list[Trial]:
        """Trials with no stored result, in the order given, duplicates removed.

        With `rerun_failed=True`, trials whose stored run failed (an exception, not a divergence)
        count as missing too.
        """
        unique = _unique(trials)
        present = self._present_keys([t.run_key for t in unique], rerun_failed)
        return [t for t in unique if t.run_key not in present]

    def results(
        self,
        problem: str | None = None,
        optimizer: str | None = None,
        status: str | None = None,
        all_versions: bool = False,
    ) -> list[RunResult]:
        """Stored results matching the filters, in the order they were written.

        Only runs of the current optarena version and code by default: a run of other code has a
        different key, and its trial would not find it again. `all_versions=True` returns all
        (their keys cannot be rechecked: the code that made them is gone).
        """
        where, args = self._where(problem, optimizer, status, all_versions)
        rows = self._conn.execute(f"SELECT * FROM runs{where} ORDER BY rowid", args)
        return [_result_of(row, self._where_name) for row in rows]

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def __contains__(self, trial: object) -> bool:
        return isinstance(trial, Trial) and bool(
            self._conn.execute("SELECT 1 FROM runs WHERE run_key = ?", (trial.run_key,)).fetchone()
        )

    @staticmethod
    def _where(problem, optimizer, status, all_versions) -> tuple[str, list]:
        clauses, args = [], []
        for column, value in (("problem", problem), ("optimizer", optimizer), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if not all_versions:
            clauses.extend(("version = ?", "code = ?"))
            args.extend((_current_version(), _current_code()))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args

    # -- export ---------------------------------------------------------------------------------

    def records(
        self,
        problem: str | None = None,
        optimizer: str | None = None,
        status: str | None = None,
        all_versions: bool = False,
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """One flat dict per run, and the column names in order.

        Columns: run_key, problem, optimizer, convention, seed, steps, status, wall_time,
        diverged_at, error, version, created_at, hparams (JSON string), then `hp_<name>` for every
        hyperparameter and `final_<name>` for every final metric seen in any run (empty where a
        run lacks it). Curves and traces are left out; they are in the database.
        """
        where, args = self._where(problem, optimizer, status, all_versions)
        rows = self._conn.execute(f"SELECT * FROM runs{where} ORDER BY rowid", args).fetchall()
        base = ["run_key", "problem", "optimizer", "convention", "seed", "steps", "status",
                "wall_time", "diverged_at", "error", "version", "created_at", "hparams"]
        hp_names: dict[str, None] = {}
        final_names: dict[str, None] = {}
        records = []
        for row in rows:
            hparams = json.loads(row["hparams"])
            final = json.loads(row["final"])
            record = {name: row[name] for name in base}
            for name, value in sorted(hparams.items()):
                hp_names.setdefault(f"hp_{name}")
                record[f"hp_{name}"] = value
            for name, value in final.items():
                final_names.setdefault(f"final_{name}")
                record[f"final_{name}"] = None if value is None else float(value)
            records.append(record)
        columns = base + sorted(hp_names) + sorted(final_names)
        return columns, [{c: r.get(c) for c in columns} for r in records]

    def export_csv(self, path: str | os.PathLike, **filters: Any) -> Path:
        """Write one row per run (see `records` for the columns; NaN is written as `nan`)."""
        columns, records = self.records(**filters)
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)
        return write_text_atomic(path, buffer.getvalue())
