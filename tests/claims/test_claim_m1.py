"""M1 (momentum keeps the update direction consistent): the rule on fabricated valley paths, the study
design, the shared trajectory study, and one tiny run through the engine and the store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import synthetic_mech as syn
from optarena.claims import m1_momentum_direction as m1
from optarena.claims import trajectories
from optarena.claims.base import VERDICTS
from optarena.store import Store
from optarena.study import StudyKey, Sweep, execute
from optarena.trial import Trial

ROOT = Path(__file__).resolve().parents[2]
ARTICLE = next((p for p in (ROOT / "shared", ROOT.parent / "shared") if p.exists()), ROOT / "shared") / "seed" / "optimizers-article.zh.txt"


def quoted(text: str) -> None:
    if not ARTICLE.exists():
        pytest.skip("the article is not available here")
    assert text in ARTICLE.read_text(encoding="utf-8")


def valley_results(sgd_period, momentum_period, seeds=(1, 2, 3), quick=True, steps=100) -> dict:
    """Every equal-lr SGD / momentum run oscillates across the valley with the given period
    (a dict lr -> period allows one per lr; None: no oscillation)."""
    runs = []
    for lr in m1.learning_rates(quick):
        for s in seeds:
            for optimizer, convention, period in (("sgd", "article", sgd_period), ("momentum", "article", momentum_period),
                                                  ("momentum", "pytorch", 2)):
                p = period.get(lr) if isinstance(period, dict) else period
                hp = {"lr": lr} if optimizer == "sgd" else {"lr": lr, "momentum": m1.BETA}
                runs.append(syn.run(m1.PROBLEM, optimizer, hp, s, steps, convention=convention,
                                    final={"val_loss": 0.1}, trace={"params": syn.valley_path(steps, p)}))
    return {m1.name(quick): syn.fixed(m1.name(quick), m1.PROBLEM, runs, trace=("params",))}


def test_text_is_quoted_from_the_article():
    quoted(m1.TEXT_ZH)


def test_design_equal_learning_rates_in_the_zigzag_regime_and_the_smooth_one_as_secondary():
    studies = m1.design(True)
    assert [str(s.key) for s in studies] == ["M1/narrow_valley/quick", "trajectories/rosenbrock/quick",
                                         "trajectories/narrow_valley/quick"]
    main = studies[0]
    assert main.trace == ("params",) and main.steps == 100
    limit = m1.stability_limit()
    assert limit == pytest.approx(0.02)
    lrs = m1.learning_rates(True)
    assert lrs == pytest.approx([f * limit for f in (0.6, 0.7, 0.8, 0.9)])
    assert all(1 < lr * 100 < 2 for lr in lrs)  # lr * lambda_max in (1, 2): SGD reverses every step
    smooth = m1.learning_rates(True, smooth=True)
    assert all(lr * 100 <= 1 for lr in smooth)
    for lr in lrs + smooth:
        for seed in range(1, m1.SEEDS[True] + 1):
            keys = {(t.optimizer, t.convention) for t in main.trials if t.hparams["lr"] == lr and t.seed == seed}
            assert keys == {("sgd", "article"), ("momentum", "article"), ("momentum", "pytorch")}
    assert all(t.hparams.get("momentum", m1.BETA) == m1.BETA for t in main.trials)
    full = m1.design(False)[0]
    assert len(full.trials) > len(main.trials) and full.steps == 200


def test_trajectories_study_has_all_eight_optimizers():
    for quick in (True, False):
        for s in trajectories.design(quick):
            assert s.trace == ("params",)
            assert sorted(t.optimizer for t in s.trials) == sorted(trajectories.OPTIMIZERS)
            assert len(trajectories.OPTIMIZERS) == 14  # the article's eight and the six contenders
            assert str(s.key) == f"trajectories/{s.problem}/{'quick' if quick else 'full'}"


@pytest.mark.parametrize("ci, n, expected", [
    ((0.1, 0.3), 20, "supported"),
    ((-0.3, -0.1), 20, "contradicted"),
    ((-0.1, 0.2), 20, "inconclusive"),
    ((0.1, 0.3), 3, "inconclusive"),
    ((math.nan, math.nan), 20, "inconclusive"),
])
def test_decide(ci, n, expected):
    assert m1.decide(ci, n) == expected


def test_sign_change_rate_counts_zigzags():
    zig = syn.run(m1.PROBLEM, "sgd", {"lr": 0.01}, 1, 50, final={"val_loss": 1.0},
                  trace={"params": syn.valley_path(50, 2)})
    straight = syn.run(m1.PROBLEM, "sgd", {"lr": 0.01}, 1, 50, final={"val_loss": 1.0},
                       trace={"params": syn.valley_path(50, None)})
    assert m1.sign_change_rate(zig) == pytest.approx(1.0)  # every visible step reverses
    assert m1.sign_change_rate(straight) == 0.0
    assert m1.direction_consistency(straight) == pytest.approx(1.0, abs=0.01)
    assert m1.direction_consistency(zig) < 0.5
    diverged = syn.run(m1.PROBLEM, "sgd", {"lr": 0.01}, 1, 50, status="diverged", trace={"params": syn.valley_path(50, 2)})
    assert math.isnan(m1.sign_change_rate(diverged))


def test_verdict_supported_when_sgd_zigzags_and_momentum_does_not():
    v = m1.verdict(valley_results(sgd_period=2, momentum_period=20))
    assert v.verdict == "supported" and v.effect > 0 and v.ci95[0] > 0


def test_verdict_contradicted_when_momentum_oscillates_more():
    v = m1.verdict(valley_results(sgd_period=None, momentum_period=10))
    assert v.verdict == "contradicted" and v.effect < 0 and v.ci95[1] < 0


def test_verdict_inconclusive_when_it_depends_on_the_learning_rate():
    lrs = m1.learning_rates(True)
    sgd = {lr: (2 if i % 2 else None) for i, lr in enumerate(lrs)}
    v = m1.verdict(valley_results(sgd_period=sgd, momentum_period=4))
    assert v.verdict == "inconclusive"
    assert v.ci95[0] < 0 < v.ci95[1]


def test_verdict_fields_plots_and_json():
    results = valley_results(2, 20)
    v = m1.verdict(results)
    assert v.id == "M1" and v.claim_zh == m1.TEXT_ZH and v.rule == m1.RULE
    assert v.problems == ["narrow_valley"] and v.budget == 0 and v.seeds == 3
    assert v.effect_name and "per visible step" in v.summary and v.details["kind"] == "mechanism check"
    assert v.run_keys == results[m1.name(True)].run_keys()
    assert {p.kind for p in v.plots} >= {"trajectories", "curves"}
    json.dumps(v.as_dict())


def test_verdict_without_results_is_inconclusive():
    v = m1.verdict({})
    assert v.verdict == "inconclusive" and math.isnan(v.effect)


def test_tiny_run_through_engine_and_store():
    store = Store()
    study = m1.study(True, seeds=2, steps=50)
    result = execute(study, store)
    traj = {s.key: execute(s, store) for s in trajectories.design(True)}
    assert len(store) == len(study.trials) + 2 * len(trajectories.OPTIMIZERS)
    v = m1.verdict({study.key: result, **traj})
    assert v.verdict in VERDICTS
    assert math.isfinite(v.effect) and v.details["pairs"] == 8
    titles = [p.title for p in v.plots]
    assert any("rosenbrock" in t for t in titles) and any("Every optimizer" in t and "narrow_valley" in t for t in titles)
    # Trajectories are 2-D paths on the problem's contour.
    traj_plot = trajectories.plot(traj[trajectories.name("rosenbrock", True)])
    assert traj_plot.contour["minimum"] == [1.0, 1.0] and len(traj_plot.series) == 14
    z = traj_plot.contour["z"]
    assert len(z) == len(traj_plot.contour["y"]) and len(z[0]) == len(traj_plot.contour["x"])


@pytest.mark.parametrize("fraction", [0.6, 0.8, 0.95])
def test_measured_reversal_rate_matches_the_closed_form(fraction):
    """The engine's EMA momentum on the valley reverses theta/pi times per visible step, and SGD on
    every step, in the zig-zag regime (closed form; measured to within 0.02 over 200 steps)."""
    lr = fraction * m1.stability_limit()
    trials = [Trial(m1.PROBLEM, "momentum", "article", {"lr": lr, "momentum": m1.BETA}, seed, 200) for seed in (1, 2, 3)]
    trials += [Trial(m1.PROBLEM, "sgd", "article", {"lr": lr}, seed, 200) for seed in (1, 2, 3)]
    with Store() as store:
        result = execute(Sweep(StudyKey("M1-check", m1.PROBLEM), tuple(trials), trace=("params",)), store)
    momentum = [m1.sign_change_rate(r) for r in result.runs if r.trial.optimizer == "momentum"]
    sgd = [m1.sign_change_rate(r) for r in result.runs if r.trial.optimizer == "sgd"]
    assert sgd == [1.0, 1.0, 1.0]
    predicted = m1.closed_form_reversals(lr, m1.BETA, 100.0)
    assert 0.1 < predicted < 0.15
    assert abs(sum(momentum) / 3 - predicted) < 0.02, (momentum, predicted)


def test_closed_form_limits():
    assert m1.closed_form_reversals(0.02 * 0.8, beta=0.0) == 1.0  # no momentum: SGD, lr*lambda = 1.6
    assert m1.closed_form_reversals(0.02 * 0.3, beta=0.0) == 0.0  # lr*lambda = 0.6: no reversal
    assert m1.closed_form_reversals(0.016, 0.9, ema=False) > m1.closed_form_reversals(0.016, 0.9)  # heavy ball: larger alpha
