"""DESIGN's data flow for the claims: no module under claims/ imports the store, the report or
another claim module (shared code lives in suite.py, measures.py, trajectories.py and base.py)."""

from __future__ import annotations

import ast
from pathlib import Path

from optarena import claims

CLAIMS_DIR = Path(claims.__file__).parent
CLAIM_MODULES = {f"optarena.claims.{m}" for m in claims.MODULES.values()}


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_no_claim_module_imports_the_store_the_report_or_another_claim():
    for path in sorted(CLAIMS_DIR.glob("*.py")):
        names = imported(path)
        forbidden = {n for n in names if n.startswith(("optarena.store", "optarena.report", "optarena.verdicts"))}
        assert not forbidden, f"{path.name} imports {sorted(forbidden)}"
        others = (names & CLAIM_MODULES) - {f"optarena.claims.{path.stem}"}
        assert not others, f"{path.name} imports the claim module(s) {sorted(others)}"
