"""M4 (Adam's bias correction fixes the early-step bias): the rule on fabricated update-norm traces, the
study design, and one tiny run through the engine and the store."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import synthetic_mech as syn
from optarena import optim
from optarena.claims import m4_bias_correction as m4
from optarena.claims.base import VERDICTS
from optarena.store import Store
from optarena.study import execute
from test_claim_m1 import quoted

PROBLEM = "noisy_quadratic"
D = 20  # noisy_quadratic's parameters


def results(size_with, size_without, seeds=(1, 2, 3), lrs=(1e-3, 1e-2), problems=(PROBLEM, "quadratic_deepobs"),
            loss_with=0.8, loss_without=1.0, status_without="done") -> dict:
    """Runs whose first steps have the given size in units of lr * sqrt(d) (a list: one per seed),
    whose minibatch losses are `loss_with` / `loss_without` (times 1 + 1% per seed) from a start of 1."""
    out = {}
    for problem in problems:
        d = m4.n_parameters(problem)
        runs = []
        for bc, size, loss, status in ((True, size_with, loss_with, "done"), (False, size_without, loss_without, status_without)):
            for lr in lrs:
                for s in seeds:
                    v = size[s % len(size)] if isinstance(size, (list, tuple)) else size
                    norm = [v * lr * math.sqrt(d)] * m4.STEPS
                    runs.append(syn.run(problem, "adam", {"lr": lr, "bias_correction": bc}, s, m4.STEPS, status=status,
                                        final={"val_loss": 1.0, "train_loss": 1.0},
                                        trace={"update_norm": norm, "loss": [loss * (1 + 0.01 * s)] * m4.STEPS}))
        out[m4.name(problem, True)] = syn.fixed(m4.name(problem, True), problem, runs, ("update_norm", "loss"))
    return out


def test_text_is_quoted_from_the_article():
    quoted(m4.TEXT_ZH)


def test_design_toggles_bias_correction_as_a_bool():
    studies = m4.design(True)
    assert [str(s.key) for s in studies] == ["M4/quadratic_deepobs/quick", "M4/noisy_quadratic/quick"]
    for s in studies:
        assert s.steps == m4.STEPS and set(s.trace) == {"update_norm", "loss"}
        flags = {t.hparams["bias_correction"] for t in s.trials}
        assert flags == {True, False} and all(isinstance(f, bool) for f in flags)
        assert {t.optimizer for t in s.trials} == {"adam"} and {t.convention for t in s.trials} == {"article"}
    assert "M4/digits_mlp/full" in [str(s.key) for s in m4.design(False)]


def test_expected_ratio_matches_uncorrected_adam_on_a_steady_gradient():
    """The oracle: optarena's Adam without correction on a constant gradient, against (1-b1^t)/sqrt(1-b2^t)."""
    import torch

    w = torch.zeros(3, requires_grad=True)
    opt = optim.Adam([w], lr=1e-3, bias_correction=False)
    sizes = []
    for _ in range(10):
        before = w.detach().clone()
        w.grad = torch.ones(3)
        opt.step()
        sizes.append(float((w.detach() - before).abs().mean() / 1e-3))
    assert np.mean(sizes) == pytest.approx(m4.expected_ratio(), rel=1e-4)
    assert sizes[0] == pytest.approx(math.sqrt(1000) / 10, rel=1e-4)


@pytest.mark.parametrize("ci, corrected, n, expected", [
    ((0.4, 0.6), 0.1, 12, "supported"),
    ((-0.1, 0.1), 0.1, 12, "contradicted"),
    ((0.4, 0.6), 0.5, 12, "inconclusive"),  # bias removed, but corrected steps are not lr-sized
    ((0.1, 0.4), 0.1, 12, "inconclusive"),
    ((0.4, 0.6), 0.1, 4, "inconclusive"),
])
def test_decide(ci, corrected, n, expected):
    assert m4.decide(ci, corrected, n) == expected


def test_verdict_supported_when_uncorrected_steps_are_too_large():
    v = m4.verdict(results(size_with=[0.9, 1.0, 0.95], size_without=[4.0, 5.0, 4.5]))
    assert v.verdict == "supported"
    assert v.effect == pytest.approx(np.mean([math.log10(x) for x in (4.0, 5.0, 4.5)]) - np.mean(
        [abs(math.log10(x)) for x in (0.9, 1.0, 0.95)]), abs=1e-9)


def test_the_consequence_is_co_primary():
    """The bias is removed in all three; the early loss decides whether that is supported."""
    lower = m4.verdict(results(1.0, 4.0, loss_with=0.8, loss_without=1.0))
    assert lower.details["consequence"] == "supported" and lower.verdict == "supported"
    assert lower.details["early_gain"]["median"] == pytest.approx(0.2, rel=0.05)
    higher = m4.verdict(results(1.0, 4.0, loss_with=1.0, loss_without=0.8))
    assert higher.details["mechanism"] == "supported" and higher.details["consequence"] == "contradicted"
    assert higher.verdict == "inconclusive" and "consequence" in higher.summary.lower()
    assert m4.verdict(results(1.0, 4.0, loss_with=1.0, loss_without=1.0)).details["consequence"] == "inconclusive"


def test_instability_without_the_correction_counts_for_it():
    """Uncorrected runs that diverge are ranked worse than any corrected one: +inf gains."""
    data = results(1.0, 4.0, loss_with=1.0, loss_without=0.9)  # uncorrected runs lower, but seed 1's diverge
    for result in data.values():
        for r in result.runs:
            if not r.trial.hparams["bias_correction"] and r.trial.seed == 1:
                r.status = "diverged"
    gain = m4.verdict(data).details["early_gain"]
    assert gain["pairs"] == 12 and gain["diverged_pairs"] == 4
    assert gain["median"] < 0  # 8 pairs favour no correction: the divergences count by rank only
    data = results(1.0, 4.0, loss_with=0.9, loss_without=1.0)
    for result in data.values():
        for r in result.runs:
            if not r.trial.hparams["bias_correction"] and r.trial.seed in (1, 2):
                r.status = "diverged"
    v = m4.verdict(data)
    assert v.details["early_gain"]["median"] == math.inf and v.details["consequence"] == "supported"


def test_early_gain_of_one_pair():
    a = syn.run(PROBLEM, "adam", {"lr": 1e-3, "bias_correction": False}, 1, 50, final={"train_loss": 2.0},
                trace={"loss": [1.5] * 50})
    b = syn.run(PROBLEM, "adam", {"lr": 1e-3, "bias_correction": True}, 1, 50, final={"train_loss": 2.0},
                trace={"loss": [1.0] * 50})
    assert m4.early_gain(a, b) == pytest.approx(0.25)  # (1.5 - 1.0) / 2.0
    gone = syn.run(PROBLEM, "adam", {"lr": 1e-3, "bias_correction": True}, 1, 50, status="diverged", final={"train_loss": 2.0})
    assert m4.early_gain(a, gone) == -math.inf and m4.early_gain(gone, b) == math.inf and m4.early_gain(gone, gone) == 0.0


def test_verdict_contradicted_when_there_is_no_bias_to_fix():
    v = m4.verdict(results(size_with=[0.9, 1.0, 0.95], size_without=[0.95, 1.05, 1.0]))
    assert v.verdict == "contradicted"


def test_verdict_inconclusive_when_noise_straddles_the_threshold():
    v = m4.verdict(results(size_with=1.0, size_without=[1.1, 2.5, 1.2]))
    assert v.verdict == "inconclusive"


def test_verdict_fields_and_json():
    v = m4.verdict(results(1.0, 4.0))
    assert v.id == "M4" and v.rule == m4.RULE and v.budget == 0 and v.seeds == 3
    assert v.details["n_parameters"][PROBLEM] == D
    assert len(v.plots) == 4 and {p.kind for p in v.plots} == {"curves"}
    json.dumps(v.as_dict())
    assert m4.verdict({}).verdict == "inconclusive"


def test_tiny_run_through_engine_and_store():
    store = Store()
    study = m4.study(PROBLEM, True, seeds=2, steps=60)
    result = execute(study, store)
    assert {r.status for r in result.runs} == {"done"}
    v = m4.verdict({study.key: result})
    assert v.verdict in VERDICTS and v.details["pairs"] == 6
    per = v.details["per_problem"][PROBLEM]
    # Adam's first step is exactly lr*sign(g) with correction, sqrt(1000)/10 times that without.
    assert per["without"]["first_step_size"] > 2 * per["with"]["first_step_size"]
