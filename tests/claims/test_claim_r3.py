"""R3 (AdaGrad suits sparse data): the rule on fabricated tuned studies, the study design, and one tiny
tuned study through the engine and the store on a small Zipf problem."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import synthetic_mech as syn
from optarena import problems
from optarena.claims import r3_adagrad_sparse as r3
from optarena.claims.base import VERDICTS
from optarena.store import Store
from optarena.study import Setup, TunedStudy, execute
from test_claim_m1 import quoted


def tuned(rare: dict[str, float], loss: dict[str, float], noise: float = 0.001, seeds=(1, 2, 3, 4)) -> dict:
    rng = np.random.default_rng(0)
    study = r3.study(True)
    reruns = {}
    for o in r3.OPTIMIZERS:
        reruns[o] = []
        for s in seeds:
            r = rare[o][s % len(rare[o])] if isinstance(rare[o], list) else rare[o]
            final = {"val_loss": loss[o] + noise * rng.standard_normal(),
                     "rare_weight_error": r + noise * rng.standard_normal()}
            curve = {"step": [0.0, 150.0, 300.0], "val_loss": [0.69, 0.5, final["val_loss"]],
                     "rare_weight_error": [1.0, 0.99, final["rare_weight_error"]]}
            reruns[o].append(syn.run(r3.PROBLEM, o, {"lr": 0.1}, s, 300, final=final, curve=curve))
    tuning = {o: [syn.run(r3.PROBLEM, o, {"lr": lr}, 0, 300, final={"val_loss": 0.5 + abs(math.log10(lr) + 1)})
                  for lr in (0.01, 0.1, 1.0)] for o in r3.OPTIMIZERS}
    result = syn.tuned(study, reruns, {o: {"lr": 0.1} for o in r3.OPTIMIZERS}, tuning)
    return {study.key: result}


GOOD_RARE = {"sgd": 0.99, "adagrad": 0.98, "adam": 0.978}
GOOD_LOSS = {"sgd": 0.48, "adagrad": 0.44, "adam": 0.44}


def test_text_is_quoted_from_the_article():
    quoted(r3.TEXT_ZH)


def test_design_same_budget_for_all_three():
    (s,) = r3.design(True)
    assert str(s.key) == "R3/sparse_zipf/quick" and s.problem == "sparse_zipf"
    assert s.optimizers == ("sgd", "adagrad", "adam") and s.convention == "article"
    assert (s.budget, s.seeds, s.steps, s.method, s.defaults) == (10, 3, 300, "grid", False)
    assert s.lr_range == pytest.approx((1e-3, 10**1.5))
    (f,) = r3.design(False)
    assert (f.budget, f.seeds, f.steps) == (11, 10, 1000) and f.lr_range == (1e-3, 1e2)


@pytest.mark.parametrize("rare_sgd, loss_sgd, vs_adam, n, expected", [
    ((0.005, 0.01), (0.01, 0.05), (-0.01, 0.01), 4, "supported"),
    ((-0.01, -0.005), (0.01, 0.05), (-0.01, 0.01), 4, "contradicted"),  # SGD learns rare weights better
    ((0.005, 0.01), (-0.05, -0.01), (-0.01, 0.01), 4, "contradicted"),  # SGD reaches a lower loss
    ((0.005, 0.01), (0.01, 0.05), (0.05, 0.1), 4, "contradicted"),  # AdaGrad >2% worse than Adam
    ((-0.002, 0.01), (0.01, 0.05), (-0.01, 0.01), 4, "inconclusive"),
    ((0.005, 0.01), (0.01, 0.05), (0.0, 0.04), 4, "inconclusive"),
    ((0.005, 0.01), (0.01, 0.05), (-0.01, 0.01), 2, "inconclusive"),
])
def test_decide(rare_sgd, loss_sgd, vs_adam, n, expected):
    assert r3.decide(rare_sgd, loss_sgd, vs_adam, n) == expected


def test_verdict_supported():
    v = r3.verdict(tuned(GOOD_RARE, GOOD_LOSS))
    assert v.verdict == "supported" and v.effect == pytest.approx(0.01, abs=0.003) and v.ci95[0] > 0


def test_verdict_contradicted_when_sgd_learns_rare_weights_better():
    v = r3.verdict(tuned({**GOOD_RARE, "sgd": 0.97}, GOOD_LOSS))
    assert v.verdict == "contradicted" and v.ci95[1] < 0


def test_verdict_contradicted_when_adam_is_clearly_better_on_loss():
    v = r3.verdict(tuned(GOOD_RARE, {**GOOD_LOSS, "adam": 0.40}))
    assert v.verdict == "contradicted"


def test_verdict_inconclusive_within_the_noise():
    v = r3.verdict(tuned({**GOOD_RARE, "sgd": [0.99, 0.97, 0.99, 0.97]}, GOOD_LOSS))
    assert v.verdict == "inconclusive" and v.ci95[0] < 0 < v.ci95[1]


def test_verdict_fields_and_json():
    res = tuned(GOOD_RARE, GOOD_LOSS)
    v = r3.verdict(res)
    assert v.id == "R3" and v.rule == r3.RULE and v.problems == ["sparse_zipf"]
    assert v.budget == 10 and v.seeds == 4 and v.run_keys == res[r3.name(True)].run_keys()
    assert v.details["rare_error_reduction_from_zero_weights"]["adagrad"] == pytest.approx(0.02, abs=0.005)
    assert [p.kind for p in v.plots] == ["bars", "curves", "curves", "curves"]
    assert v.plots[0].categories == ["held-out loss", "rare-feature weight error"]
    json.dumps(v.as_dict())
    assert r3.verdict({}).verdict == "inconclusive"


def test_tiny_tuned_study_through_engine_and_store():
    small = problems.get("sparse_zipf", n_features=2000, n_train=600, n_val=200, batch_size=32)
    study = TunedStudy(r3.name(True), r3.OPTIMIZERS, budget=3, seeds=3, lr_range=(0.01, 1.0), defaults=False,
                       setup=Setup(30))
    store = Store()
    result = execute(study, store, problem=small)
    assert len(store) == 3 * 3 + 3 * 3
    v = r3.verdict({study.key: result})
    assert v.verdict in VERDICTS and v.seeds == 3 and math.isfinite(v.effect)
    assert set(v.details["chosen_lr"]) == set(r3.OPTIMIZERS)
