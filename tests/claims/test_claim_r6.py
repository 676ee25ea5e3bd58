"""R6 (Adadelta adapts its own learning rate): untuned vs tuned Adadelta on fabricated reruns."""

from __future__ import annotations

import math

import pytest

import synthetic_tuned as syn
from optarena.claims import r6_adadelta as r6
from optarena.claims import suite

LRS = syn.lr_grid(12)


def results(ratios: list[float], jitter: float, n: int = 6) -> dict:
    """Per problem, untuned Adadelta's loss = ratio * tuned Adadelta's, seed by seed (with `jitter`)."""
    out = {}
    for i, ratio in enumerate(ratios):
        problem = f"p{i}"
        tuned, default = syn.paired(0.2, ratio, 0.3, n, seed=i, jitter=jitter)
        name = suite.study_name("tuned", problem, True)
        out[name] = syn.study_result(
            name, problem, lrs=LRS,
            tuning={"adadelta": syn.bowl(LRS, 0.2, 0.5, 0.2), "sgd": syn.bowl(LRS, 0.2, -2, 2.0)},
            tuned={"adadelta": tuned, "sgd": [0.2] * n}, defaults={"adadelta": default, "sgd": [0.3] * n})
    return out


def test_decide():
    little, matters, unclear = (-0.05, 0.05), (0.5, 1.0), (-0.1, 0.5)
    assert r6.decide([little, little, matters], 5) == "supported"
    assert r6.decide([matters, matters, little], 5) == "contradicted"
    assert r6.decide([little, matters, unclear], 5) == "inconclusive"
    assert r6.decide([little, little], 5) == "inconclusive"  # fewer than 3 problems
    assert r6.decide([little, little, little], 2) == "inconclusive"
    # the margin is 10%: an interval just below ln(1.1) is "little", just above it "matters"
    assert r6.decide([(0.0, math.log(1.09))] * 3, 5) == "supported"
    assert r6.decide([(math.log(1.11), 0.2)] * 3, 5) == "contradicted"


def test_default_close_to_tuned_supports():
    v = r6.verdict(results([1.01, 1.0, 1.02], jitter=0.01))
    assert v.verdict == "supported"
    assert abs(v.effect) < 5 and v.ci95[0] <= v.effect <= v.ci95[1]


def test_tuning_helps_a_lot_contradicts():
    v = r6.verdict(results([3.0, 5.0, 1.0], jitter=0.05))
    assert v.verdict == "contradicted"
    assert v.details["tuning_matters_on"] == ["p0", "p1"]
    assert v.effect > 50 and v.ci95[0] > 10


def test_noise_swamps_the_difference():
    v = r6.verdict(results([1.1, 1.1, 1.1], jitter=0.6))
    assert v.verdict == "inconclusive"


def test_verdict_fields_and_plots():
    v = r6.verdict(results([3.0, 5.0, 1.0], jitter=0.05))
    assert v.id == "R6" and v.rule == r6.RULE and v.effect_name
    assert v.problems == ["p0", "p1", "p2"] and v.budget == 12 and v.seeds == 6 and v.run_keys
    assert {p.kind for p in v.plots} == {"bars", "curves"}
    d = v.details["per_problem"]["p0"]
    assert d["lr_width"] > d["median_lr_width_others"]  # the fabricated Adadelta bowl is the flatter one


def test_budget_dependence_is_reported_per_budget_multiple():
    from test_claim_r5 import results as sweep_results

    res = sweep_results({1: 1.0, 3: 1.0, 10: 1.0})  # adadelta: defaults 0.5 vs tuned 0.13 everywhere
    dependence = r6.budget_dependence(res)
    assert set(dependence) == {"1x", "3x", "10x"} and set(dependence["10x"]) == {"digits_mlp"}
    row = dependence["3x"]["mnist_mlp"]
    assert row["excess_percent"] == pytest.approx(100 * (0.5 / 0.13 - 1), rel=0.05) and not row["within_margin"]
    assert row["steps"] == 10  # the fabricated runs' steps


def test_divergence_counts_are_reported():
    from test_claim_r5 import results as sweep_results

    res = sweep_results({1: 1.0, 3: 1.0, 10: 1.0})
    key = suite.budget_key("digits_mlp", 3, False)
    run = res[key].tuned["adam"][0]
    run.status = "diverged"
    counts = suite.divergence_counts(suite.by_budget(res)[3])
    assert counts == {"digits_mlp": {"adam": {"tuned": 1}}}
