"""Update rules: one file per optimizer, each ending in its registry entries (``registry.py``).

>>> rule = get("adam", convention="pytorch", lr=1e-3)
"""

from optarena.rules.base import HP, Rule
from optarena.rules.registry import (
    CONVENTIONS,
    SOURCES,
    build,
    class_name,
    code_path,
    construct,
    convention_of,
    defaults,
    entries,
    entry,
    formula,
    has_convention,
    names,
    resolve,
    search_space,
)
from optarena.rules.spec import Convention, Dimension, Optimizer


def get(name: str, convention: str = "article", **hparams) -> Rule:
    """The update rule `name` under `convention` with `hparams` (torch-style names) over its defaults."""
    return build(name, convention, **hparams)


__all__ = [
    "HP", "Rule", "CONVENTIONS", "SOURCES", "Convention", "Dimension", "Optimizer", "build", "class_name",
    "code_path", "construct", "convention_of", "defaults", "entries", "entry", "formula", "get",
    "has_convention", "names", "resolve", "search_space",
]
