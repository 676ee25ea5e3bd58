"""Update rules: one file per optimizer, conventions in `conventions.py`.

>>> rule = get("adam", convention="pytorch", lr=1e-3)
"""

from optarena.rules.base import HP, Rule
from optarena.rules.conventions import CONVENTIONS, DEFAULTS, FORMULAS, OPTIMIZERS, SOURCES, build, defaults, resolve


def get(name: str, convention: str = "article", **hparams) -> Rule:
    """The update rule `name` under `convention` with `hparams` (torch-style names) over its defaults."""
    return build(name, convention, **hparams)


def names() -> list[str]:
    return list(OPTIMIZERS)


__all__ = ["HP", "Rule", "CONVENTIONS", "DEFAULTS", "FORMULAS", "OPTIMIZERS", "SOURCES", "build", "defaults", "get", "names", "resolve"]
