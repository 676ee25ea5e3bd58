"""R8 (FTRL for large linear models): the rule on fabricated results, the design, the translation to
Keras's Ftrl, and R8's own runner on a small CTR-like problem (store, resume, Keras agreement)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import synthetic_mech as syn
from optarena import problems
from optarena.claims import r8_ftrl_large_linear as r8
from optarena.claims.base import VERDICTS
from optarena.store import Store
from optarena.study import execute
from test_claim_m1 import quoted

GOOD = {
    "ftrl": {"val_loss": 0.526, "auc": 0.749, "nonzero": 2500.0},
    "adagrad": {"val_loss": 0.527, "auc": 0.748, "nonzero": 29000.0},
    "sklearn_sgd_l1": {"val_loss": 0.535, "auc": 0.740, "nonzero": 20000.0},
    "keras_ftrl": {"val_loss": 0.526, "auc": 0.749, "nonzero": 2500.0},
}


def fabricated(metrics: dict, seeds=(1, 2, 3), keras_seeds=(1,), noise: float = 0.0001) -> dict:
    """R8's two sweeps (tuning grid on seed 0, reruns) with chosen metrics, as the runner returns them."""
    rng = np.random.default_rng(0)
    study = r8.study(True)
    reruns = {}
    for m in r8.METHODS:
        reruns[m] = []
        for s in (keras_seeds if m == "keras_ftrl" else seeds):
            shift = noise * rng.standard_normal()
            final = {**metrics[m], "val_loss": metrics[m]["val_loss"] + shift, "auc": metrics[m]["auc"] - shift,
                     "n_train": 20000.0, "train_seconds": 0.1}
            if m == "keras_ftrl":
                final = {**reruns["ftrl"][list(seeds).index(s)].final, **{k: v for k, v in metrics[m].items() if k == "nonzero"}}
                final["val_loss"] += metrics[m]["val_loss"] - metrics["ftrl"]["val_loss"]
            reruns[m].append(syn.run(r8.PROBLEM, r8.RUNNER_NAMES[m], {"lr": 0.3, "n_train": 20000}, s, study.steps,
                                     convention=r8.CONVENTIONS[m], final=final))
    tuning = [syn.run(r8.PROBLEM, r8.RUNNER_NAMES[m], {**hp, "n_train": 20000}, 0, study.steps, convention=r8.CONVENTIONS[m],
                      final={"val_loss": 0.53 + 0.001 * i, "nonzero": 1000.0 * (i + 1), "auc": 0.74})
              for m in r8.TUNED for i, hp in enumerate(r8.GRIDS[m])]
    rerun_runs = [r for m in r8.METHODS for r in reruns[m]]
    return {study.key: syn.fixed(study.key, r8.PROBLEM, tuning),
            r8.rerun_key(True): syn.fixed(r8.rerun_key(True), r8.PROBLEM, rerun_runs)}


def test_text_is_quoted_from_the_article():
    quoted(r8.TEXT_ZH)


def test_design_lists_the_tuning_grid_as_fixed_trials():
    (s,) = r8.design(True)
    assert str(s.key) == "R8/sparse_ctr/quick" and s.problem == "sparse_ctr"
    assert s.steps == r8.steps_for(20_000, 1) == 157
    assert len(s.trials) == 15 + 6 + 8 and {t.seed for t in s.trials} == {0}
    assert {(t.optimizer, t.convention) for t in s.trials} == {("sparse_ftrl", "article"), ("sparse_adagrad", "article"),
                                                                ("sklearn_sgd_l1", "sklearn")}
    assert {t.hparams["l1"] for t in s.trials if t.optimizer == "sparse_ftrl"} == {0.0, 0.1, 0.3, 1.0, 3.0}  # l1 = 0 too
    assert all(t.hparams["n_train"] == 20_000 for t in s.trials)
    assert r8.planned_runs(True) == 29 + 3 * 3 + 1
    assert [len(r8.GRIDS[m]) for m in r8.TUNED] == [15, 6, 8]  # fronts, not equal tuning budgets
    (f,) = r8.design(False)
    assert f.steps == r8.steps_for(100_000, 1) and f.key.mode == "full"


def test_keras_translation():
    k = r8.keras_hparams({"lr": 0.3, "l1": 1.0, "l2": 0.5, "beta": 1.0})
    assert k == {"learning_rate": 0.3, "learning_rate_power": -0.5, "initial_accumulator_value": 0.0,
                 "l1_regularization_strength": 1.0, "l2_regularization_strength": 0.25, "beta": 1.0}


@pytest.mark.parametrize("gap, auc, sparsity, keras, n, expected", [
    ((-0.0005, 0.0008), (-0.002, 0.0005), True, True, 3, "supported"),
    ((0.002, 0.005), (-0.002, 0.001), True, True, 3, "contradicted"),
    ((-0.0005, 0.0008), (0.002, 0.003), True, True, 3, "contradicted"),
    ((-0.0005, 0.0008), (-0.002, 0.0005), False, True, 3, "inconclusive"),  # not on the Pareto front
    ((-0.0005, 0.0008), (-0.002, 0.0005), None, True, 3, "inconclusive"),  # front unknown
    ((-0.0005, 0.0008), (-0.002, 0.0005), True, False, 3, "inconclusive"),  # Keras disagrees
    ((-0.0005, 0.0008), (-0.002, 0.0005), True, None, 3, "inconclusive"),  # Keras not run
    ((0.0, 0.002), (-0.002, 0.001), True, True, 3, "inconclusive"),  # 1% would have passed; 0.1% does not
    ((-0.0005, 0.0008), (-0.002, 0.0005), True, True, 1, "inconclusive"),
])
def test_decide(gap, auc, sparsity, keras, n, expected):
    assert r8.decide(gap, auc, sparsity, keras, n) == expected


def test_verdict_supported():
    v = r8.verdict(fabricated(GOOD))
    assert v.verdict == "supported" and abs(v.effect) < 0.01
    assert v.details["best_competitor_log_loss"] == "adagrad"
    assert v.details["nonzero_ratio_ftrl_over_adagrad"]["ratio"] == pytest.approx(2500 / 29000)


def test_verdict_contradicted_when_ftrl_loses_on_log_loss():
    v = r8.verdict(fabricated({**GOOD, "ftrl": {**GOOD["ftrl"], "val_loss": 0.55}, "keras_ftrl": {**GOOD["keras_ftrl"], "val_loss": 0.55}}))
    assert v.verdict == "contradicted" and v.ci95[0] > r8.MARGIN


def test_verdict_inconclusive_when_keras_disagrees():
    v = r8.verdict(fabricated({**GOOD, "keras_ftrl": {**GOOD["keras_ftrl"], "val_loss": 0.54}}))
    assert v.verdict == "inconclusive" and "DISAGREES" in v.summary


def test_verdict_fields_and_json():
    res = fabricated(GOOD)
    v = r8.verdict(res)
    assert v.id == "R8" and v.rule == r8.RULE and v.problems == ["sparse_ctr"] and v.budget == 15 and v.seeds == 3
    assert v.run_keys == sorted(set(res[r8.name(True)].run_keys()) | set(res[r8.rerun_key(True)].run_keys()))
    assert [p.kind for p in v.plots] == ["bars", "bars", "bars", "curves", "curves"]
    assert v.plots[0].categories == list(r8.METHODS)
    json.dumps(v.as_dict())
    assert r8.verdict({}).verdict == "inconclusive"


def test_runs_on_a_small_problem_store_resume_and_agree_with_keras(monkeypatch):
    """Both stages through the one executor and the registered baseline runners."""
    from optarena.problems import sparse_baselines

    try:
        sparse_baselines._keras()  # imports keras on the torch backend, as the runner does
    except Exception as e:  # pragma: no cover - depends on the environment
        pytest.skip(f"keras with the torch backend is not available: {e}")
    small = problems.get("sparse_ctr", n_features=2**12, n_train=1500, n_val=500)
    settings = {"n_train": 1000, "seeds": 2, "keras_seeds": 1}
    store = Store()
    counted = []

    def run_all():
        results = {}
        first = r8.study(True, settings)
        results[first.key] = execute(first, store, progress=counted.append, problem=small)
        for s in r8.followup(True, results, settings):
            results[s.key] = execute(s, store, progress=counted.append, problem=small)
        return results

    out = run_all()
    assert set(out) == {r8.name(True), r8.rerun_key(True)}
    assert len(store) == 29 + 3 * 2 + 1 and sum(counted) == len(store)
    result = r8.assemble(out[r8.name(True)], out[r8.rerun_key(True)])
    for m in r8.METHODS:
        for r in result.tuned[m]:
            assert r.status == "done", r.error
            assert {"val_loss", "auc", "nonzero"} <= set(r.final) and r.final["n_train"] == 1000
    ftrl, keras = result.tuned["ftrl"][0], result.tuned["keras_ftrl"][0]
    assert keras.trial.hparams["learning_rate"] == result.best["ftrl"]["lr"]
    assert keras.final["val_loss"] == pytest.approx(ftrl.final["val_loss"], rel=1e-5)
    assert keras.final["nonzero"] == ftrl.final["nonzero"]
    assert ftrl.final["nonzero"] <= result.tuned["adagrad"][0].final["nonzero"]  # l1 may be 0 on this tiny problem
    v = r8.verdict(out)
    assert v.verdict in VERDICTS and v.details["keras_agreement"]

    def no_training(*args, **kwargs):
        raise AssertionError("a stored run was trained again")

    monkeypatch.setattr(sparse_baselines, "train", no_training)
    again = run_all()
    assert {k: r.run_keys() for k, r in again.items()} == {k: r.run_keys() for k, r in out.items()}


def test_pareto_front_and_the_sparsity_condition():
    assert r8.pareto_front([(10, 0.5), (5, 0.6), (20, 0.55), (30, 0.4), (1, float("inf"))]) == [(5, 0.6), (10, 0.5), (30, 0.4)]
    res = fabricated(GOOD)
    result = r8.assemble(res[r8.name(True)], res[r8.rerun_key(True)])
    ok, info = r8.on_front(result)
    assert ok is True and info["ftrl_chosen"]["nonzero"] == 1000.0
    # An SGD-L1 setting as sparse as FTRL's chosen one and clearly better: FTRL is off the front.
    better = next(r for r in result.tuning["sklearn_sgd_l1"])
    better.final.update({"nonzero": 500.0, "val_loss": 0.50})
    assert r8.on_front(result)[0] is False
