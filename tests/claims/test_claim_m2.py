"""M2 (AdaGrad's effective step keeps shrinking): the rule on fabricated effective-step traces, the
study design, and one tiny run through the engine and the store."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import synthetic_mech as syn
from optarena.claims import m2_adagrad_decay as m2
from optarena.claims.base import VERDICTS
from optarena.store import Store
from optarena.study import execute
from test_claim_m1 import quoted

STEPS = 400


def traces(adagrad: str, rmsprop: str, problems=("noisy_quadratic", "quadratic_deepobs"), seeds=(1, 2, 3),
           final_loss=(0.2, 0.1), status=("done", "done")) -> dict:
    """Fabricated M2 studies: effective-step traces of the given kinds and, per optimizer (AdaGrad,
    RMSprop), a final training loss (times 1 + 1% per seed) and a status."""
    out = {}
    for problem in problems:
        runs = []
        for (o, kind), loss, st in zip((("adagrad", adagrad), ("rmsprop", rmsprop)), final_loss, status):
            for lr in (0.01, 0.1):
                for s in seeds:
                    runs.append(syn.run(problem, o, {"lr": lr}, s, STEPS, status=st,
                                        final={"val_loss": 0.1, "train_loss": loss * (1 + 0.01 * s)},
                                        trace={"effective_step": syn.effective_step_trace(STEPS, kind, lr, seed=s + 100 * (o == "rmsprop"))}))
        out[m2.name(problem, True)] = syn.fixed(m2.name(problem, True), problem, runs, ("effective_step",))
    return out


def test_text_is_quoted_from_the_article():
    quoted(m2.TEXT_ZH)


def test_design():
    quick = m2.design(True)
    assert [str(s.key) for s in quick] == ["M2/noisy_quadratic/quick", "M2/quadratic_deepobs/quick"]
    for s in quick:
        assert s.trace == ("effective_step",) and s.steps == 1000
        assert {t.optimizer for t in s.trials} == {"adagrad", "rmsprop"}
        assert {t.convention for t in s.trials} == {"article"}
        assert len(s.trials) == 2 * 3 * m2.SEEDS[True]
    full = m2.design(False)
    assert "M2/digits_mlp/full" in [str(s.key) for s in full]
    assert all(s.steps >= 1000 for s in full)


def test_shrink_of_one_over_sqrt_t():
    e = syn.effective_step_trace(1000, "decay", 1.0, noise=0.0)
    r = syn.run("noisy_quadratic", "adagrad", {"lr": 1.0}, 1, 1000, final={"val_loss": 1.0}, trace={"effective_step": e})
    t = np.arange(1, 1001)
    expected = math.log10(np.mean(1 / np.sqrt(t[-100:])) / np.mean(1 / np.sqrt(t[:100])))
    assert m2.shrink(r) == pytest.approx(expected)
    assert m2.late_slope(r) == pytest.approx(-0.5, abs=1e-6)
    flat = syn.run("noisy_quadratic", "rmsprop", {"lr": 1.0}, 1, 1000, final={"val_loss": 1.0},
                   trace={"effective_step": syn.effective_step_trace(1000, "flat", 1.0, noise=0.0)})
    assert m2.shrink(flat) == pytest.approx(0.0) and m2.late_slope(flat) == pytest.approx(0.0, abs=1e-9)
    nan = syn.run("noisy_quadratic", "adagrad", {"lr": 1.0}, 1, 20, final={"val_loss": 1.0},
                  trace={"effective_step": [math.nan] * 20})
    assert math.isnan(m2.shrink(nan))


@pytest.mark.parametrize("mean, ci, diff, n, expected", [
    (-0.7, (-0.8, -0.6), (-0.8, -0.5), 12, "supported"),
    (-0.05, (-0.08, -0.02), (-0.1, 0.1), 12, "contradicted"),  # AdaGrad's hardly shrinks
    (-0.7, (-0.8, -0.6), (0.1, 0.3), 12, "contradicted"),  # RMSprop's shrinks more
    (-0.2, (-0.25, -0.15), (-0.3, -0.1), 12, "inconclusive"),  # shrinks, but by less than half
    (-0.7, (-0.8, -0.6), (-0.8, -0.5), 3, "inconclusive"),
])
def test_decide(mean, ci, diff, n, expected):
    assert m2.decide(mean, ci, diff, n) == expected


def test_verdict_supported_when_adagrad_decays_and_rmsprop_does_not():
    v = m2.verdict(traces("decay", "flat"))
    assert v.verdict == "supported" and v.effect < 0 and v.ci95[1] < 0
    assert v.details["adagrad_shrink"]["mean"] < -0.3


def test_the_consequence_is_co_primary():
    """The step shrinks in both; AdaGrad ending above RMSprop (a stall) is needed for support."""
    stalled = m2.verdict(traces("decay", "flat", final_loss=(0.2, 0.1)))
    assert stalled.details["consequence"] == "supported" and stalled.verdict == "supported"
    assert stalled.details["stall_log_ratio"]["median"] == pytest.approx(math.log(2.0), rel=1e-6)
    ahead = m2.verdict(traces("decay", "flat", final_loss=(0.05, 0.1)))
    assert ahead.details["mechanism"] == "supported" and ahead.details["consequence"] == "contradicted"
    assert ahead.verdict == "inconclusive" and "consequence" in ahead.summary.lower()
    even = m2.verdict(traces("decay", "flat", final_loss=(0.1, 0.1)))
    assert even.details["consequence"] == "inconclusive" and even.verdict == "inconclusive"


def test_a_diverged_rmsprop_run_is_ranked_not_scored():
    results = traces("decay", "flat", final_loss=(0.2, 0.1))
    for result in results.values():
        for r in result.runs:
            if r.trial.optimizer == "rmsprop" and r.trial.seed == 1:
                r.status = "diverged"
    v = m2.verdict(results)
    stall = v.details["stall_log_ratio"]
    assert stall["pairs"] == 12 and stall["diverged_pairs"] == 4
    # 4 of 12 pairs favour AdaGrad by a divergence (-inf), 8 favour RMSprop by ln 2: the median is
    # finite (only the order of the infinities counts)
    assert stall["median"] == pytest.approx(math.log(2.0), rel=0.05) and stall["ci95"][0] < stall["median"]


def test_verdict_contradicted_when_adagrad_does_not_shrink():
    v = m2.verdict(traces("flat", "decay"))
    assert v.verdict == "contradicted" and v.effect > 0


def test_verdict_inconclusive_when_adagrad_shrinks_by_less_than_half():
    v = m2.verdict(traces("mild", "flat"))
    assert v.verdict == "inconclusive"
    assert -0.3 < v.details["adagrad_shrink"]["mean"] < -0.1 and v.ci95[1] < 0


def test_verdict_fields_and_json():
    results = traces("decay", "grow")
    v = m2.verdict(results)
    assert v.id == "M2" and v.rule == m2.RULE and v.budget == 0 and v.seeds == 3
    assert v.problems == ["noisy_quadratic", "quadratic_deepobs"]
    assert v.run_keys == sorted(k for r in results.values() for k in r.run_keys())
    assert all(p.kind == "curves" and p.logy for p in v.plots) and len(v.plots) == 2
    json.dumps(v.as_dict())
    assert m2.verdict({}).verdict == "inconclusive"


def test_tiny_run_through_engine_and_store():
    store = Store()
    study = m2.study("noisy_quadratic", True, seeds=2, steps=100)
    result = execute(study, store)
    assert all(len(r.trace["effective_step"]) == 100 for r in result.runs)
    v = m2.verdict({study.key: result})
    assert v.verdict in VERDICTS and v.details["pairs"] == 6
    assert v.details["per_problem"]["noisy_quadratic"]["adagrad"]["shrink_decades"] < 0
