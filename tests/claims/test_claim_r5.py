"""R5 (Adam a good default): the rank rule on fabricated untuned runs."""

from __future__ import annotations

import math

import numpy as np

import synthetic_tuned as syn
from optarena.claims import r5_adam_default as r5
from optarena.claims import suite

OTHERS = [o for o in suite.OPTIMIZERS if o != "adam"]


def results(adam_mean: float, spread: float, n: int = 6, n_problems: int = 3) -> dict:
    """Untuned losses: the six other optimizers at 0.1, 0.2, ..., 0.6, Adam at `adam_mean`; shared
    per-seed noise (all runs of a seed share the minibatches) plus independent noise `spread`."""
    out = {}
    for i in range(n_problems):
        problem = f"p{i}"
        rng = np.random.default_rng(i)
        shared = rng.standard_normal(n) * 0.1
        means = {o: 0.1 * (k + 1) for k, o in enumerate(OTHERS)} | {"adam": adam_mean}
        defaults = {o: [float(m * math.exp(s + spread * z)) for s, z in zip(shared, rng.standard_normal(n))]
                    for o, m in means.items()}
        name = suite.study_name("tuned", problem, True)
        out[name] = syn.study_result(name, problem, tuning={o: [1.0] * 12 for o in suite.OPTIMIZERS},
                                     tuned={o: [0.1] * n for o in suite.OPTIMIZERS}, defaults=defaults)
    return out


def test_decide():
    assert r5.decide(1, (1.0, 1.5), 7, 3, 5) == "supported"
    assert r5.decide(3, (2.0, 3.0), 7, 3, 5) == "inconclusive"  # top half but not top two
    assert r5.decide(2, (1.5, 4.5), 7, 3, 5) == "inconclusive"
    assert r5.decide(6, (5.0, 6.5), 7, 3, 5) == "contradicted"
    assert r5.decide(1, (1.0, 1.0), 7, 2, 5) == "inconclusive"
    assert r5.decide(1, (1.0, 1.0), 7, 3, 2) == "inconclusive"


def test_adam_best_default_supports():
    v = r5.verdict(results(0.05, spread=0.02))
    assert v.verdict == "supported"
    assert v.effect == 1.0 and v.ci95 == (1.0, 1.0)
    assert v.details["adam_position"] == 1


def test_adam_worst_default_contradicts():
    v = r5.verdict(results(0.9, spread=0.02))
    assert v.verdict == "contradicted"
    assert v.effect == 7.0 and v.ci95[0] > 4


def test_noise_swamps_the_ranking():
    v = r5.verdict(results(0.35, spread=1.0))
    assert v.verdict == "inconclusive"
    assert v.ci95[0] <= v.effect <= v.ci95[1] and v.ci95[0] <= 4 <= v.ci95[1]


def test_verdict_fields_and_plots():
    v = r5.verdict(results(0.05, spread=0.02))
    assert v.id == "R5" and v.rule == r5.RULE and v.effect_name
    assert v.problems == ["p0", "p1", "p2"] and v.seeds == 6 and v.budget == 0
    assert v.run_keys
    assert {p.kind for p in v.plots} == {"profile", "bars"}
    profile = next(p for p in v.plots if p.kind == "profile")
    adam = next(s for s in profile.series if s.label == "adam")
    assert adam.y[0] == 1.0  # best on every problem: rho(1) = 1
    assert all(0 <= y <= 1 for s in profile.series for y in s.y)


def test_too_few_problems_is_inconclusive():
    v = r5.verdict(results(0.05, spread=0.02, n_problems=2))
    assert v.verdict == "inconclusive"
