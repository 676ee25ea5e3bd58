"""R5 (Adam a good default): the regret rule on fabricated tuned and untuned runs of the budget sweep."""

from __future__ import annotations

import math

import numpy as np
import pytest

import synthetic_mech as mech
import synthetic_tuned as syn
from optarena.claims import r5_adam_default as r5
from optarena.claims import suite
from optarena.claims.base import VERDICTS

BEST = 0.1  # the best tuned loss on every problem (adam's tuned run)


def results(regret_at: dict[int, float], quick: bool = False, n: int = 5, noise: float = 0.01,
            keras_regret: float | None = None) -> dict:
    """The budget sweep: at multiple k Adam's untuned loss is regret_at[k] x the best tuned loss."""
    out = {}
    for p, multiples in suite.BUDGET_SWEEP[quick].items():
        for k in multiples:
            rng = np.random.default_rng(k)
            key = suite.budget_key(p, k, quick)
            shared = rng.standard_normal(n) * noise
            adam = [float(BEST * regret_at[k] * math.exp(s + noise * z)) for s, z in zip(shared, rng.standard_normal(n))]
            tuned = {o: [float(BEST * (1.0 if o == "adam" else 1.3) * math.exp(s)) for s in shared] for o in suite.OPTIMIZERS}
            defaults = {o: [0.5] * n for o in suite.OPTIMIZERS} | {"adam": adam}
            out[key] = syn.study_result(key, p, tuning={o: [1.0] * 12 for o in suite.OPTIMIZERS}, tuned=tuned,
                                        defaults=defaults)
            if keras_regret is not None:
                dkey = r5.defaults_key(out[key].study, quick)
                runs = [mech.run(p, o, {}, s, 10, convention="keras",
                                 final={"val_loss": BEST * keras_regret if o == "adam" else 0.5})
                        for o in suite.OPTIMIZERS for s in range(1, n + 1)]
                out[dkey] = mech.fixed(dkey, p, runs)
    return out


@pytest.mark.parametrize("ci, expected", [((1.0, 1.4), "good"), ((1.6, 2.0), "poor"), ((1.2, 1.8), "undecided"),
                                          ((math.nan, math.nan), "undecided")])
def test_classify(ci, expected):
    assert r5.classify(ci) == expected


def test_decide():
    assert r5.decide(["good", "good"], 5) == "supported"
    assert r5.decide(["poor", "poor", "good"], 5) == "contradicted"
    assert r5.decide(["good", "undecided"], 5) == "inconclusive"
    assert r5.decide(["good"], 5) == "inconclusive"  # one problem
    assert r5.decide(["good", "good"], 2) == "inconclusive"  # two seeds


def test_design_is_the_budget_sweep_with_the_other_conventions_defaults():
    studies = r5.design(True)
    tuned = [s for s in studies if s.key.kind.startswith("tuned")]
    assert [str(s.key) for s in tuned] == ["tuned/digits_mlp/quick", "tuned-x3/digits_mlp/quick"]
    assert tuned[0] is suite.tuned_studies(True)[suite.QUICK_PROBLEMS.index("digits_mlp")]  # shared at 1x
    assert tuned[1].steps == 3 * 500
    sweeps = [s for s in studies if s.key.kind.startswith("R5-defaults")]
    assert len(sweeps) == 2 and {t.convention for s in sweeps for t in s.trials} == {"pytorch", "keras"}
    assert {t.steps for t in sweeps[1].trials} == {1500} and all(not t.hparams for s in sweeps for t in s.trials)
    full = r5.design(False)
    assert {(s.problem, s.steps) for s in full if s.key.kind == "tuned-x10"} == {("digits_mlp", 5000)}


def test_close_to_the_best_tuned_everywhere_supports():
    v = r5.verdict(results({1: 1.1, 3: 1.05, 10: 1.0}))
    assert v.verdict == "supported" and v.effect == pytest.approx(1.05, rel=0.03)
    assert v.details["holds_at_budgets"] == ["1x", "3x"]  # 10x has one problem: the verdict is at 3x
    assert v.ci95[0] <= v.effect <= v.ci95[1] < r5.TAU


def test_far_from_the_best_tuned_contradicts():
    v = r5.verdict(results({1: 3.0, 3: 2.5, 10: 2.0}))
    assert v.verdict == "contradicted" and v.effect > r5.TAU


def test_the_verdict_states_the_budgets_at_which_it_holds():
    v = r5.verdict(results({1: 3.0, 3: 1.1, 10: 1.0}))
    assert v.verdict == "supported"
    assert v.details["holds_at_budgets"] == ["3x"]
    assert v.details["outcome_per_budget_and_convention"]["1x/article"] == "contradicted"
    assert "Supported at 3x" in v.summary


def test_noise_around_tau_is_inconclusive():
    v = r5.verdict(results({1: 1.5, 3: 1.5, 10: 1.5}, noise=0.3))
    assert v.verdict == "inconclusive"


def test_quick_mode_has_one_problem_and_says_so():
    v = r5.verdict(results({1: 1.1, 3: 1.0}, quick=True))
    assert v.verdict == "inconclusive" and "quick mode has 1 problem" in v.summary
    assert v.verdict in VERDICTS and v.problems == ["digits_mlp"]


def test_other_conventions_defaults_are_reported_not_deciding():
    v = r5.verdict(results({1: 1.1, 3: 1.05, 10: 1.0}, keras_regret=4.0))
    assert v.verdict == "supported"
    rows = v.details["per_budget"]["3x"]
    assert all(row["conventions"]["keras"]["regret"] == pytest.approx(4.0, rel=0.05) for row in rows.values())
    assert v.details["outcome_per_budget_and_convention"]["3x/keras"] == "contradicted"
    assert v.details["rho"]["3x"]["keras"]["1.5"] == 0.0 and v.details["rho"]["3x"]["article"]["1.5"] == 1.0


def test_verdict_without_results_is_inconclusive():
    v = r5.verdict({})
    assert v.verdict == "inconclusive" and math.isnan(v.effect)
