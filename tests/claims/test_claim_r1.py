"""R1 (SGD needs more tuning): the verdict rule on fabricated grids, the study design, and one tiny
end-to-end run through the engine and the store."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import synthetic_tuned as syn
from optarena import problems, tuning
from optarena.claims import r1_sgd_tuning as r1
from optarena.claims import r4_rmsprop_vs_adam, r5_adam_default, r6_adadelta, suite
from optarena.store import Store
from optarena.study import Setup, TunedStudy, execute

ROOT = Path(__file__).resolve().parents[2]
ARTICLE = next((p for p in (ROOT / "shared", ROOT.parent / "shared") if p.exists()), ROOT / "shared") / "seed" / "optimizers-article.zh.txt"
OTHERS = [o for o in suite.OPTIMIZERS if o != "sgd"]


def grid_results(sgd_sharpness: list[float], other_sharpness: float, quick: bool = True, seeds: int = 3,
                 spread: float = 0.002) -> dict:
    """One tuned study per problem (tuning grid on `seeds` seeds); SGD's loss bowl over lr has the
    given sharpness per problem."""
    lrs = syn.lr_grid(12)
    out = {}
    for i, s in enumerate(sgd_sharpness):
        problem = f"p{i}"
        tuning_losses = {"sgd": syn.bowl(lrs, 0.1, -2, s)}
        tuning_losses.update({o: syn.bowl(lrs, 0.1 + spread * j, -2.5, other_sharpness) for j, o in enumerate(OTHERS)})
        name = suite.study_name("tuned", problem, quick)
        out[name] = syn.study_result(name, problem, tuning=tuning_losses, lrs=lrs, tuning_seeds=seeds, tuning_noise=0.01,
                                     tuned={o: syn.noisy(0.1, 0.05, 3, i) for o in suite.OPTIMIZERS},
                                     defaults={o: syn.noisy(0.2, 0.05, 3, i) for o in suite.OPTIMIZERS})
    return out


def test_decide():
    assert r1.decide(-1.0, (-1.5, -0.5), 6) == "supported"
    assert r1.decide(1.0, (0.5, 1.5), 6) == "contradicted"
    assert r1.decide(0.1, (-0.5, 0.7), 6) == "inconclusive"
    assert r1.decide(-1.0, (-1.5, -0.5), 5) == "inconclusive"  # fewer than 6 problems
    assert r1.decide(-1.0, (-1.5, -0.5), 6, n_seeds=2) == "inconclusive"  # fewer than 3 tuning seeds
    assert r1.decide(math.nan, (math.nan, math.nan), 6) == "inconclusive"
    assert r1.decide(1e-16, (1e-16, 4e-16), 6) == "inconclusive"  # float noise is no effect


def test_narrow_sgd_range_supports():
    v = r1.verdict(grid_results([20.0] * 6, 0.1))
    assert v.verdict == "supported"
    assert v.effect < 0 and v.ci95[1] < 0


def test_wide_sgd_range_contradicts():
    v = r1.verdict(grid_results([0.01] * 6, 5.0))
    assert v.verdict == "contradicted"
    assert v.effect > 0 and v.ci95[0] > 0


def test_mixed_problems_are_inconclusive():
    v = r1.verdict(grid_results([20.0, 0.01, 0.3, 20.0, 0.01, 0.3], 0.3))
    assert v.verdict == "inconclusive"
    assert v.ci95[0] <= 0 <= v.ci95[1]


def test_three_problems_cannot_decide():
    v = r1.verdict(grid_results([20.0] * 3, 0.1))
    assert v.verdict == "inconclusive" and v.effect < 0 and "cannot decide" in v.summary


def test_widths_are_measured_against_the_best_of_all_optimizers():
    (result,) = grid_results([0.01], 0.01, spread=0.01).values()
    w = r1.widths(result, seed=0)
    # Every optimizer's bowl is wide, but only those whose best is within 20% of the overall best
    # (0.1) have good points at all: bests 0.1 + 0.01 j for j = 0..5, so j >= 2 (0.12+) have none.
    assert w["sgd"] > 0 and w[OTHERS[0]] > 0 and w[OTHERS[-1]] == 0.0


def test_hierarchical_interval_widens_with_seed_noise():
    tight = r1.hierarchical_ci([np.array([-1.0, -1.0, -1.0])] * 6)
    loose = r1.hierarchical_ci([np.array([-2.0, 0.0, -1.0])] * 6)
    assert tight == (-1.0, -1.0) and loose[0] < -1.0 < loose[1]


def test_verdict_fields_and_plots():
    v = r1.verdict(grid_results([20.0] * 6, 0.1))
    assert v.id == "R1" and v.rule == r1.RULE and v.effect_name
    assert v.ci95[0] <= v.effect <= v.ci95[1]
    assert v.problems == [f"p{i}" for i in range(6)] and v.budget == 12 and v.seeds == 3  # the tuning seeds
    assert v.run_keys and len(v.run_keys) == len(set(v.run_keys))
    assert {p.kind for p in v.plots} == {"curves", "bars"}
    assert f"{abs(v.effect):.2f} decades" in v.summary
    assert set(v.details["per_problem"]["p0"]["widths"]) == set(suite.OPTIMIZERS)


def test_diverged_runs_never_count_as_good():
    lrs = syn.lr_grid(12)
    losses = syn.bowl(lrs, 0.1, -2, 0.001)  # every lr within the margin
    losses[-4:] = [math.inf] * 4
    name = suite.study_name("tuned", "p", True)
    result = syn.study_result(name, "p", tuning={"sgd": losses}, lrs=lrs, tuned={"sgd": [0.1, 0.1, 0.1]})
    all_finite = syn.study_result(name, "p", tuning={"sgd": syn.bowl(lrs, 0.1, -2, 0.001)}, lrs=lrs, tuned={"sgd": [0.1] * 3})
    assert suite.lr_width(all_finite, "sgd", r1.MARGIN) == pytest.approx(12 * 7 / 11)
    assert suite.lr_width(result, "sgd", r1.MARGIN) == pytest.approx(8 * 7 / 11)


def test_empty_results_are_inconclusive():
    v = r1.verdict({})
    assert v.verdict == "inconclusive" and v.problems == []


def test_text_is_quoted_from_the_article():
    if not ARTICLE.exists():
        pytest.skip(f"article not found at {ARTICLE}")
    article = ARTICLE.read_text(encoding="utf-8")
    from optarena.claims import r7_nadam_deep

    for claim in (r1, r4_rmsprop_vs_adam, r5_adam_default, r6_adadelta, r7_nadam_deep):
        assert claim.TEXT_ZH in article, claim.ID


def _lrs(study: TunedStudy) -> list[float]:
    points = tuning.grid(tuning.space(study.optimizers[0], study.tune, study.lr_range, study.convention), study.budget)
    return sorted({p["lr"] for p in points})


@pytest.mark.parametrize("quick", [True, False])
def test_design_meets_the_protocol(quick):
    studies = r1.design(quick)
    assert [s.problem for s in studies] == list(suite.QUICK_PROBLEMS if quick else suite.FULL_PROBLEMS)
    for s in studies:
        assert s.optimizers == suite.OPTIMIZERS and s.convention == "article" and s.method == "grid"
        assert str(s.key) == f"tuned/{s.problem}/{'quick' if quick else 'full'}"
        assert s.problem in problems.names()
        assert s.defaults
        lrs = _lrs(s)
        if quick:
            assert s.budget == 12 and s.seeds == 3
        else:
            assert s.budget >= 36 and len(lrs) >= 36 and s.seeds >= 10
            assert lrs[0] == pytest.approx(1e-5) and lrs[-1] == pytest.approx(1e2)
    if not quick:
        assert {"quadratic_deepobs", "noisy_quadratic", "breast_cancer_logreg", "digits_mlp", "mnist_mlp"} <= {s.problem for s in studies}


@pytest.mark.parametrize("quick", [True, False])
def test_claims_share_the_same_study_objects(quick):
    first = r1.design(quick)
    for claim in (r4_rmsprop_vs_adam, r6_adadelta):
        assert all(a is b for a, b in zip(first, claim.design(quick)))  # R6 adds the budget sweep after them
    # R5's budget sweep reuses the shared study at 1x.
    shared = {s.key: s for s in first}
    assert all(shared[s.key] is s for s in r5_adam_default.design(quick) if s.key in shared)


def test_end_to_end_on_a_tiny_study():
    """The plumbing: engine -> store -> StudyResult -> verdict (one problem: inconclusive by rule)."""
    study = TunedStudy(suite.study_name("tuned", "noisy_quadratic", True), ("sgd", "adam"), budget=4, seeds=2,
                       setup=Setup(30))
    with Store() as store:
        result = execute(study, store)
        assert len(store.missing([r.trial for r in result.all_runs()])) == 0
    v = r1.verdict({study.key: result})
    assert v.verdict == "inconclusive"
    assert v.problems == ["noisy_quadratic"] and v.budget == 4 and v.seeds == 1
    assert set(v.run_keys) == set(result.run_keys()) and len(v.run_keys) == study.n_runs
    widths = v.details["per_problem"]["noisy_quadratic"]["widths"]
    assert all(0 <= w <= 7 + 1e-9 for w in widths.values())


def test_verdicts_serialise_to_json():
    import json

    v = r1.verdict(grid_results([20.0, 20.0, 20.0], 0.1))
    json.dumps(v.as_json(), allow_nan=False)
