"""What a claim module provides and what its verdict is.

A claim module (``r1_sgd_tuning.py`` ... ``m4_bias_correction.py``) defines:

- ``ID`` ("R1"), ``TEXT_ZH`` (the article's words), ``TEXT_EN`` (an English rendering),
- ``RULE``: the verdict rule in words, fixed before any result is seen; ``REVISIONS`` (optional):
  every later change of it, as {"date", "change", "seen"} records, printed beside the verdict;
  ``KIND`` (optional, "mechanism check"); ``QUICK_CANNOT_DECIDE`` (optional): why quick mode's
  design cannot reach a verdict (shown at the top of the report),
- ``CLAIM``: a `Claim` built from the constants above; every verdict of the module is made by it
  (``CLAIM.verdict(...)``, ``CLAIM.inconclusive(...)``), so the pre-registration data travels with
  each verdict,
- ``design(quick: bool) -> list[optarena.study.Study]``: the runs it needs,
- ``verdict(results: dict[str, optarena.study.StudyResult]) -> Verdict``: numbers in, verdict out;
  keyed by ``Study.name``. It must also accept results with fewer seeds or problems than designed
  (e.g. quick mode) and then say "inconclusive" rather than fail.

Plot text stays in English (matplotlib has no CJK font here); ``Plot.contour`` may carry
"minimum": [x, y] for a star marker.

Plots are data (``Plot``), drawn later by ``optarena.report``; claims never import the report or the
store, nor each other (shared measurements live in ``measures.py`` and ``suite.py``); the claims
study is run by ``optarena.verdicts``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from optarena.plots import Plot, Series  # noqa: F401  (figure data lives in optarena.plots)

VERDICTS = ("supported", "contradicted", "inconclusive")
KINDS = ("claim test", "mechanism check")
REVISION_FIELDS = ("date", "change", "seen")
"""A claim module's ``REVISIONS``: each change of its rule after the first, with the date, what
changed and which result had been seen when it changed (pre-registration that can be checked)."""

NAN = float("nan")


def mode(quick: bool) -> str:
    """The word in study names: "quick" or "full"."""
    return "quick" if quick else "full"


def find_study(results: dict, names) -> Any:
    """The first of `names` present in `results` (e.g. full mode's study before quick mode's), or None."""
    for n in names:
        if n in results:
            return results[n]
    return None


@dataclass
class Verdict:
    id: str
    claim_zh: str
    claim_en: str
    verdict: str
    effect: float
    ci95: tuple[float, float]
    problems: list[str]
    budget: int
    seeds: int
    rule: str
    effect_name: str = ""
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    plots: list[Plot] = field(default_factory=list)
    run_keys: list[str] = field(default_factory=list)
    margin: float | None = None
    revisions: list[dict[str, str]] = field(default_factory=list)
    kind: str = "claim test"
    """"claim test", or "mechanism check": a check that correct code passes by construction (the
    mechanism the article describes, e.g. AdaGrad's monotone sum), labelled as such in the report."""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        _check_revisions(self.revisions)

    def as_json(self) -> dict[str, Any]:
        """The verdicts.json record (plots left out; they live in the HTML report)."""
        return {
            "id": self.id,
            "claim_zh": self.claim_zh,
            "claim_en": self.claim_en,
            "verdict": self.verdict,
            "effect": self.effect,
            "effect_name": self.effect_name,
            "ci95": [self.ci95[0], self.ci95[1]],
            "problems": list(self.problems),
            "budget": self.budget,
            "seeds": self.seeds,
            "rule": self.rule,
            "margin": self.margin,
            "revisions": [dict(r) for r in self.revisions],
            "kind": self.kind,
            "summary": self.summary,
            "details": self.details,
            "run_keys": list(self.run_keys),
        }

    def as_dict(self) -> dict[str, Any]:
        d = self.as_json()
        d["plots"] = [asdict(p) for p in self.plots]
        return d


def _check_revisions(revisions) -> None:
    for r in revisions:
        if set(r) != set(REVISION_FIELDS):
            raise ValueError(f"a revision has the fields {REVISION_FIELDS}, got {sorted(r)}")


@dataclass(frozen=True)
class Claim:
    """What identifies a claim and was fixed before its results: the article's words, the rule, the
    margin, the rule's revisions and the kind. Its verdicts are made here (`verdict`, `inconclusive`,
    `failed`) so that every one carries the same pre-registration data, filled in one place."""

    id: str
    text_zh: str
    text_en: str
    rule: str
    effect_name: str = ""
    margin: float | None = None
    kind: str = "claim test"
    revisions: tuple[dict[str, str], ...] = ()
    quick_cannot_decide: str = ""
    """Why quick mode's design cannot reach a verdict ("" when it can)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        _check_revisions(self.revisions)
        object.__setattr__(self, "revisions", tuple(dict(r) for r in self.revisions))
        if self.margin is not None:
            object.__setattr__(self, "margin", float(self.margin))

    def verdict(self, outcome: str, effect: float, ci95, *, problems, budget: int, seeds: int,
                summary: str = "", details: dict[str, Any] | None = None, plots=None, run_keys=None,
                effect_name: str | None = None, margin: float | None = None) -> Verdict:
        """The verdict `outcome` with its numbers (effect and interval as floats, lists copied) and
        the claim's words, rule, margin, revisions and kind; `effect_name` or `margin`, when given,
        replace the claim's (a module whose margin or measure is computed)."""
        return Verdict(
            id=self.id,
            claim_zh=self.text_zh,
            claim_en=self.text_en,
            verdict=outcome,
            effect=float(effect),
            ci95=(float(ci95[0]), float(ci95[1])),
            problems=list(problems),
            budget=budget,
            seeds=seeds,
            rule=self.rule,
            effect_name=self.effect_name if effect_name is None else effect_name,
            summary=summary,
            details=dict(details or {}),
            plots=list(plots or []),
            run_keys=list(run_keys or []),
            margin=self.margin if margin is None else float(margin),
            revisions=[dict(r) for r in self.revisions],
            kind=self.kind,
        )

    def inconclusive(self, summary: str, *, problems=(), budget: int = 0, seeds: int = 0,
                     details: dict[str, Any] | None = None, run_keys=None, plots=None) -> Verdict:
        """"inconclusive" without an effect (NaN, interval (NaN, NaN)): the results lack what the
        rule needs, and `summary` says what."""
        return self.verdict("inconclusive", NAN, (NAN, NAN), problems=problems, budget=budget, seeds=seeds,
                            summary=summary, details=details, plots=plots, run_keys=run_keys)

    def failed(self, error: str) -> Verdict:
        """The verdict of a claim whose verdict function raised: "inconclusive", the last line of the
        traceback `error` as the summary and all of it in the details, so that one broken claim does
        not hide the others; its rule, margin, revisions and kind stay shown beside it."""
        return self.inconclusive("The verdict could not be computed: " + error.strip().splitlines()[-1],
                                 details={"error": error})
