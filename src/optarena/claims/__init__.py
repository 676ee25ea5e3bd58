"""The article's claims, one module each (see ``base.py`` for what a claim module defines).

``load(["R1", "M2"])`` returns the claim modules in the article's order.
"""

from __future__ import annotations

import importlib
from types import ModuleType

MODULES = {
    "R1": "r1_sgd_tuning",
    "R2": "r2_momentum_range",
    "R3": "r3_adagrad_sparse",
    "R4": "r4_rmsprop_vs_adam",
    "R5": "r5_adam_default",
    "R6": "r6_adadelta",
    "R7": "r7_nadam_deep",
    "R8": "r8_ftrl_large_linear",
    "M1": "m1_momentum_direction",
    "M2": "m2_adagrad_decay",
    "M3": "m3_rmsprop_smooth",
    "M4": "m4_bias_correction",
}
IDS = tuple(MODULES)


def parse_ids(text: str | None) -> list[str]:
    """"R1,m2" -> ["R1", "M2"]; None or "" -> all. Unknown ids -> ValueError listing the valid ones."""
    if not text:
        return list(IDS)
    ids = [part.strip().upper() for part in text.split(",") if part.strip()]
    unknown = [i for i in ids if i not in MODULES]
    if unknown:
        raise ValueError(f"unknown claim id(s) {', '.join(unknown)}; valid: {', '.join(IDS)}")
    return [i for i in IDS if i in ids]


def load(ids: list[str] | None = None) -> list[ModuleType]:
    return [importlib.import_module(f"optarena.claims.{MODULES[i]}") for i in (ids or IDS)]
