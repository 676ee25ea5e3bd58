"""Shared set-up for the oracle tests of the update rules.

Keras must see its backend before its first import, so the variable is set here, at the top of the
first module pytest loads in this directory. The session fixture collects the largest difference
each oracle comparison saw and merges them into /tmp/optarena_oracle_diffs.json (one table for
every xdist worker), so a reader can see how close "equal" is, cell by cell.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")
if os.environ["KERAS_BACKEND"] != "torch":  # keras would otherwise need TensorFlow or JAX
    raise RuntimeError(f"set KERAS_BACKEND=torch for tests/rules, not {os.environ['KERAS_BACKEND']!r}")

import fcntl
import json

import pytest

import _oracle

DIFFS_PATH = "/tmp/optarena_oracle_diffs.json"


def _merge_into(path: str, diffs: dict[str, dict[str, float]]) -> None:
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path) as f:
                table = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            table = {}
        # xdist workers of one run share a run id; a table left by an earlier run is replaced
        run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
        merged = table.get("cells", {}) if table.get("run") == run_id else {}
        for cell, d in diffs.items():
            old = merged.get(cell, {"max_abs": 0.0, "max_rel": 0.0, "n": 0})
            merged[cell] = {
                "max_abs": max(old["max_abs"], d["max_abs"]),
                "max_rel": max(old["max_rel"], d["max_rel"]),
                "n": old["n"] + d["n"],
            }
        with open(path, "w") as f:
            json.dump({"run": run_id, "cells": dict(sorted(merged.items()))}, f, indent=1)


@pytest.fixture(scope="session", autouse=True)
def oracle_diff_table():
    """Write the per-cell maxima at the end of the session, merged across xdist workers."""
    yield _oracle.DIFFS
    if _oracle.DIFFS:
        _merge_into(DIFFS_PATH, _oracle.DIFFS)
