"""Run the claims study: every claim's studies through the store, then the verdicts and the report.

Each study name runs once even when several claims use it; a claim module that defines
``run(store, quick, device, progress)`` (e.g. R8, whose baselines are not engine problems) runs
its own experiments, also through the store. Interrupted work resumes from the store.
"""

from __future__ import annotations

import json
import platform
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

from optarena import __version__
from optarena.claims import load
from optarena.claims.base import Verdict
from optarena.store import Store
from optarena.study import Study, StudyResult, execute

ProgressFn = Callable[[int], None]


def plan(modules, quick: bool) -> tuple[list[Study], int]:
    """The distinct studies the claims need (engine-run ones) and the total number of runs."""
    studies: dict[str, Study] = {}
    total = 0
    for m in modules:
        for s in m.design(quick):
            if s.name not in studies:
                studies[s.name] = s
                total += s.n_runs
    return [s for s in studies.values()], total


def run_claims(
    ids: list[str] | None,
    quick: bool,
    store: Store,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    on_study: Callable[[str], None] | None = None,
) -> tuple[list[Verdict], dict]:
    """Run what the claims need (only what the store lacks) and return (verdicts, meta)."""
    started = time.perf_counter()
    modules = load(ids)
    engine_modules = [m for m in modules if not hasattr(m, "run")]
    studies, _ = plan(engine_modules, quick)
    results: dict[str, StudyResult] = {}
    for s in studies:
        if on_study is not None:
            on_study(s.name)
        results[s.name] = execute(s, store, device, progress)
    for m in modules:
        if hasattr(m, "run"):
            if on_study is not None:
                on_study(m.ID)
            results.update(m.run(store, quick, device=device, progress=progress))
    verdicts = []
    for m in modules:
        try:
            verdicts.append(m.verdict(results))
        except Exception:  # a broken verdict must not hide the other eleven; it is reported as such
            verdicts.append(_failed_verdict(m, traceback.format_exc()))
    n_runs = len({k for r in results.values() for k in r.run_keys()})
    meta = {
        "mode": "quick" if quick else "full",
        "runs": n_runs,
        "wall time": f"{time.perf_counter() - started:.0f} s",
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "optarena": __version__,
    }
    return verdicts, meta


def _failed_verdict(module, error: str) -> Verdict:
    return Verdict(
        id=module.ID,
        claim_zh=module.TEXT_ZH,
        claim_en=module.TEXT_EN,
        verdict="inconclusive",
        effect=float("nan"),
        ci95=(float("nan"), float("nan")),
        problems=[],
        budget=0,
        seeds=0,
        rule=module.RULE,
        summary="The verdict could not be computed: " + error.strip().splitlines()[-1],
        details={"error": error},
    )


def write_outputs(verdicts: list[Verdict], meta: dict, out_dir: str | Path) -> Path:
    from optarena.report import write_report

    out = Path(out_dir)
    path = write_report(verdicts, out, meta=meta)
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return path
