"""M3 (RMSprop adapts more smoothly than AdaGrad): the rule on fabricated traces around a gradient-scale
change, the study design, and one tiny run through the engine and the store."""

from __future__ import annotations

import json
import math

import pytest

import synthetic_mech as syn
from optarena.claims import m3_rmsprop_smooth as m3
from optarena.claims.base import VERDICTS
from optarena.store import Store
from optarena.study import execute
from test_claim_m1 import quoted

SHIFT, FACTOR = m3.shift()
STEPS = 400


def results(adagrad_drop: float, rmsprop_drop: float, seeds=(1, 2, 3), lrs=(0.01, 0.03), noise=0.02) -> dict:
    runs = []
    for o, drop in (("adagrad", adagrad_drop), ("rmsprop", rmsprop_drop)):
        for lr in lrs:
            for s in seeds:
                drop_s = drop if isinstance(drop, float) else drop[s % len(drop)]
                e = syn.shift_trace(STEPS, SHIFT, drop_s, lr, seed=s, noise=noise)
                runs.append(syn.run(m3.PROBLEM, o, {"lr": lr}, s, STEPS, final={"val_loss": 0.01},
                                    trace={"effective_step": e, "update_norm": [1.0] * STEPS, "loss": [1.0] * STEPS}))
    return {m3.name(True): syn.fixed(m3.name(True), m3.PROBLEM, runs, ("effective_step", "update_norm", "loss"))}


def test_text_is_quoted_from_the_article():
    quoted(m3.TEXT_ZH)


def test_design():
    (s,) = m3.design(True)
    assert str(s.key) == "M3/scale_shift_quadratic/quick" and s.steps == 400
    assert set(s.trace) == {"effective_step", "update_norm", "loss"}
    assert {t.optimizer for t in s.trials} == {"adagrad", "rmsprop"}
    assert len(s.trials) == 2 * len(m3.LRS[True]) * m3.SEEDS[True]
    assert (SHIFT, FACTOR) == (200, 100.0)
    assert m3.POST == (20, 60)  # 2 and 6 memory lengths of RMSprop's alpha = 0.9


def test_readaptation_error():
    ideal = syn.run(m3.PROBLEM, "rmsprop", {"lr": 0.01}, 1, STEPS, final={"val_loss": 0.0},
                    trace={"effective_step": syn.shift_trace(STEPS, SHIFT, 2.0, noise=0.0)})
    partial = syn.run(m3.PROBLEM, "adagrad", {"lr": 0.01}, 1, STEPS, final={"val_loss": 0.0},
                      trace={"effective_step": syn.shift_trace(STEPS, SHIFT, 1.0, noise=0.0)})
    assert m3.readaptation_error(ideal, SHIFT, FACTOR) == pytest.approx(0.0, abs=1e-12)
    assert m3.readaptation_error(partial, SHIFT, FACTOR) == pytest.approx(1.0)
    assert m3.jitter(ideal) > 0
    diverged = syn.run(m3.PROBLEM, "adagrad", {"lr": 0.01}, 1, STEPS, status="diverged")
    assert math.isnan(m3.readaptation_error(diverged, SHIFT, FACTOR))


@pytest.mark.parametrize("ci, n, expected", [
    ((0.5, 1.0), 10, "supported"),
    ((-0.2, 0.05), 10, "contradicted"),
    ((0.0, 0.3), 10, "inconclusive"),
    ((0.5, 1.0), 2, "inconclusive"),
])
def test_decide(ci, n, expected):
    assert m3.decide(ci, n) == expected


def test_verdict_supported_when_rmsprop_readapts_and_adagrad_does_not():
    v = m3.verdict(results(adagrad_drop=1.0, rmsprop_drop=2.0))
    assert v.verdict == "supported" and v.effect == pytest.approx(1.0, abs=0.05)


def test_verdict_contradicted_when_adagrad_readapts_as_well():
    v = m3.verdict(results(adagrad_drop=2.0, rmsprop_drop=1.5))
    assert v.verdict == "contradicted" and v.effect < 0


def test_verdict_inconclusive_within_the_noise_of_the_margin():
    v = m3.verdict(results(adagrad_drop=(1.7, 2.0, 1.8), rmsprop_drop=2.0))
    assert v.verdict == "inconclusive"
    assert v.ci95[0] < m3.MARGIN < v.ci95[1]


def test_verdict_fields_and_json():
    v = m3.verdict(results(1.0, 2.0))
    assert v.id == "M3" and v.rule == m3.RULE and v.problems == [m3.PROBLEM] and v.seeds == 3 and v.budget == 0
    assert set(v.details["per_optimizer"]) == {"adagrad", "rmsprop"}
    assert len(v.plots) == 2 and v.run_keys
    json.dumps(v.as_dict())
    assert m3.verdict({}).verdict == "inconclusive"


def test_tiny_run_through_engine_and_store():
    store = Store()
    study = m3.study(True, seeds=2, lrs=(0.01, 0.03, 0.1))
    v = m3.verdict({study.key: execute(study, store)})
    assert v.verdict in VERDICTS and v.details["pairs"] == 6
    per = v.details["per_optimizer"]
    # RMSprop forgets the old gradient scale; AdaGrad's accumulated G keeps it.
    assert per["rmsprop"]["readaptation_error_decades"] < per["adagrad"]["readaptation_error_decades"]
