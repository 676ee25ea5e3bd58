"""The 2-D functions and quadratics against their closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.autograd.functional import hessian

from optarena.problems.functions import (
    Beale,
    NarrowValley,
    NoisyQuadratic,
    QuadraticDeepOBS,
    Rosenbrock,
    ScaleShiftQuadratic,
)


def _at(*points):
    return {"xy": torch.tensor(points, dtype=torch.float64)}



def test_rosenbrock_matches_the_formula():
    p = Rosenbrock(dtype=torch.float64)
    points = [(1.0, 1.0), (0.0, 0.0), (-1.5, 2.0), (0.3, -0.7)]
    expected = [(1 - x) ** 2 + 100 * (y - x * x) ** 2 for x, y in points]
    torch.testing.assert_close(p.loss(_at(*points)), torch.tensor(expected, dtype=torch.float64))
    assert p.loss(_at(p.minimum)).item() == 0.0
    metrics = p.evaluate(_at(*points))
    torch.testing.assert_close(metrics["train_loss"], metrics["val_loss"])


def test_rosenbrock_start_is_jittered_around_the_classic_point():
    starts = Rosenbrock().init_params(torch.arange(200))["xy"]
    assert starts.shape == (200, 2)
    torch.testing.assert_close(starts.mean(0), torch.tensor([-1.5, 2.0]), atol=0.02, rtol=0)
    assert 0.03 < starts.std(0).min() and starts.std(0).max() < 0.07


@pytest.mark.parametrize("cls", [Rosenbrock, NarrowValley, Beale])
def test_surface_is_the_loss_on_a_grid(cls):
    p = cls(dtype=torch.float64)
    xs, ys = np.linspace(-2, 3, 7), np.linspace(-1, 2, 5)
    grid = p.surface(xs, ys)
    assert grid.shape == (5, 7)
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            assert grid[j, i] == pytest.approx(p.loss(_at((x, y))).item(), rel=1e-12)
    assert p.surface([p.minimum[0]], [p.minimum[1]])[0, 0] == pytest.approx(0.0, abs=1e-12)


def test_narrow_valley_has_condition_number_100_along_steep_direction():
    p = NarrowValley(dtype=torch.float64)
    h = hessian(lambda v: p.loss({"xy": v[None]})[0], torch.tensor([0.3, -0.2], dtype=torch.float64))
    eigenvalues, vectors = torch.linalg.eigh(h)
    torch.testing.assert_close(eigenvalues, torch.tensor([1.0, 100.0], dtype=torch.float64))
    assert eigenvalues[1] / eigenvalues[0] == pytest.approx(100.0)
    steep = torch.tensor(p.steep_direction, dtype=torch.float64)
    assert steep.norm().item() == pytest.approx(1.0)
    torch.testing.assert_close(h @ steep, 100.0 * steep)
    # Rotated 45 degrees, and the start lies off the valley floor.
    assert abs(steep[0].item()) == pytest.approx(abs(steep[1].item()))
    start = torch.tensor(p.start, dtype=torch.float64)
    assert abs(start @ steep) > 0.5
    assert p.loss(_at(p.minimum)).item() == 0.0


def test_narrow_valley_condition_number_option():
    p = NarrowValley(condition_number=10.0, dtype=torch.float64)
    h = hessian(lambda v: p.loss({"xy": v[None]})[0], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(torch.linalg.eigvalsh(h), torch.tensor([1.0, 10.0], dtype=torch.float64))


def test_beale_minimum_and_formula():
    p = Beale(dtype=torch.float64)
    x, y = 1.0, 1.4
    expected = (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2
    assert p.loss(_at((x, y))).item() == pytest.approx(expected, rel=1e-12)
    xy = torch.tensor([[3.0, 0.5]], dtype=torch.float64, requires_grad=True)
    value = p.loss({"xy": xy})
    assert value.item() == 0.0
    (grad,) = torch.autograd.grad(value.sum(), xy)
    assert grad.abs().max().item() == 0.0


def test_deepobs_quadratic_spectrum_is_split_90_10():
    p = QuadraticDeepOBS(dtype=torch.float64)
    eigs = torch.linalg.eigvalsh(p.hessian)
    assert p.hessian.shape == (100, 100)
    assert ((eigs > 0) & (eigs < 1)).sum() == 90
    assert ((eigs > 30) & (eigs < 60)).sum() == 10
    torch.testing.assert_close(eigs, torch.tensor(np.sort(p.eigenvalues)))
    h = hessian(lambda v: p.loss({"x": v[None]}, None)[0], torch.zeros(100, dtype=torch.float64))
    torch.testing.assert_close(h, p.hessian)


def test_deepobs_quadratic_noise_is_unbiased_with_the_stated_scale():
    p = QuadraticDeepOBS(dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    noise = torch.cat([p.batch(step, g)[0] for step in range(400)])
    assert noise.shape == (400, 100)
    assert noise.std().item() == pytest.approx(0.6 / math.sqrt(128), rel=0.05)
    # Gradient of the minibatch loss = H (x - c_bar): its mean over batches is the noise-free gradient.
    x = torch.full((1, 100), 0.5, dtype=torch.float64, requires_grad=True)
    batch = (noise[:, None, :],)
    loss = p.loss({"x": x.expand(400, 100)}, batch)
    (grad,) = torch.autograd.grad(loss.sum() / 400, x)
    torch.testing.assert_close(grad[0], p.hessian @ (x[0].detach() - noise.mean(0)))


def test_noisy_quadratic_gradient_noise_has_the_set_variance():
    p = NoisyQuadratic(noise_std=2.0, dtype=torch.float64)
    torch.testing.assert_close(p.curvatures[[0, -1]], torch.tensor([0.1, 10.0], dtype=torch.float64))
    x = torch.ones(1000, 20, dtype=torch.float64, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    batch = (torch.stack([p.batch(step, g)[0] for step in range(1000)]),)
    (grad,) = torch.autograd.grad(p.loss({"x": x}, batch).sum(), x)
    noise = grad - p.curvatures  # H x with x = 1
    assert noise.mean().abs().item() < 0.05
    assert noise.var().item() == pytest.approx(4.0, rel=0.05)
    torch.testing.assert_close(p.evaluate({"x": x.detach()})["train_loss"], 0.5 * p.curvatures.sum().expand(1000))


def test_scale_shift_multiplies_the_gradient_by_100_at_shift_step():
    p = ScaleShiftQuadratic(dtype=torch.float64)
    assert p.shift_step == p.default_steps // 2 and p.scale_factor == 100.0
    x = p.init_params(torch.tensor([0]))["x"].requires_grad_(True)
    g = torch.Generator().manual_seed(0)

    def grad_at(step):
        batch = tuple(t[None] for t in p.batch(step, g))
        return torch.autograd.grad(p.loss({"x": x}, batch).sum(), x)[0]

    before, at, after = grad_at(p.shift_step - 1), grad_at(p.shift_step), grad_at(p.default_steps - 1)
    torch.testing.assert_close(before, p.curvatures * x.detach())
    torch.testing.assert_close(at, 100.0 * before)
    torch.testing.assert_close(after, at)
    torch.testing.assert_close(p.evaluate({"x": x.detach()})["train_loss"], p.f(x.detach()))
    assert ScaleShiftQuadratic(shift_step=10).batch(9, g)[0].item() == 1.0
