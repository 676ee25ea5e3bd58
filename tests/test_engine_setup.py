"""The engine's training setups and fault handling: learning-rate schedules and gradient clipping
(against the plain loop with LambdaLR and clip_grad_norm_), per-run buffers carried beside the
parameters, a run that raises failing alone, and the per-step timings."""

from __future__ import annotations

import math

import pytest
import torch

from optarena import engine, loop, problems, schedules
from optarena.problems.base import seed_generator
from optarena.trial import Trial


@pytest.fixture(scope="module")
def digits():
    return problems.get("digits_mlp")


def _max_diff(a, b) -> float:
    assert a.status == b.status == "done", (a.status, a.error, b.status, b.error)
    return max(abs(x - y) for k in a.curve for x, y in zip(a.curve[k], b.curve[k]))


@pytest.mark.parametrize("schedule", ["warmup-cosine", "warmup-linear"])
def test_a_schedule_in_the_engine_equals_lambdalr_in_the_loop(digits, schedule):
    trials = [Trial("digits_mlp", "adam", "pytorch", {"lr": 3e-3}, 0, 60, schedule, 0.1),
              Trial("digits_mlp", "momentum", "article", {"lr": 0.1}, 1, 60, schedule, 0.2),
              Trial("digits_mlp", "adam", "pytorch", {"lr": 1e-3}, 1, 60)]  # constant beside scheduled ones
    for batched, alone in zip(engine.run(digits, trials), loop.run_sequential(digits, trials)):
        assert _max_diff(batched, alone) < 1e-5


def test_schedule_factors_follow_their_formulas():
    assert schedules.factor("constant", 7, 100) == 1.0
    assert schedules.factor("warmup-linear", 5, 100, 0.1) == pytest.approx(0.5)
    assert schedules.factor("warmup-linear", 100, 100, 0.1) == pytest.approx(0.0)
    assert schedules.factor("warmup-cosine", 10, 100, 0.1) == pytest.approx(1.0)
    assert schedules.factor("warmup-cosine", 55, 100, 0.1) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="schedule"):
        Trial("digits_mlp", "adam", schedule="cosine")
    with pytest.raises(ValueError, match="warmup"):
        Trial("digits_mlp", "adam", schedule="warmup-cosine", warmup=1.5)


def test_clipping_in_the_engine_equals_clip_grad_norm_in_the_loop(digits):
    trials = [Trial("digits_mlp", "sgd", "article", {"lr": 0.5}, 0, 40, clip_grad_norm=0.1),
              Trial("digits_mlp", "sgd", "article", {"lr": 0.5}, 1, 40, clip_grad_norm=1.0),
              Trial("digits_mlp", "sgd", "article", {"lr": 0.5}, 2, 40)]
    batched = engine.run(digits, trials)
    for b, alone in zip(batched, loop.run_sequential(digits, trials)):
        assert _max_diff(b, alone) < 1e-5
    # the clip binds: the tightly clipped run learns more slowly than the unclipped one
    assert batched[0].final["train_loss"] > batched[2].final["train_loss"]
    with pytest.raises(ValueError, match="clip_grad_norm"):
        Trial("digits_mlp", "sgd", clip_grad_norm=0.0)


class _Raising:
    """A quadratic whose loss raises once any run's x leaves [-5, 5] (a user's model that raises
    for some parameter values only)."""

    name = "raising"
    tags = frozenset()
    loss_bound = 1e12
    default_steps = 20
    batch_size = None

    def init_params(self, seeds):
        return {"x": torch.stack([torch.ones(3) + 0.1 * torch.randn(3, generator=seed_generator(int(s))) for s in seeds])}

    def batch(self, step, generator):
        return None

    def loss(self, params, batch=None):
        x = params["x"]
        if bool((x.abs() > 5).any()):
            raise RuntimeError("x left the box")
        return 0.5 * (x * x).sum(-1)

    def evaluate(self, params):
        value = 0.5 * (params["x"] ** 2).sum(-1)
        return {"train_loss": value, "val_loss": value.clone()}


def test_a_run_that_raises_fails_alone_and_the_others_are_unchanged():
    problem = _Raising()
    good = [Trial("raising", "sgd", "article", {"lr": lr}, s, 20) for lr in (0.1, 0.5) for s in (0, 1, 2)]
    bad = Trial("raising", "sgd", "article", {"lr": 3.5}, 1, 20)  # |1 - lr| = 2.5: grows past 5 and raises
    results = engine.run(problem, good[:3] + [bad] + good[3:])
    by_trial = {r.trial: r for r in results}
    assert by_trial[bad].status == "failed" and "x left the box" in by_trial[bad].error
    # Equal to what they give without the raising run (to rounding: the retried halves stack other
    # runs together, and a hyperparameter shared by a whole stack is a float, else a tensor).
    alone = {r.trial: r for r in engine.run(problem, good)}
    for t in good:
        assert by_trial[t].status == "done"
        assert _max_diff(by_trial[t], alone[t]) < 1e-6


class _WithBuffers(_Raising):
    """A quadratic with a per-run running mean of x (a BatchNorm-like buffer) that the loss reads."""

    name = "buffered"

    def init_buffers(self, seeds):
        return {"running": torch.zeros(len(seeds), 3)}

    def loss(self, params, batch=None, buffers=None):
        x = params["x"]
        buffers["running"].mul_(0.9).add_(0.1 * x.detach())
        return 0.5 * ((x - 0.5 * buffers["running"]) ** 2).sum(-1)

    def evaluate(self, params, buffers=None):
        value = 0.5 * ((params["x"] - 0.5 * buffers["running"]) ** 2).sum(-1)
        return {"train_loss": value, "val_loss": value.clone()}


def test_per_run_buffers_are_carried_beside_the_parameters():
    problem = _WithBuffers()
    trials = [Trial("buffered", "adam", "article", {"lr": lr}, s, 30) for lr in (0.01, 0.1) for s in (0, 1)]
    for batched, alone in zip(engine.run(problem, trials), loop.run_sequential(problem, trials)):
        assert _max_diff(batched, alone) < 1e-6
    # the buffer matters: without it the loss would be 0.5|x|^2, which these curves are not
    plain = engine.run(_Raising(), [Trial("raising", "adam", "article", {"lr": 0.01}, 0, 30)])[0]
    with_buffer = engine.run(problem, [trials[0]])[0]
    assert abs(plain.final["train_loss"] - with_buffer.final["train_loss"]) > 1e-3


def test_every_run_reports_its_step_times(digits):
    trials = [Trial("digits_mlp", o, "article", {}, 0, 20) for o in ("sgd", "adam")]
    for r in engine.run(digits, trials):
        assert r.step_time["model"] > 0 and r.step_time["update"] > 0
        assert math.isfinite(r.step_time["model"] + r.step_time["update"])
