"""The `Claim` every claim module builds its verdicts with: it matches the module's constants, fills
the pre-registration data (margin, revisions, kind) into each verdict, and makes the inconclusive and
failed verdicts."""

from __future__ import annotations

import math
import traceback

import pytest

from optarena import claims
from optarena.claims.base import Claim, Verdict

REVISION = {"date": "2026-12-03", "change": "the margin halved", "seen": "quick mode inconclusive"}


def claim(**kw) -> Claim:
    return Claim("X1", "中文", "English", "the rule", **kw)


@pytest.mark.parametrize("module", claims.load(), ids=lambda m: m.ID)
def test_every_claim_module_has_a_claim_built_from_its_constants(module):
    c = module.CLAIM
    assert isinstance(c, Claim)
    assert (c.id, c.text_zh, c.text_en, c.rule) == (module.ID, module.TEXT_ZH, module.TEXT_EN, module.RULE)
    assert c.margin == (float(module.MARGIN) if hasattr(module, "MARGIN") else None)
    assert list(c.revisions) == list(getattr(module, "REVISIONS", []))
    assert c.kind == getattr(module, "KIND", "claim test")
    assert c.quick_cannot_decide == getattr(module, "QUICK_CANNOT_DECIDE", "")
    assert c.effect_name


@pytest.mark.parametrize("module", claims.load(), ids=lambda m: m.ID)
def test_a_verdict_on_no_results_carries_the_claims_pre_registration(module):
    v = module.verdict({})
    assert v.verdict == "inconclusive"
    assert (v.id, v.rule, v.margin, v.kind) == (module.ID, module.RULE, module.CLAIM.margin, module.CLAIM.kind)
    assert v.revisions == [dict(r) for r in module.CLAIM.revisions]


def test_verdict_fills_margin_revisions_and_kind_from_the_claim():
    c = claim(effect_name="gap", margin=0.05, kind="mechanism check", revisions=[REVISION])
    v = c.verdict("supported", 1, [0, 2], problems=("a", "b"), budget=3, seeds=4, summary="s")
    assert isinstance(v, Verdict)
    assert (v.id, v.claim_zh, v.claim_en, v.rule, v.effect_name) == ("X1", "中文", "English", "the rule", "gap")
    assert (v.margin, v.kind, v.revisions) == (0.05, "mechanism check", [REVISION])
    assert v.effect == 1.0 and isinstance(v.effect, float)
    assert v.ci95 == (0.0, 2.0) and all(isinstance(x, float) for x in v.ci95)
    assert (v.problems, v.budget, v.seeds, v.summary) == (["a", "b"], 3, 4, "s")
    assert (v.details, v.plots, v.run_keys) == ({}, [], [])


def test_verdict_copies_what_it_is_given():
    c = claim(revisions=[REVISION])
    problems, keys = ["a"], ["k1"]
    v = c.verdict("contradicted", 0.0, (0.0, 0.0), problems=problems, budget=0, seeds=1, run_keys=keys)
    problems.append("b")
    keys.append("k2")
    v.revisions[0]["seen"] = "changed"
    assert v.problems == ["a"] and v.run_keys == ["k1"] and c.revisions[0]["seen"] == REVISION["seen"]


def test_explicit_margin_and_effect_name_override_the_claims():
    c = claim(effect_name="gap", margin=0.05)
    v = c.verdict("inconclusive", 0.0, (0.0, 0.0), problems=[], budget=0, seeds=0, effect_name="other", margin=1)
    assert (v.effect_name, v.margin) == ("other", 1.0)
    assert claim().verdict("inconclusive", 0.0, (0.0, 0.0), problems=[], budget=0, seeds=0).margin is None


def test_the_claims_defaults():
    c = claim()
    assert (c.effect_name, c.margin, c.kind, c.revisions, c.quick_cannot_decide) == ("", None, "claim test", (), "")
    with pytest.raises(AttributeError):
        c.rule = "changed after the results"  # frozen: the rule is fixed before any result


@pytest.mark.parametrize("record", [
    {"date": "2026-12-03", "change": "x"},
    {"date": "2026-12-03", "change": "x", "seen": "y", "why": "z"},
])
def test_an_invalid_revision_record_is_refused(record):
    with pytest.raises(ValueError, match="revision"):
        claim(revisions=[record])


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind"):
        claim(kind="sanity check")


def test_inconclusive_has_no_effect():
    c = claim(effect_name="gap", margin=0.1, kind="mechanism check", revisions=(REVISION,))
    v = c.inconclusive("No runs.", problems=["p"], seeds=2, run_keys=["k"], details={"why": 1})
    assert v.verdict == "inconclusive" and v.summary == "No runs."
    assert math.isnan(v.effect) and all(math.isnan(x) for x in v.ci95) and len(v.ci95) == 2
    assert (v.problems, v.budget, v.seeds, v.run_keys, v.details) == (["p"], 0, 2, ["k"], {"why": 1})
    assert (v.effect_name, v.margin, v.kind, v.revisions) == ("gap", 0.1, "mechanism check", [REVISION])
    empty = c.inconclusive("Nothing.")
    assert (empty.problems, empty.budget, empty.seeds, empty.plots, empty.run_keys) == ([], 0, 0, [], [])


def test_failed_says_why_and_keeps_the_claims_labels():
    try:
        raise RuntimeError("no such study")
    except RuntimeError:
        error = traceback.format_exc()
    v = claims.load(["M2"])[0].CLAIM.failed(error)
    assert v.verdict == "inconclusive" and v.id == "M2"
    assert v.summary == "The verdict could not be computed: RuntimeError: no such study"
    assert v.details == {"error": error}
    assert math.isnan(v.effect) and all(math.isnan(x) for x in v.ci95)
    assert (v.problems, v.budget, v.seeds, v.plots, v.run_keys) == ([], 0, 0, [], [])
    assert v.rule == claims.load(["M2"])[0].RULE
    assert v.kind == "mechanism check"  # M2's label stays beside a verdict that could not be computed


def test_a_verdict_that_raises_becomes_a_failed_verdict(monkeypatch):
    from optarena.store import Store
    from optarena.verdicts import run_claims

    m2 = claims.load(["M2"])[0]

    def broken(results):
        raise KeyError("missing")

    monkeypatch.setattr(m2, "design", lambda quick: [])
    monkeypatch.setattr(m2, "verdict", broken)
    with Store(None) as store:
        (v,), _ = run_claims(["M2"], True, store, stored_only=True)
    assert v.summary == "The verdict could not be computed: KeyError: 'missing'"
    assert "Traceback" in v.details["error"]


def test_side_by_side_studies_start_with_the_largest():
    """With several workers the runner starts the studies largest first (run-steps, the problem's
    default steps where a study leaves them out), so that no long study is left to run alone."""
    from optarena import problems
    from optarena.claims import suite
    from optarena.verdicts import _work, plan

    studies, _ = plan(claims.load(), quick=False)
    for s in studies:
        steps = s.steps or problems.PROBLEMS[s.problem].default_steps
        assert _work(s) == s.n_runs * steps > 0
    work = {s.key: _work(s) for s in studies}
    assert work[suite.deep_budget_key("deep_mlp", 10, False)] > work[suite.deep_budget_key("deep_mlp", 3, False)]
    assert max(work.values()) == work[suite.budget_key("digits_mlp", 10, False)]
