"""Run the claims study: every claim's studies through the one executor (``optarena.study``), then
the verdicts, then the outputs (verdicts.json, meta.json, the report). It lives outside
``optarena.claims`` so that no claim module (this runner included) touches the store or the report.

Each study runs once even when several claims use it (studies are identified by their
`StudyKey`). A claim whose later studies depend on earlier results (R8: reruns of the settings its
tuning chose) defines ``followup(quick, results) -> list[Study]``, run after the first stage.
Interrupted work resumes from the store; with ``stored_only`` nothing trains and missing runs
raise `optarena.study.MissingRuns`.
"""

from __future__ import annotations

import json
import platform
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from optarena import __version__
from optarena.backends import Backend
from optarena.claims import load
from optarena.claims.base import Verdict
from optarena.store import Store
from optarena.study import Study, StudyKey, StudyResult, execute

ProgressFn = Callable[[int], None]


def plan(modules, quick: bool) -> tuple[list[Study], int]:
    """The distinct first-stage studies the claims need and the total number of runs (a claim's
    ``planned_runs(quick)`` where it has later stages)."""
    studies: dict[StudyKey, Study] = {}
    total = 0
    for m in modules:
        own = 0
        for s in m.design(quick):
            if s.key not in studies:
                studies[s.key] = s
                own += s.n_runs
        total += m.planned_runs(quick) if hasattr(m, "planned_runs") else own
    return list(studies.values()), total


def _work(s: Study) -> int:
    """A study's size in run-steps, to start the largest first (its problem's cost per step aside)."""
    from optarena import problems

    spec = problems.PROBLEMS.get(s.problem)
    return s.n_runs * (s.steps or getattr(spec, "default_steps", 1) or 1)


def run_claims(
    ids: list[str] | None,
    quick: bool,
    store: Store,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    on_study: Callable[[str], None] | None = None,
    backend: Backend | None = None,
    stored_only: bool = False,
) -> tuple[list[Verdict], dict]:
    """Run what the claims need (only what the store lacks) and return (verdicts, meta)."""
    started = time.perf_counter()
    modules = load(ids)
    studies, _ = plan(modules, quick)
    results: dict[StudyKey, StudyResult] = {}
    # With several workers, studies run side by side (one driver thread each, with its own
    # connection to the store file), so the workers have batches of other studies to take while one
    # study waits for its last batch or between its stages. Results do not depend on this: every
    # batch is planned from its trials alone.
    parallel = backend.workers() * 2 if backend is not None and store.path is not None and not stored_only else 1

    def run(s: Study, own: Store | None = None) -> StudyResult:
        if on_study is not None:
            on_study(str(s.key))
        return execute(s, store if own is None else own, device, progress, backend=backend, stored_only=stored_only)

    def run_all(batch: list[Study]) -> None:
        batch = [s for s in dict((s.key, s) for s in batch).values() if s.key not in results]
        if parallel <= 1 or len(batch) <= 1:
            for s in batch:
                results[s.key] = run(s)
            return

        batch.sort(key=_work, reverse=True)  # the longest first, so that none is left to run alone at the end

        def in_thread(s: Study) -> StudyResult:
            with Store(store.path) as own:
                return run(s, own)

        with ThreadPoolExecutor(max_workers=min(parallel, len(batch))) as pool:
            for s, result in zip(batch, pool.map(in_thread, batch)):
                results[s.key] = result

    run_all(studies)
    run_all([s for m in modules if hasattr(m, "followup") for s in m.followup(quick, results)])
    verdicts = []
    for m in modules:
        try:
            verdicts.append(m.verdict(results))  # made by m.CLAIM, so it carries the pre-registration data
        except Exception:  # a broken verdict must not hide the other eleven; it is reported as such
            verdicts.append(m.CLAIM.failed(traceback.format_exc()))
    n_runs = len({k for r in results.values() for k in r.run_keys()})
    meta = {
        "mode": "quick" if quick else "full",
        "runs": n_runs,
        "wall time": f"{time.perf_counter() - started:.0f} s",
        "device": str(device),
        "backend": getattr(backend, "name", "local"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "optarena": __version__,
    }
    note = quick_mode_note(modules, quick)
    if note:
        meta["quick mode cannot decide"] = note
    return verdicts, meta


def quick_mode_note(modules, quick: bool) -> str:
    """Which claims quick mode's designs cannot decide, and why ("" in full mode or when none)."""
    undecidable = {m.ID: m.CLAIM.quick_cannot_decide for m in modules if quick and m.CLAIM.quick_cannot_decide}
    return "; ".join(f"{i}: {why}" for i, why in undecidable.items()) + " (run --full)" if undecidable else ""


def write_outputs(verdicts: list[Verdict], meta: dict, out_dir: str | Path) -> Path:
    from optarena.report import write_report

    from optarena.files import write_text_atomic

    out = Path(out_dir)
    path = write_report(verdicts, out, meta=meta)
    write_text_atomic(out / "meta.json", json.dumps(meta, indent=2))
    return path
