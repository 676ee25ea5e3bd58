"""R2 (momentum usually 0.8 to 0.9): the rule on fabricated sweeps, the study design, and one tiny run
through the engine and the store."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import synthetic_mech as syn
from optarena.claims import r2_momentum_range as r2
from optarena.claims.base import VERDICTS
from optarena.store import Store
from optarena.study import execute
from test_claim_m1 import quoted

LRS = (0.01, 0.03, 0.1)
PROBLEMS = ("noisy_quadratic", "quadratic_deepobs")


def sweep(problem: str, quality: dict[float, float], noise: float = 0.01, seeds=(1, 2, 3, 4), convention="article",
          quick=True, diverge: tuple = ()) -> tuple[str, object]:
    """Tail loss = quality[momentum] * lr bowl (best lr 0.03) * (1 + noise * N(0, 1)) per seed."""
    rng = np.random.default_rng(len(problem))
    runs = []
    for m in r2.MOMENTA:
        for lr in LRS:
            for s in seeds:
                value = quality[m] * (1 + (math.log10(lr) - math.log10(0.03)) ** 2) * (1 + noise * rng.standard_normal())
                status = "diverged" if (m, lr) in diverge else "done"
                curve = {"step": [0.0, 25.0, 50.0, 75.0, 100.0, 125.0], "val_loss": [5.0] + [value] * 5}
                runs.append(syn.run(problem, "momentum", {"lr": lr, "momentum": m}, s, 125, convention=convention,
                                    status=status, final={"val_loss": value}, curve=curve))
    name = r2.name(problem, quick, convention)
    return name, syn.fixed(name, problem, runs)


def quality(best: float, others: float = 1.5, at: dict | None = None) -> dict[float, float]:
    q = {m: others for m in r2.MOMENTA}
    q[best] = 1.0
    q.update(at or {})
    return q


def results(*qualities, noise=0.01) -> dict:
    return dict(sweep(p, q, noise) for p, q in zip(PROBLEMS, qualities))


def test_text_is_quoted_from_the_article():
    quoted(r2.TEXT_ZH)


def test_design():
    quick = r2.design(True)
    assert [str(s.key) for s in quick] == ["R2/quadratic_deepobs/quick", "R2/noisy_quadratic/quick"]
    for s in quick:
        assert {t.convention for t in s.trials} == {"article"}
        ms = {t.hparams["momentum"] for t in s.trials}
        assert ms == set(r2.MOMENTA) and {0.8, 0.85, 0.9} <= ms
        lrs = {t.hparams["lr"] for t in s.trials}
        assert len(lrs) == 13 and min(lrs) == pytest.approx(1e-3) and max(lrs) == pytest.approx(1.0)
        assert len(s.trials) == len(r2.MOMENTA) * 13 * r2.SEEDS[True]
        assert {t.seed for t in s.trials} == set(range(1, r2.SEEDS[True] + 1))
    full = [str(s.key) for s in r2.design(False)]
    assert "R2/digits_mlp/full" in full and "R2-heavy-ball/quadratic_deepobs/full" in full
    heavy = next(s for s in r2.design(False) if str(s.key).startswith("R2-heavy-ball"))
    assert {t.convention for t in heavy.trials} == {"pytorch"}


@pytest.mark.parametrize("ci, expected", [
    ((0.0, 0.0), "equivalent"),
    ((0.0, 0.03), "equivalent"),
    ((0.0, 0.2), "undecided"),  # an interval starting at 0 alone is no support
    ((0.2, 0.5), "outside"),
])
def test_classify(ci, expected):
    assert r2.classify(ci) == expected


@pytest.mark.parametrize("classes, seeds, expected", [
    (["equivalent", "equivalent"], 6, "supported"),
    (["equivalent", "undecided"], 6, "inconclusive"),
    (["outside", "outside", "equivalent"], 6, "contradicted"),
    (["outside", "equivalent"], 6, "inconclusive"),
    (["equivalent"], 6, "inconclusive"),
    (["equivalent", "equivalent"], 2, "inconclusive"),
])
def test_decide(classes, seeds, expected):
    assert r2.decide(classes, seeds) == expected


def test_sweep_picks_lr_per_momentum_and_the_best_momentum():
    name, result = sweep("noisy_quadratic", quality(0.85))
    s = r2.MomentumGrid(result)
    value, j = s.best_per_momentum()
    assert all(s.lrs[k] == 0.03 for k in j)
    assert s.best() == 0.85 and s.gap() == 0.0
    name, result = sweep("noisy_quadratic", quality(0.5, at={0.85: 1.2}), noise=0.0)
    assert r2.MomentumGrid(result).gap() == pytest.approx(math.log(1.2))


def test_diverged_runs_cannot_be_chosen():
    name, result = sweep("noisy_quadratic", quality(0.85), diverge=((0.85, 0.03),))
    s = r2.MomentumGrid(result)
    _, j = s.best_per_momentum()
    assert s.lrs[j[s.momenta.index(0.85)]] != 0.03


def test_verdict_supported_when_the_best_lies_in_the_range():
    v = r2.verdict(results(quality(0.85), quality(0.9)))
    assert v.verdict == "supported" and v.effect == 0.0
    assert v.details["per_problem"]["noisy_quadratic"]["class"] == "equivalent"


def test_verdict_supported_when_the_range_is_within_the_margin_beyond_the_noise():
    v = r2.verdict(results(quality(0.95, at={0.9: 1.01}), quality(0.95, at={0.85: 1.01}), noise=0.001))
    assert v.verdict == "supported"
    assert {d["class"] for d in v.details["per_problem"].values()} == {"equivalent"}


def test_verdict_inconclusive_when_noise_hides_whether_the_range_is_within_the_margin():
    v = r2.verdict(results(quality(0.95, at={0.9: 1.01}), quality(0.95, at={0.85: 1.01}), noise=0.2))
    assert v.verdict == "inconclusive"
    assert {d["class"] for d in v.details["per_problem"].values()} == {"undecided"}


def test_verdict_contradicted_when_the_range_is_clearly_worse():
    v = r2.verdict(results(quality(0.5), quality(0.95)))
    assert v.verdict == "contradicted"
    assert v.effect == pytest.approx(math.log(1.5), rel=0.05) and v.ci95[0] > r2.MARGIN


def test_verdict_inconclusive_when_problems_disagree():
    v = r2.verdict(results(quality(0.85), quality(0.5)))
    assert v.verdict == "inconclusive"


def test_verdict_fields_and_json():
    res = results(quality(0.85), quality(0.9))
    res.update([sweep("noisy_quadratic", quality(0.9), convention="pytorch")])
    v = r2.verdict(res)
    assert v.id == "R2" and v.rule == r2.RULE and v.problems == sorted(PROBLEMS)
    assert v.budget == len(LRS) and v.seeds == 4
    assert "noisy_quadratic" in v.details["heavy_ball"]
    assert v.run_keys == sorted({k for r in res.values() for k in r.run_keys()})
    assert [p.kind for p in v.plots] == ["curves", "curves"]
    json.dumps(v.as_dict())
    assert r2.verdict({}).verdict == "inconclusive"


def test_tiny_run_through_engine_and_store():
    store = Store()
    studies = [r2.study(p, True, seeds=3, steps=40, lrs=(0.01, 0.1), momenta=(0.0, 0.85, 0.99)) for p in PROBLEMS]
    res = {s.key: execute(s, store) for s in studies}
    assert len(store) == 2 * 3 * 2 * 3
    v = r2.verdict(res)
    assert v.verdict in VERDICTS and math.isfinite(v.effect)
    assert set(v.details["per_problem"]) == set(PROBLEMS)


def test_the_revision_and_margin_travel_with_the_verdict_into_json_and_report(tmp_path):
    from optarena.report import write_report

    v = r2.verdict(results(quality(0.85), quality(0.9)))
    record = v.as_json()
    assert record["margin"] == r2.MARGIN and record["revisions"] == r2.REVISIONS
    assert {"date", "change", "seen"} == set(record["revisions"][0])
    page = write_report([v], tmp_path).read_text()
    assert "Rule revised:" in page and r2.REVISIONS[0]["date"] in page


def test_mechanism_checks_are_labelled_in_json_and_report(tmp_path):
    from optarena import claims
    from optarena.report import write_report

    kinds = {m.ID: getattr(m, "KIND", "claim test") for m in claims.load()}
    assert {i for i, k in kinds.items() if k == "mechanism check"} == {"M1", "M2", "M3", "M4"}
    m2 = claims.load(["M2"])[0]
    v = m2.verdict({})
    assert v.as_json()["kind"] == "mechanism check"
    assert "Mechanism check:" in write_report([v], tmp_path).read_text()
    assert "READING" in dir(claims.load(["M3"])[0]) and "re-adapting" in claims.load(["M3"])[0].RULE


def test_quick_mode_says_which_claims_it_cannot_decide(tmp_path):
    from optarena import claims
    from optarena.verdicts import quick_mode_note, write_outputs

    note = quick_mode_note(claims.load(), quick=True)
    assert note.startswith("R1: quick mode runs 3 of the 6 problems") and "R5:" in note and "R7:" in note
    assert quick_mode_note(claims.load(), quick=False) == "" and quick_mode_note(claims.load(["M2"]), True) == ""
    v = r2.verdict(results(quality(0.85), quality(0.9)))
    page = write_outputs([v], {"mode": "quick", "quick mode cannot decide": note}, tmp_path).read_text()
    assert "quick mode cannot decide" in page and "3 of the 6 problems" in page
