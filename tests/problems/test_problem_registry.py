"""The registry, and the protocol every registered problem must honour (determinism, batched == alone, gradients)."""

from __future__ import annotations

import math

import pytest
import torch

from optarena import problems
from optarena.problems.base import Problem, seed_generator

NAMES = problems.names()
ZERO_INIT = {"sparse_zipf", "sparse_ctr", "breast_cancer_logreg"}  # linear models start at w = 0
CLASSIFIERS = {"sparse_zipf", "sparse_ctr", "digits_mlp", "breast_cancer_logreg", "mnist_mlp", "mnist_cnn",
               "deep_mlp", "residual_mlp"}
# SGD learning rate and steps small enough to decrease each problem's loss from its start.
SGD = {
    "rosenbrock": (1e-4, 20), "narrow_valley": (1e-2, 20), "beale": (1e-3, 20),
    "quadratic_deepobs": (1e-2, 20), "noisy_quadratic": (2e-2, 20), "scale_shift_quadratic": (2e-2, 20),
    "sparse_zipf": (1.0, 20), "sparse_ctr": (1.0, 20), "digits_mlp": (0.1, 20), "breast_cancer_logreg": (0.1, 20),
    "mnist_mlp": (0.1, 10), "mnist_cnn": (0.05, 10), "deep_mlp": (0.05, 10), "residual_mlp": (0.05, 10),
}


def test_names_cover_the_suite():
    assert set(NAMES) == set(SGD)
    assert list(problems.PROBLEMS) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_every_problem_constructs_with_its_interface(build, name):
    p = build(name)
    assert isinstance(p, Problem)
    assert p.name == name
    assert isinstance(p.tags, frozenset) and p.tags and all(isinstance(t, str) for t in p.tags)
    assert p.loss_bound > 0 and p.default_steps >= 1
    assert p.batch_size is None or p.batch_size >= 1
    assert type(p).__doc__ and len(type(p).__doc__) > 200  # states problem, size, source, and why


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"'nope'.*rosenbrock.*residual_mlp"):
        problems.get("nope")


def test_unknown_option_names_the_options():
    with pytest.raises(TypeError, match=r"widht.*width"):
        problems.get("deep_mlp", widht=3)


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("rosenbrock", {"jitter": -0.1}, r"jitter.*>= 0.*-0\.1"),
        ("rosenbrock", {"dtype": torch.int64}, r"dtype.*floating.*int64"),
        ("beale", {"start": (1.0,)}, r"start.*\(1\.0,\)"),
        ("narrow_valley", {"condition_number": 0.5}, r"condition_number.*>= 1.*0\.5"),
        ("quadratic_deepobs", {"dim": 5}, r"dim.*>= 10.*5"),
        ("quadratic_deepobs", {"noise_level": -1.0}, r"noise_level.*>= 0.*-1\.0"),
        ("noisy_quadratic", {"dim": 0}, r"dim.*>= 1.*got 0"),
        ("noisy_quadratic", {"noise_std": float("nan")}, r"noise_std.*nan"),
        ("scale_shift_quadratic", {"scale_factor": 0.0}, r"scale_factor.*> 0.*0\.0"),
        ("scale_shift_quadratic", {"shift_step": -1}, r"shift_step.*>= 0.*-1"),
        ("sparse_zipf", {"n_features": -5}, r"n_features.*>= 40.*-5"),
        ("sparse_zipf", {"active_features": 0}, r"active_features.*>= 1.*0"),
        ("sparse_ctr", {"n_fields": 0}, r"n_fields.*>= 1.*0"),
        ("digits_mlp", {"hidden": 0}, r"hidden.*>= 1.*0"),
        ("mnist_mlp", {"batch_size": 0}, r"batch_size.*>= 1.*0"),
        ("mnist_cnn", {"batch_size": 2.5}, r"batch_size.*integer.*2\.5"),
        ("deep_mlp", {"depth": 0}, r"depth.*>= 1.*0"),
        ("residual_mlp", {"blocks": -1}, r"blocks.*>= 1.*-1"),
    ],
)
def test_impossible_settings_raise_with_the_value(name, options, match):
    with pytest.raises(ValueError, match=match):
        problems.get(name, **options)


@pytest.mark.parametrize("name", NAMES)
def test_init_is_deterministic_and_per_run(build, name):
    p = build(name)
    a, b = p.init_params(torch.tensor([1, 3, 5])), p.init_params(torch.tensor([1, 3, 5]))
    alone = p.init_params(torch.tensor([3]))
    for key in a:
        assert a[key].dtype == torch.float32 and a[key].shape[0] == 3
        assert a[key].is_leaf and not a[key].requires_grad
        assert torch.equal(a[key], b[key])
        assert torch.equal(alone[key][0], a[key][1])  # a run's start ignores its batch-mates
    if name in ZERO_INIT:
        assert all(torch.count_nonzero(v) == 0 for v in a.values())
    else:
        assert any(not torch.equal(v[0], v[2]) for v in a.values())


@pytest.mark.parametrize("name", NAMES)
def test_batches_come_only_from_the_generator(build, name):
    p = build(name)
    first = p.batch(4, seed_generator(7, "batches"))
    if p.batch_size is None:
        assert first is None
        return
    again = p.batch(4, seed_generator(7, "batches"))
    other = p.batch(4, seed_generator(8, "batches"))
    assert isinstance(first, tuple) and all(isinstance(t, torch.Tensor) for t in first)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    if name != "scale_shift_quadratic":  # its batch is the scale, a function of the step alone
        assert any(not torch.equal(x, y) for x, y in zip(first, other))


def _perturbed(params, scale=0.01):
    """Start params moved off their init (zero-initialised models would have trivial gradients)."""
    g = torch.Generator().manual_seed(123)
    return {k: v + scale * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}


def _loss_and_grads(p, params, batch):
    params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    loss = p.loss(params, batch)
    loss.sum().backward()
    return loss.detach(), {k: v.grad for k, v in params.items()}


@pytest.mark.parametrize("name", NAMES)
def test_batched_runs_equal_runs_alone(build, stacked_batch, name):
    p = build(name)
    seeds = [3, 7, 11]
    params = _perturbed(p.init_params(torch.tensor(seeds)))
    batch = stacked_batch(p, 2, seeds)
    loss, grads = _loss_and_grads(p, params, batch)
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    for r in range(3):
        one = {k: v[r : r + 1] for k, v in params.items()}
        one_batch = None if batch is None else tuple(t[r : r + 1] for t in batch)
        loss_r, grads_r = _loss_and_grads(p, one, one_batch)
        torch.testing.assert_close(loss_r[0], loss[r], rtol=1e-6, atol=1e-7)
        for k in grads:
            # float32 with other matrix shapes (one run vs a stack: the convolutions' reductions are
            # summed in another order): gradients agree to a few ulps of their largest entry, ~2e-6
            # relative measured on mnist_cnn; 1e-5 leaves room and still catches mixing of runs (O(1)).
            scale = grads[k][r].abs().max().item()
            torch.testing.assert_close(grads_r[k][0], grads[k][r], rtol=1e-5, atol=1e-5 * scale + 1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_evaluate_reports_per_run_metrics(build, name):
    p = build(name)
    params = p.init_params(torch.tensor([0, 1]))
    for v in params.values():
        v.requires_grad_(True)
    metrics = p.evaluate(params)
    expected = {"train_loss", "val_loss"} | ({"val_accuracy"} if name in CLASSIFIERS else set())
    assert expected <= set(metrics)
    for v in metrics.values():
        assert v.shape == (2,) and torch.isfinite(v).all() and not v.requires_grad
    assert (metrics["train_loss"] < p.loss_bound).all()


@pytest.mark.parametrize("name", NAMES)
def test_a_few_sgd_steps_decrease_the_loss(build, name):
    p = build(name)
    lr, steps = SGD[name]
    seeds = [0, 1]
    params = {k: v.requires_grad_(True) for k, v in p.init_params(torch.tensor(seeds)).items()}
    before = p.evaluate(params)["train_loss"]
    generators = [seed_generator(s, "batches") for s in seeds]
    for step in range(steps):
        per_run = [p.batch(step, g) for g in generators]
        batch = None if per_run[0] is None else tuple(torch.stack(t) for t in zip(*per_run))
        loss = p.loss(params, batch)
        grads = torch.autograd.grad(loss.sum(), list(params.values()))
        with torch.no_grad():
            for v, g in zip(params.values(), grads):
                v -= lr * g
    after = p.evaluate(params)["train_loss"]
    assert (after < before).all(), (before, after)
    assert torch.isfinite(after).all() and not math.isnan(after.sum().item())
