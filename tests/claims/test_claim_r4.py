"""R4 (RMSprop sometimes better than Adam): the verdict rule on fabricated tuned reruns."""

from __future__ import annotations

import synthetic_tuned as syn
from optarena.claims import r4_rmsprop_vs_adam as r4
from optarena.claims import suite


def results(ratios: list[float], jitter: float, n: int = 6) -> dict:
    """Per problem, tuned RMSprop's loss = ratio * tuned Adam's (seed by seed, with `jitter`)."""
    out = {}
    for i, ratio in enumerate(ratios):
        problem = f"p{i}"
        adam, rmsprop = syn.paired(0.2, ratio, 0.3, n, seed=i, jitter=jitter)
        name = suite.study_name("tuned", problem, True)
        out[name] = syn.study_result(name, problem, tuning={"adam": [0.3] * 12, "rmsprop": [0.3] * 12},
                                     tuned={"adam": adam, "rmsprop": rmsprop})
    return out


def test_decide():
    assert r4.decide([(-0.2, -0.1), (0.05, 0.2), (-0.1, 0.1)], 5) == "supported"
    assert r4.decide([(-0.2, -0.1), (-0.3, -0.05), (-0.1, 0.1)], 5) == "contradicted"
    assert r4.decide([(-0.2, -0.1), (-0.1, 0.1), (-0.1, 0.1)], 5) == "inconclusive"
    assert r4.decide([(0.05, 0.2)], 2) == "inconclusive"
    assert r4.decide([], 10) == "inconclusive"


def test_rmsprop_better_on_one_problem_supports():
    v = r4.verdict(results([1.0, 0.6, 1.0], jitter=0.02))
    assert v.verdict == "supported"
    assert v.details["rmsprop_better_on"] == ["p1"]
    assert v.effect > 30 and v.ci95[0] <= v.effect <= v.ci95[1] and v.ci95[0] > 0


def test_adam_better_everywhere_contradicts():
    v = r4.verdict(results([1.5, 1.4, 1.3], jitter=0.02))
    assert v.verdict == "contradicted"
    assert v.details["rmsprop_better_on"] == [] and len(v.details["adam_better_on"]) == 3
    assert v.effect < 0


def test_noise_swamps_a_small_effect():
    v = r4.verdict(results([0.97, 1.02, 1.0], jitter=0.5))
    assert v.verdict == "inconclusive"


def test_bonferroni_adjusted_intervals_are_wider():
    v = r4.verdict(results([0.9, 1.0, 1.0], jitter=0.1))
    assert v.details["confidence_per_problem"] > 0.95
    for d in v.details["per_problem"].values():
        assert d["ci_adjusted"][0] <= d["ci95"][0] and d["ci_adjusted"][1] >= d["ci95"][1]


def test_verdict_fields():
    v = r4.verdict(results([1.0, 0.6, 1.0], jitter=0.02))
    assert v.id == "R4" and v.rule == r4.RULE and v.effect_name
    assert v.problems == ["p0", "p1", "p2"] and v.budget == 12 and v.seeds == 6
    assert v.run_keys and {p.kind for p in v.plots} == {"bars", "curves"}


def test_too_few_seeds_is_inconclusive():
    v = r4.verdict(results([0.5, 0.5, 0.5], jitter=0.01, n=2))
    assert v.verdict == "inconclusive" and v.seeds == 2


def test_diverged_rerun_scores_its_starting_loss():
    name = suite.study_name("tuned", "p", True)
    r = syn.study_result(name, "p", tuned={"adam": [float("inf"), 0.2, 0.2], "rmsprop": [0.1, 0.1, 0.1]})
    assert list(suite.seed_losses(r, "adam", "tuned")) == [syn.START_LOSS, 0.2, 0.2]


def test_a_diverged_rerun_is_ranked_not_scored():
    """A diverged tuned-Adam rerun counts as a loss to RMSprop by its rank alone: the paired log
    ratio is +inf for that seed, the median over seeds stays finite, and the counts say so."""
    import math

    import numpy as np

    d = suite.paired_log_ratios(np.array([math.inf, 1.0, math.inf, 2.0]), np.array([0.5, 2.0, math.inf, math.inf]))
    assert d.tolist() == [math.inf, math.log(0.5), 0.0, -math.inf]
    out = results([1.0, 1.0, 1.0], jitter=0.02, n=10)
    name = suite.study_name("tuned", "p0", True)
    out[name].tuned["adam"][0] = syn.run("p0", "adam", math.inf, 1)  # Adam diverged on seed 1 of 10
    v = r4.verdict(out)
    p0 = v.details["per_problem"]["p0"]
    assert p0["diverged_pairs"] == 1 and math.isfinite(p0["log_ratio"]) and abs(p0["log_ratio"]) < 0.05
    assert v.revisions and "ranked" in v.revisions[-1]["change"] and "ranked" in v.rule
