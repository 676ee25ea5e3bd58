"""Backend speed-up: the claims study (quick mode) with ``--backend local`` and ``--backend ray``,
side by side in one run, each from an empty store, and whether both wrote the same verdicts.

Each side is the real command (``python -m optarena.cli claims --quick``) in a fresh temporary
folder, run ``--repeats`` times alternately (local, ray, local, ray, ...) so that slow drifts of
the machine's load fall on both; the minimum and the median wall time of each side are reported.
Ray's time includes starting its local cluster (one worker per core, ``--workers``) and the
workers building the problems, as a user pays them.

"Same verdicts" compares verdicts.json with the measured wall-clock seconds left out (R8 reports
its baselines' training seconds): every verdict, effect, interval and run key must be equal.

The last line is exactly:
    backend speedup: ray/local = <ratio> (local <a> s, ray <b> s, median of <n>; verdicts equal: <yes|no>)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIMINGS = ("train_seconds", "wall time")


def strip_timings(value):
    """A JSON value with every measured-seconds field removed (at any depth)."""
    if isinstance(value, dict):
        return {k: strip_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [strip_timings(v) for v in value]
    return value


def run_claims(backend: str, out: Path, only: str | None, workers: int | None) -> float:
    command = [sys.executable, "-m", "optarena.cli", "claims", "--quick", "--backend", backend, "--out", str(out)]
    if only:
        command += ["--only", only]
    if workers and backend == "ray":
        command += ["--workers", str(workers)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{backend}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side (default 1)")
    parser.add_argument("--only", default=None, help="claim ids (default: all twelve)")
    parser.add_argument("--workers", type=int, default=None, help="ray workers (default: one per core)")
    args = parser.parse_args(argv)
    print(f"claims --quick{' --only ' + args.only if args.only else ''}: local vs ray, {args.repeats} repeat(s), "
          f"{os.cpu_count()} cores")
    times: dict[str, list[float]] = {"local": [], "ray": []}
    verdicts: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for backend in ("local", "ray"):
                out = Path(tmp) / f"{backend}-{i}"
                wall = run_claims(backend, out, args.only, args.workers)
                times[backend].append(wall)
                verdicts.setdefault(backend, strip_timings(json.loads((out / "verdicts.json").read_text())))
                print(f"  {backend:5s} run {i + 1}: {wall:6.1f} s")
    for backend, values in times.items():
        print(f"{backend:5s}: min {min(values):.1f} s, median {statistics.median(values):.1f} s, max {max(values):.1f} s")
    local, ray = statistics.median(times["local"]), statistics.median(times["ray"])
    equal = verdicts["local"] == verdicts["ray"]
    print(f"backend speedup: ray/local = {ray / local:.2f} (local {local:.1f} s, ray {ray:.1f} s, median of "
          f"{args.repeats}; verdicts equal: {'yes' if equal else 'no'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
