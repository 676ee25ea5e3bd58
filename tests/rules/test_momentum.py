"""Momentum: the article's EMA form, torch's heavy ball (SGD with momentum) and Keras's SGD with
momentum (velocity v = mu*v - lr*g)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import _oracle as O
from optarena import optim

GRID = list(itertools.product([0.9, 0.5], [0.0, 0.3], [False, True], [0.0, 1e-2]))


@pytest.mark.parametrize("momentum,dampening,nesterov,weight_decay", GRID)
def test_pytorch_convention_equals_torch_sgd_with_momentum(momentum, dampening, nesterov,
                                                            weight_decay):
    hp = dict(lr=0.05, momentum=momentum, dampening=dampening, nesterov=nesterov,
              weight_decay=weight_decay)
    if nesterov and dampening != 0:
        p = [torch.zeros(2, requires_grad=True)]
        with pytest.raises(ValueError):
            torch.optim.SGD(p, **hp)
        with pytest.raises(ValueError, match="(?i)nesterov|dampening"):
            optim.Momentum(p, convention="pytorch", **hp)
        return
    ours = O.run_torch(lambda p: optim.Momentum(p, convention="pytorch", **hp), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: torch.optim.SGD(p, **hp), O.TORCH_STEPS)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL,
                   cell="momentum|pytorch|torch.optim")


def test_pytorch_convention_defaults_are_torch_sgd_with_momentum_09():
    ours = O.run_torch(lambda p: optim.Momentum(p, convention="pytorch"), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: torch.optim.SGD(p, momentum=0.9), O.TORCH_STEPS)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL,
                   cell="momentum|pytorch|torch.optim")


@pytest.mark.parametrize(
    "ours_hp,keras_hp",
    [
        ({}, dict(momentum=0.9)),  # our keras default momentum is 0.9; Keras's lr default
        (dict(lr=0.05, momentum=0.7, nesterov=True),
         dict(learning_rate=0.05, momentum=0.7, nesterov=True)),
    ],
    ids=["defaults", "nesterov"],
)
def test_keras_convention_equals_keras_sgd_with_momentum(ours_hp, keras_hp):
    ours = O.run_torch(lambda p: optim.Momentum(p, convention="keras", **ours_hp), O.KERAS_STEPS,
                       dtype=torch.float32)
    ref = O.run_keras(O.make_keras("SGD", **keras_hp), O.KERAS_STEPS)
    O.assert_close(ours, ref, rtol=O.KERAS_RTOL, atol=O.KERAS_ATOL, cell="momentum|keras|keras")


@pytest.mark.parametrize("beta", [0.9, 0.5])
def test_article_convention_is_an_exponential_moving_average(beta):
    lr = 0.1

    def update(t, i, w, g, state):
        v = state.get("v", np.zeros_like(w))
        v = beta * v + (1 - beta) * g  # v = beta*v + (1-beta)*g
        state["v"] = v
        return w - lr * v  # w = w - alpha*v

    ours = O.run_torch(lambda p: optim.Momentum(p, lr=lr, momentum=beta, convention="article"),
                       O.ARTICLE_STEPS)
    ref = O.run_numpy(update, O.ARTICLE_STEPS)
    O.assert_close(ours, ref, rtol=O.ARTICLE_RTOL, atol=O.ARTICLE_ATOL,
                   cell="momentum|article|numpy")
