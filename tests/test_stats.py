"""Tests of optarena.stats against scipy.stats and hand-computed results."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from optarena import stats

N_BIG = 20_000


def scipy_interval(data, statistic=np.mean, method="percentile", confidence=0.95):
    res = scipy.stats.bootstrap((np.asarray(data),), statistic, confidence_level=confidence,
                                n_resamples=N_BIG, method=method, random_state=12345)
    return res.confidence_interval.low, res.confidence_interval.high


def assert_close_interval(ours, theirs, rel=0.02):
    width = theirs[1] - theirs[0]
    assert abs(ours[0] - theirs[0]) <= rel * width, (ours, theirs)
    assert abs(ours[1] - theirs[1]) <= rel * width, (ours, theirs)


# -- bootstrap intervals ----------------------------------------------------------------------------


@pytest.mark.parametrize("distribution", ["normal", "exponential"])
def test_bootstrap_ci_matches_scipy_percentile(distribution):
    rng = np.random.default_rng(7)
    x = getattr(rng, distribution)(size=40)
    ours = stats.bootstrap_ci(x, n_resamples=N_BIG, seed=1)
    assert_close_interval(ours, scipy_interval(x))


def test_bootstrap_ci_matches_scipy_at_other_confidence_and_statistic():
    x = np.random.default_rng(3).lognormal(size=30)
    ours = stats.bootstrap_ci(x, np.std, confidence=0.8, n_resamples=N_BIG, seed=2)
    assert_close_interval(ours, scipy_interval(x, np.std, confidence=0.8))


@pytest.mark.parametrize("statistic", [np.mean, np.median])
def test_bca_matches_scipy(statistic):
    x = np.random.default_rng(11).exponential(size=30)
    ours = stats.bootstrap_ci(x, statistic, n_resamples=N_BIG, seed=5, method="bca")
    assert_close_interval(ours, scipy_interval(x, statistic, method="BCa"), rel=0.03)


def test_statistic_without_axis_argument_is_applied_per_resample():
    x = np.random.default_rng(0).normal(size=15)
    vectorised = stats.bootstrap_ci(x, np.mean, n_resamples=500, seed=4)
    per_resample = stats.bootstrap_ci(x, lambda v: float(np.mean(v)), n_resamples=500, seed=4)
    assert vectorised == pytest.approx(per_resample, rel=1e-12)


def test_bootstrap_ci_is_deterministic_for_a_seed():
    x = np.random.default_rng(0).normal(size=20)
    assert stats.bootstrap_ci(x, seed=3) == stats.bootstrap_ci(list(x), seed=3)
    assert stats.bootstrap_ci(x, seed=3) != stats.bootstrap_ci(x, seed=4)


def test_bootstrap_ci_coverage_of_the_true_mean():
    rng = np.random.default_rng(2024)
    hits = 0
    for rep in range(200):
        x = rng.normal(loc=3.0, scale=2.0, size=30)
        low, high = stats.bootstrap_ci(x, n_resamples=2000, seed=rep)
        hits += low <= 3.0 <= high
    assert 0.88 <= hits / 200 <= 0.99


def test_one_value_nan_and_bad_arguments():
    assert stats.bootstrap_ci([2.5]) == (2.5, 2.5)
    assert stats.mean_ci([2.5]) == (2.5, 2.5, 2.5)
    with pytest.raises(ValueError, match="NaN"):
        stats.bootstrap_ci([1.0, np.nan, 2.0])
    assert stats.bootstrap_ci([1.0, np.nan, 1.0], nan_policy="omit") == (1.0, 1.0)
    x = [1.0, 2.0, 4.0, 3.0]
    omitted = stats.bootstrap_ci(x + [np.nan], nan_policy="omit", n_resamples=300)
    assert omitted == stats.bootstrap_ci(x, n_resamples=300)
    with pytest.raises(ValueError, match="empty"):
        stats.bootstrap_ci([])
    with pytest.raises(ValueError, match="empty"):
        stats.bootstrap_ci([np.nan], nan_policy="omit")
    with pytest.raises(ValueError, match="confidence"):
        stats.bootstrap_ci(x, confidence=95)
    with pytest.raises(ValueError, match="method"):
        stats.bootstrap_ci(x, method="BCA!")
    with pytest.raises(ValueError, match="nan_policy"):
        stats.bootstrap_ci(x, nan_policy="propagate")


def test_mean_ci():
    x = np.random.default_rng(1).normal(size=25)
    mean, low, high = stats.mean_ci(x, n_resamples=2000)
    assert mean == pytest.approx(x.mean())
    assert (low, high) == stats.bootstrap_ci(x, n_resamples=2000)


# -- differences and ratios -------------------------------------------------------------------------


def test_paired_difference_matches_scipy_on_the_differences():
    rng = np.random.default_rng(5)
    seed_effect = rng.normal(scale=5.0, size=25)
    a = seed_effect + rng.normal(size=25) + 0.5
    b = seed_effect + rng.normal(size=25)
    out = stats.paired_difference(a, b, n_resamples=N_BIG)
    assert out["n"] == 25
    assert out["mean"] == pytest.approx(np.mean(a - b))
    assert out["ci"] == out["ci95"]
    assert_close_interval(out["ci95"], scipy_interval(a - b))
    # Pairing removes the shared seed effect, so the unpaired interval is much wider.
    unpaired = stats.unpaired_difference(a, b, n_resamples=5000)
    assert unpaired["ci95"][1] - unpaired["ci95"][0] > 3 * (out["ci95"][1] - out["ci95"][0])


def test_paired_difference_other_confidence_and_errors():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=20), rng.normal(size=20)
    out = stats.paired_difference(a, b, confidence=0.5, n_resamples=2000)
    assert out["confidence"] == 0.5
    assert out["ci95"][0] < out["ci"][0] < out["ci"][1] < out["ci95"][1]
    with pytest.raises(ValueError, match="equal lengths"):
        stats.paired_difference([1.0, 2.0], [1.0])
    a[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        stats.paired_difference(a, b)
    assert stats.paired_difference(a, b, nan_policy="omit", n_resamples=500)["n"] == 19


def test_unpaired_difference_matches_scipy_two_sample_percentile():
    rng = np.random.default_rng(8)
    a, b = rng.normal(1.0, 1.0, size=30), rng.normal(0.0, 2.0, size=20)
    out = stats.unpaired_difference(a, b, n_resamples=N_BIG)
    assert (out["n_a"], out["n_b"]) == (30, 20)
    assert out["mean"] == pytest.approx(a.mean() - b.mean())
    res = scipy.stats.bootstrap((a, b), lambda x, y, axis: x.mean(axis) - y.mean(axis),
                                n_resamples=N_BIG, method="percentile", random_state=1)
    assert_close_interval(out["ci95"], (res.confidence_interval.low, res.confidence_interval.high))


def test_ratio_ci():
    rng = np.random.default_rng(9)
    a, b = rng.uniform(2.0, 4.0, size=40), rng.uniform(0.9, 1.1, size=40)
    out = stats.ratio_ci(a, b, n_resamples=N_BIG)
    assert out["ratio"] == pytest.approx(a.mean() / b.mean())
    assert out["ci"][0] < out["ratio"] < out["ci"][1]
    res = scipy.stats.bootstrap((a, b), lambda x, y, axis: x.mean(axis) / y.mean(axis),
                                n_resamples=N_BIG, method="percentile", random_state=1)
    assert_close_interval(out["ci95"], (res.confidence_interval.low, res.confidence_interval.high))
    assert stats.ratio_ci([2.0, 2.0], [1.0])["ci"] == (2.0, 2.0)
    with pytest.raises(ValueError, match="mean\\(b\\) is 0"):
        stats.ratio_ci([1.0, 2.0], [-1.0, 1.0])


def test_separable():
    rng = np.random.default_rng(10)
    base = rng.normal(size=20)
    assert stats.separable(base + 1.0, base, n_resamples=2000)
    assert stats.separable(base, base + 1.0, n_resamples=2000)
    assert not stats.separable(base + rng.normal(scale=0.1, size=20), base, n_resamples=2000)
    assert not stats.separable(rng.normal(size=10), rng.normal(size=15), paired=False, n_resamples=2000)
    assert stats.separable(rng.normal(size=10) + 5, rng.normal(size=15), paired=False, n_resamples=2000)


# -- performance profiles and ranks -----------------------------------------------------------------


def test_performance_profile_hand_computed():
    costs = {
        "A": [1.0, 2.0, 4.0, np.inf],
        "B": [2.0, 2.0, 1.0, 5.0],
        "C": [4.0, np.nan, 2.0, 10.0],
    }
    # Ratios by hand:   A: 1, 1, 4, inf    B: 2, 1, 1, 1    C: 4, inf, 2, 2
    ratios = stats.performance_ratios(costs)
    np.testing.assert_array_equal(ratios["A"], [1, 1, 4, np.inf])
    np.testing.assert_array_equal(ratios["B"], [2, 1, 1, 1])
    np.testing.assert_array_equal(ratios["C"], [4, np.inf, 2, 2])
    taus = [1.0, 1.5, 2.0, 3.0, 4.0, 100.0]
    rho = stats.performance_profile(costs, taus)
    np.testing.assert_array_equal(rho["A"], [0.5, 0.5, 0.5, 0.5, 0.75, 0.75])
    np.testing.assert_array_equal(rho["B"], [0.75, 0.75, 1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(rho["C"], [0.0, 0.0, 0.5, 0.5, 0.75, 0.75])


def test_performance_profile_all_failed_problem_and_errors():
    rho = stats.performance_profile({"A": [1.0, np.inf], "B": [2.0, np.nan]}, [1.0, 10.0])
    np.testing.assert_array_equal(rho["A"], [0.5, 0.5])
    np.testing.assert_array_equal(rho["B"], [0.0, 0.5])
    with pytest.raises(ValueError, match="positive"):
        stats.performance_profile({"A": [1.0, 0.0], "B": [1.0, 1.0]}, [1.0])
    with pytest.raises(ValueError, match="one cost per problem"):
        stats.performance_profile({"A": [1.0, 2.0], "B": [1.0]}, [1.0])


def test_performance_profile_monotone_and_best_reaches_one():
    rng = np.random.default_rng(12)
    costs = {s: rng.lognormal(size=50) for s in "ABCD"}
    costs["best"] = np.minimum.reduce(list(costs.values())) * 0.99
    taus = np.logspace(0, 3, 40)
    rho = stats.performance_profile(costs, taus)
    for s, r in rho.items():
        assert np.all(np.diff(r) >= 0), s
        assert r[-1] == 1.0, s
    assert rho["best"][0] == 1.0


def test_rank_average_matches_scipy_rankdata():
    rng = np.random.default_rng(13)
    table = {s: rng.integers(0, 4, size=30).astype(float) for s in "ABCDE"}  # many ties
    names = list(table)
    ranks = np.column_stack([scipy.stats.rankdata([table[s][p] for s in names]) for p in range(30)])
    expected = dict(zip(names, ranks.mean(axis=1)))
    assert stats.rank_average(table) == pytest.approx(expected)
    higher = stats.rank_average(table, lower_is_better=False)
    assert higher == pytest.approx({s: len(names) + 1 - r for s, r in expected.items()})


def test_rank_average_nan_ranks_last():
    assert stats.rank_average({"A": [np.nan, 1.0], "B": [5.0, 2.0], "C": [np.nan, 3.0]}) == {
        "A": (2.5 + 1) / 2, "B": (1 + 2) / 2, "C": (2.5 + 3) / 2,
    }


# -- learning-rate width ----------------------------------------------------------------------------


LRS = np.logspace(-5, 2, 36)  # spacing 0.2 decades


def v_shaped(lrs, best_log10=-2.0):
    return np.abs(np.log10(lrs) - best_log10) + 1.0


def test_good_lr_width_of_a_v_shaped_curve():
    # best loss 1 at lr 1e-2; loss <= 1.5 for |log10 lr + 2| <= 0.5: grid points -2.4 .. -1.6 (5).
    mask = stats.good_lr_mask(LRS, v_shaped(LRS), margin=0.5)
    np.testing.assert_array_equal(np.flatnonzero(mask), [13, 14, 15, 16, 17])
    assert stats.good_lr_width(LRS, v_shaped(LRS), margin=0.5) == pytest.approx(5 * 0.2)
    # Absolute margin: loss <= 1 + 1.3, |log10 lr + 2| <= 1.3: -3.2 .. -0.8, 13 points.
    assert stats.good_lr_width(LRS, v_shaped(LRS), margin=1.3, relative=False) == pytest.approx(13 * 0.2)
    # Order of the grid does not matter.
    order = np.random.default_rng(0).permutation(36)
    assert stats.good_lr_width(LRS[order], v_shaped(LRS)[order], margin=0.5) == pytest.approx(1.0)


def test_good_lr_width_scattered_points_diverged_runs_and_negative_losses():
    losses = np.full(36, 10.0)
    losses[[2, 20, 30]] = [1.0, 1.05, 1.08]
    losses[[5, 6]] = [np.nan, np.inf]
    assert stats.good_lr_width(LRS, losses, margin=0.1) == pytest.approx(3 * 0.2)
    negative = np.where(np.arange(36) == 10, -2.0, -1.0)  # bound -2 + margin * 2
    assert stats.good_lr_width(LRS, negative, margin=0.4) == pytest.approx(0.2)
    assert stats.good_lr_width(LRS, negative, margin=0.6) == pytest.approx(36 * 0.2)
    assert stats.good_lr_width(LRS, np.full(36, np.nan)) == 0.0


def test_good_lr_width_on_an_uneven_grid_uses_half_gaps():
    lrs = [1e-3, 1e-2, 1e-1, 1e1]  # log10 gaps 1, 1, 2 -> cells 1, 1, 1.5, 2
    assert stats.good_lr_width(lrs, [5.0, 5.0, 1.0, 1.0]) == pytest.approx(3.5)


def test_good_lr_width_errors():
    with pytest.raises(ValueError, match="two learning rates"):
        stats.good_lr_width([1e-3], [1.0])
    with pytest.raises(ValueError, match="repeat"):
        stats.good_lr_width([1e-3, 1e-3, 1e-2], [1.0, 1.1, 2.0])
    with pytest.raises(ValueError, match="> 0"):
        stats.good_lr_width([0.0, 1e-2], [1.0, 1.0])
    with pytest.raises(ValueError, match="margin"):
        stats.good_lr_mask([1e-3, 1e-2], [1.0, 1.0], margin=-0.1)


def test_sign_changes():
    assert stats.sign_changes([]) == 0
    assert stats.sign_changes([1, 2, 3]) == 0
    assert stats.sign_changes([1, -1, 1, -1]) == 3
    assert stats.sign_changes([1, 0, -1]) == 1
    assert stats.sign_changes([1, 0, 0, 1]) == 0
    assert stats.sign_changes([0, -2, np.nan, 3, 0]) == 1


# -- properties -------------------------------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(finite, min_size=2, max_size=30), st.integers(0, 2**32 - 1))
def test_property_ci_contains_the_sample_mean(values, seed):
    low, high = stats.bootstrap_ci(values, n_resamples=500, seed=seed)
    mean = float(np.mean(values))
    slack = 1e-9 * (1.0 + np.max(np.abs(values)))
    assert low - slack <= mean <= high + slack
    assert low <= high


@settings(max_examples=40, deadline=None)
@given(finite, st.integers(1, 30), st.sampled_from(["percentile", "bca"]))
def test_property_ci_of_constant_data_is_degenerate(value, n, method):
    low, high = stats.bootstrap_ci([value] * n, method=method, n_resamples=200)
    assert low == high == pytest.approx(value, rel=1e-12, abs=1e-300)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5).flatmap(lambda n_solvers: st.lists(
    st.lists(st.one_of(st.floats(1e-3, 1e3), st.just(float("inf")), st.just(float("nan"))),
             min_size=n_solvers, max_size=n_solvers),
    min_size=1, max_size=20)))
def test_property_profile_values_in_unit_interval_and_monotone(per_problem):
    costs = {f"s{i}": [row[i] for row in per_problem] for i in range(len(per_problem[0]))}
    taus = np.concatenate([[0.5], np.logspace(0, 4, 20)])
    for r in stats.performance_profile(costs, taus).values():
        assert np.all((0.0 <= r) & (r <= 1.0))
        assert np.all(np.diff(r) >= 0)
        assert r[0] == 0.0


@pytest.mark.parametrize("seeds", [2, 3, 5, 10])
def test_separable_false_positive_rate_is_at_most_5_percent_for_every_seed_count(seeds):
    """No true difference, normal noise: 'separable' at most 5% of the time (binomial slack of
    ~3 standard errors over 2,000 simulations), whatever the number of seeds."""
    rng = np.random.default_rng(seeds)
    hits = sum(stats.separable(rng.normal(size=seeds), rng.normal(size=seeds)) for _ in range(2000))
    assert hits / 2000 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 2000)


def test_separable_detects_a_real_difference_and_never_with_one_pair():
    rng = np.random.default_rng(1)
    base = rng.normal(size=5)
    assert stats.separable(base + 1.0 + rng.normal(scale=0.1, size=5), base)
    assert not stats.separable([1.0], [0.0])
    with pytest.raises(ValueError, match="method"):
        stats.separable([1.0, 2.0], [0.0, 1.0], method="z")


def test_good_lr_width_against_a_common_reference():
    lrs, losses = [1e-3, 1e-2, 1e-1], [0.30, 0.20, 0.25]
    assert stats.good_lr_width(lrs, losses, margin=0.3) == pytest.approx(2.0)  # 0.20 and 0.25 within 30% of 0.20
    assert stats.good_lr_width(lrs, losses, margin=0.3, reference=0.1) == 0.0  # none within 30% of 0.1
    assert list(stats.good_lr_mask(lrs, losses, 0.3, reference=0.2)) == [False, True, True]
