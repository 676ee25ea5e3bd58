"""R7 (Nadam does well on deep networks): Nadam vs Adam on fabricated deep-network reruns, and the
deep studies' design."""

from __future__ import annotations

import inspect

import pytest

import synthetic_tuned as syn
from optarena import problems, tuning
from optarena.claims import r7_nadam_deep as r7
from optarena.claims import suite


def results(ratio: float, jitter: float, n: int = 6, references: dict[str, float] | None = None, quick: bool = True,
            steps: int = 1000, multiple: int = 1) -> dict:
    """On both deep problems, tuned and untuned: Nadam's loss = ratio * Adam's, seed by seed, runs of
    `steps` steps (the deep problems' default is 1,000), as the studies of budget `multiple`."""
    out = {}
    for i, problem in enumerate(suite.DEEP_PROBLEMS):
        adam_t, nadam_t = syn.paired(0.3, ratio, 0.2, n, seed=i, jitter=jitter)
        adam_d, nadam_d = syn.paired(0.4, ratio, 0.2, n, seed=10 + i, jitter=jitter)
        tuned = {"adam": adam_t, "nadam": nadam_t} | {o: [v] * n for o, v in (references or {}).items()}
        defaults = {"adam": adam_d, "nadam": nadam_d} | {o: [v] * n for o, v in (references or {}).items()}
        name = suite.deep_budget_key(problem, multiple, quick)
        out[name] = syn.study_result(name, problem, steps=steps, tuning={o: [1.0] * 3 for o in tuned}, lrs=[1e-4, 1e-3, 1e-2],
                                     tuned=tuned, defaults=defaults)
    return out


def test_decide():
    same, worse, better, unclear = (-0.02, 0.03), (0.1, 0.3), (-0.3, -0.1), (-0.2, 0.2)
    assert r7.decide([same, better, same, same], 5) == "supported"
    assert r7.decide([worse, worse, worse, same], 5) == "contradicted"
    assert r7.decide([worse, same, same, same], 5) == "inconclusive"  # worse somewhere
    assert r7.decide([unclear] * 4, 5) == "inconclusive"  # no difference shown is not "as good"
    assert r7.decide([same] * 4, 5, beats_references=[True, False]) == "inconclusive"
    assert r7.decide([same] * 4, 5, beats_references=[True, True]) == "supported"
    assert r7.decide([same] * 4, 2) == "inconclusive"


def test_nadam_as_good_as_adam_supports():
    v = r7.verdict(results(0.97, jitter=0.01))
    assert v.verdict == "supported"
    assert v.effect == pytest.approx(-3, abs=1) and v.ci95[0] <= v.effect <= v.ci95[1]
    assert len(v.details["cells"]) == 4


def test_nadam_worse_contradicts():
    v = r7.verdict(results(1.3, jitter=0.02))
    assert v.verdict == "contradicted"
    assert v.effect > 20 and v.ci95[0] > 0


def test_noise_swamps_the_difference():
    assert r7.verdict(results(1.0, jitter=0.5)).verdict == "inconclusive"


def test_references_must_be_beaten_when_they_ran():
    strong = r7.verdict(results(0.97, jitter=0.01, references={"momentum": 0.1, "rmsprop": 0.1}, quick=False))
    weak = r7.verdict(results(0.97, jitter=0.01, references={"momentum": 1.0, "rmsprop": 2.0}, quick=False))
    assert strong.verdict == "inconclusive" and weak.verdict == "supported"


def test_verdict_fields_and_plots():
    v = r7.verdict(results(0.97, jitter=0.01))
    assert v.id == "R7" and v.rule == r7.RULE and v.effect_name
    assert v.problems == list(suite.DEEP_PROBLEMS) and v.budget == 3 and v.seeds == 6 and v.run_keys
    assert {p.kind for p in v.plots} == {"curves", "bars"}
    bands = [s for p in v.plots if p.kind == "curves" for s in p.series]
    assert bands and all(s.lo is not None and s.hi is not None for s in bands)


def test_tuned_cells_alone_still_decide():
    """Quick mode runs no untuned reruns: the verdict rests on the tuned cells."""
    out = results(1.3, jitter=0.02)
    for r in out.values():
        r.defaults.clear()
    v = r7.verdict(out)
    assert v.verdict == "contradicted" and set(v.details["cells"]) == {f"{p} tuned" for p in suite.DEEP_PROBLEMS}


def test_ignores_the_shared_tuned_studies():
    name = suite.study_name("tuned", "digits_mlp", True)
    other = {name: syn.study_result(name, "digits_mlp", tuned={"adam": [1.0] * 5, "nadam": [0.1] * 5})}
    assert r7.verdict(other).problems == []


@pytest.mark.parametrize("quick", [True, False])
def test_design_meets_the_protocol(quick):
    studies = r7.design(quick)
    assert studies and all({"adam", "nadam"} <= set(s.optimizers) for s in studies)
    assert all(s.problem in suite.DEEP_PROBLEMS and s.problem in problems.names() for s in studies)
    assert all(s.budget >= 1 for s in studies)
    if quick:
        assert all(s.seeds >= suite.MIN_SEEDS for s in studies)
        return
    assert all(s.defaults for s in studies)  # tuned and untuned
    one = [s for s in studies if s.steps == 1000]
    assert [s.problem for s in one] == ["deep_mlp", "residual_mlp"]
    for s in one:
        lrs = sorted({p["lr"] for p in tuning.grid(tuning.space("adam", s.tune, s.lr_range, s.convention), s.budget)})
        assert len(lrs) >= 12 and s.seeds >= 5  # 1,000 steps: fewer points and seeds fit the hour
        assert lrs[0] == pytest.approx(1e-5) and lrs[-1] == pytest.approx(1e2)
    # the budget sweep: 3x the default steps on both problems, 10x on deep_mlp, Adam and Nadam on a
    # half-decade grid
    three = [s for s in studies if s.steps == 3000]
    ten = [s for s in studies if s.steps == 10000]
    assert [s.problem for s in three] == ["deep_mlp", "residual_mlp"] and [s.problem for s in ten] == ["deep_mlp"]
    assert len(one) + len(three) + len(ten) == len(studies)
    for s in three + ten:
        assert set(s.optimizers) == {"adam", "nadam"} and s.seeds >= 5 and s.selection_seeds >= 3
        lrs = sorted({p["lr"] for p in tuning.grid(tuning.space("adam", s.tune, s.lr_range, s.convention), s.budget)})
        assert lrs[0] == pytest.approx(3e-6) and lrs[-1] == pytest.approx(3e-3) and len(lrs) == 7
        assert all(b / a == pytest.approx(10 ** 0.5) for a, b in zip(lrs, lrs[1:]))


def test_quick_mode_runs_no_budget_sweep():
    assert all(s.steps == 300 for s in r7.design(True))


def sweep(ratio1: float, ratio3: float, references: dict[str, float] | None = None) -> dict:
    return (results(ratio1, jitter=0.01, quick=False, references=references)
            | results(ratio3, jitter=0.01, quick=False, steps=3000, multiple=3))


def test_verdict_is_the_largest_budgets_with_the_budgets_it_holds_at():
    v = r7.verdict(sweep(1.3, 0.97))
    assert v.verdict == "supported" and v.details["budget"] == "3x"
    assert v.details["outcome_per_budget"] == {"1x": "contradicted", "3x": "supported"}
    assert v.details["holds_at_budgets"] == ["3x"] and v.details["steps_per_budget"] == {"1x": [1000], "3x": [3000]}
    assert v.effect == pytest.approx(-3, abs=1) and "3x (3000 steps): supported" in v.summary
    assert v.details["per_budget"]["1x"]["effect_percent"] > 20
    by_budget = [p for p in v.plots if p.title == "Nadam over Adam by budget"]
    assert len(by_budget) == 1 and {tuple(s.x) for s in by_budget[0].series} == {(1.0, 3.0)}
    assert len(by_budget[0].series) == 4
    # every budget's runs are traced
    assert len(v.run_keys) == len(set(v.run_keys)) > len(r7.verdict(results(1.3, jitter=0.01, quick=False)).run_keys)
    v = r7.verdict(sweep(1.3, 1.3))
    assert v.verdict == "contradicted" and v.details["holds_at_budgets"] == ["1x", "3x"]


def test_a_budget_without_references_takes_their_condition_from_1x():
    strong = {"momentum": 0.1, "rmsprop": 0.1}  # Nadam does not beat the median reference at 1x
    v = r7.verdict(sweep(0.97, 0.97, references=strong))
    assert v.details["outcome_per_budget"] == {"1x": "inconclusive", "3x": "inconclusive"}
    assert set(v.details["references"]) == {"1x"}
    weak = {"momentum": 1.0, "rmsprop": 2.0}
    assert r7.verdict(sweep(0.97, 0.97, references=weak)).details["outcome_per_budget"] == {"1x": "supported", "3x": "supported"}


def test_a_sweep_without_its_1x_studies_is_not_decided():
    v = r7.verdict(results(0.97, jitter=0.01, quick=False, steps=3000, multiple=3))
    assert v.verdict == "inconclusive" and v.problems == []


def test_deep_problems_are_deep():
    # The suite builds them with their defaults (study.load_problem): read those without loading MNIST.
    depth = inspect.signature(problems.PROBLEMS["deep_mlp"]).parameters["depth"].default
    blocks = inspect.signature(problems.PROBLEMS["residual_mlp"]).parameters["blocks"].default
    assert depth >= 8 and blocks >= 16


def test_runs_shorter_than_the_default_steps_cannot_decide():
    v = r7.verdict(results(0.8, jitter=0.01, steps=300))
    assert v.verdict == "inconclusive" and "Too short to decide" in v.summary
    assert r7.decide([(-0.3, -0.1)] * 4, 6, long_enough=False) == "inconclusive"


def test_design_removes_the_confounds():
    for quick in (True, False):
        for s in r7.design(quick):
            assert s.convention == "pytorch"  # eps outside the root for Adam and Nadam alike
            assert s.fixed_for("nadam") == {"lr": 1e-3, "momentum_decay": 1e3}  # flat mu; untuned lr = Adam's
    assert {s.steps for s in r7.design(False)} == {1000, 3000, 10000}


def test_a_budget_on_some_problems_is_reported_not_the_verdict():
    """10x runs on deep_mlp only: decided on its cells and reported, the verdict stays at 3x."""
    out = sweep(1.3, 0.97)
    ten = results(1.3, jitter=0.01, quick=False, steps=10000, multiple=10)
    out |= {k: r for k, r in ten.items() if r.study.problem == "deep_mlp"}
    v = r7.verdict(out)
    assert v.verdict == "supported" and v.details["budget"] == "3x"
    assert v.details["outcome_per_budget"] == {"1x": "contradicted", "3x": "supported", "10x": "contradicted"}
    assert v.details["holds_at_budgets"] == ["3x"] and v.details["budgets_on_some_problems"] == {"10x": ["deep_mlp"]}
    assert set(v.details["per_budget"]["10x"]["cells"]) == {"deep_mlp tuned", "deep_mlp untuned"}
    assert "10x (10000 steps, deep_mlp only): contradicted" in v.summary
    assert v.problems == list(suite.DEEP_PROBLEMS)
    out |= {k: r for k, r in results(0.97, jitter=0.01, quick=False, steps=10000, multiple=10).items()
            if r.study.problem == "deep_mlp"}
    assert r7.verdict(out).details["holds_at_budgets"] == ["3x", "10x"]
