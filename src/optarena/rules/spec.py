"""The declarative pieces of a registry entry: what an optimizer is under each convention.

Each rule file ends with its entries, e.g. (``adam.py``)::

    ENTRIES = (
        Optimizer("adam", "Adam", family="article", summary="...", search={...}, conventions={
            "article": Convention(Adam, {"lr": 1e-3, ...}, "w -= lr*m^/sqrt(v^ + eps)",
                                  flags={"eps_inside_root": True, ...}),
            "pytorch": Convention(Adam, {...}, "...", flags={...}, source="torch.optim.Adam"),
        }),
    )

``defaults`` are the hyperparameters a user may set (torch-style names, equal to the rule's field
names) with the convention's values; ``flags`` are the rule's remaining constructor arguments,
fixed by the convention (eps placement, momentum form, ...). The rule is built as
``Convention.rule(**defaults_overridden_by_user, **flags)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optarena.rules.base import Rule

FAMILIES = ("article", "extra", "contender")
"""article: the eight the article names; extra: close relatives (AdamW); contender: today's others."""


@dataclass(frozen=True)
class Range:
    """Allowed values of a hyperparameter: a predicate on a finite float and its description."""

    ok: Callable[[float], bool]
    text: str

    def __call__(self, x: float) -> bool:
        return math.isfinite(x) and self.ok(x)


def at_least(low: float) -> Range:
    return Range(lambda x: x >= low, f"a finite number >= {low:g}")


def above(low: float) -> Range:
    return Range(lambda x: x > low, f"a finite number > {low:g}")


def at_most(high: float) -> Range:
    return Range(lambda x: x <= high, f"a finite number <= {high:g}")


def interval(low: float, high: float, closed_high: bool = False) -> Range:
    if closed_high:
        return Range(lambda x: low <= x <= high, f"in [{low:g}, {high:g}]")
    return Range(lambda x: low <= x < high, f"in [{low:g}, {high:g})")


def integer(low: int) -> Range:
    return Range(lambda x: x >= low and float(x).is_integer(), f"an integer >= {low}")


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter of a search space: [low, high], log-uniform when `log`."""

    low: float
    high: float
    log: bool = False

    def grid(self, n: int) -> list[float]:
        if n == 1:
            return [math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2]
        if self.log:
            return [float(x) for x in np.logspace(math.log10(self.low), math.log10(self.high), n)]
        return [float(x) for x in np.linspace(self.low, self.high, n)]

    def sample(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(10 ** rng.uniform(math.log10(self.low), math.log10(self.high)))
        return float(rng.uniform(self.low, self.high))

    def from_unit(self, u: float) -> float:
        """The value at position u in [0, 1] of the (log) range: space-filling designs map to it."""
        if self.log:
            return float(10 ** (math.log10(self.low) + u * (math.log10(self.high) - math.log10(self.low))))
        return float(self.low + u * (self.high - self.low))

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


Constraint = Callable[[str, str, Mapping[str, Any]], "str | None"]
"""(optimizer, convention, resolved hyperparameters) -> an error message, or None when fine."""


@dataclass(frozen=True)
class Convention:
    """One optimizer under one convention: the rule, its user defaults, fixed flags and formula."""

    rule: type[Rule]
    defaults: Mapping[str, Any]
    formula: str
    flags: Mapping[str, Any] = field(default_factory=dict)
    ranges: Mapping[str, Range] = field(default_factory=dict)
    constraints: tuple[Constraint, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class Optimizer:
    """An optimizer: its public class name, its conventions, and its search space beyond lr.

    ``absent`` maps a convention the optimizer lacks to the reason (shown in the error).
    ``search`` holds the hyperparameters a study may tune besides ``lr`` (always tuned,
    log-uniformly over the study's range) with their ranges.
    """

    name: str
    class_name: str
    family: str
    summary: str
    conventions: Mapping[str, Convention]
    search: Mapping[str, Dimension] = field(default_factory=dict)
    absent: Mapping[str, str] = field(default_factory=dict)
    reference: str = ""
    # The drop-in's positional order after ``params`` (torch.optim's), when it differs from the
    # order the conventions list their defaults in; ``betas`` stands for beta1, beta2.
    signature: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family must be one of {FAMILIES}, got {self.family!r}")


def nesterov_needs_momentum(name: str, convention: str, h: Mapping[str, Any]) -> str | None:
    """torch.optim.SGD and keras SGD refuse Nesterov without momentum (torch also with dampening)."""
    if not h.get("nesterov"):
        return None
    damped = convention == "pytorch" and h.get("dampening", 0.0) > 0
    if h["momentum"] > 0 and not damped:
        return None
    extra = " and dampening = 0" if convention == "pytorch" else ""
    shown = f", dampening={h.get('dampening')!r}" if convention == "pytorch" else ""
    return f"{name}: nesterov=True needs momentum > 0{extra}; got momentum={h['momentum']!r}{shown}"
