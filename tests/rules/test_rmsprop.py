"""RMSprop against torch.optim.RMSprop, keras.optimizers.RMSprop and the article's
G = beta*G + (1-beta)*g^2, w = w - alpha / sqrt(G + eps) * g (eps inside the root)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import _oracle as O
from optarena import optim

GRID = list(itertools.product([False, True], [0.0, 0.5], [0.0, 1e-2]))


@pytest.mark.parametrize("centered,momentum,weight_decay", GRID)
def test_pytorch_convention_equals_torch_rmsprop(centered, momentum, weight_decay):
    hp = dict(lr=3e-3, alpha=0.95, eps=1e-6, centered=centered, momentum=momentum,
              weight_decay=weight_decay)
    ours = O.run_torch(lambda p: optim.RMSprop(p, convention="pytorch", **hp), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: torch.optim.RMSprop(p, **hp), O.TORCH_STEPS)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL,
                   cell="rmsprop|pytorch|torch.optim")


def test_pytorch_convention_defaults_equal_torch_defaults():
    ours = O.run_torch(lambda p: optim.RMSprop(p, convention="pytorch"), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: torch.optim.RMSprop(p), O.TORCH_STEPS)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL,
                   cell="rmsprop|pytorch|torch.optim")


@pytest.mark.parametrize(
    "ours_hp,keras_hp",
    [
        ({}, {}),
        (dict(lr=0.01, alpha=0.8, eps=1e-3, centered=True),
         dict(learning_rate=0.01, rho=0.8, epsilon=1e-3, centered=True)),
        (dict(lr=0.01, alpha=0.8, momentum=0.5, eps=1e-3, centered=True),
         dict(learning_rate=0.01, rho=0.8, momentum=0.5, epsilon=1e-3, centered=True)),
    ],
    ids=["defaults", "centered", "centered-momentum"],
)
def test_keras_convention_equals_keras_rmsprop(ours_hp, keras_hp):
    ours = O.run_torch(lambda p: optim.RMSprop(p, convention="keras", **ours_hp), O.KERAS_STEPS,
                       dtype=torch.float32)
    ref = O.run_keras(O.make_keras("RMSprop", **keras_hp), O.KERAS_STEPS)
    O.assert_close(ours, ref, rtol=O.KERAS_RTOL, atol=O.KERAS_ATOL, cell="rmsprop|keras|keras")


def _article_rmsprop(lr, beta, eps, eps_inside=True):
    def update(t, i, w, g, state):
        G = beta * state.get("G", np.zeros_like(w)) + (1 - beta) * g * g
        state["G"] = G
        if eps_inside:
            return w - lr / np.sqrt(G + eps) * g  # w = w - alpha / sqrt(G + eps) * g
        return w - lr / (np.sqrt(G) + eps) * g

    return O.run_numpy(update, O.ARTICLE_STEPS)


@pytest.mark.parametrize("beta", [0.9, 0.5])
def test_article_convention_puts_eps_inside_the_root(beta):
    lr, eps = 0.01, 0.1
    ours = O.run_torch(lambda p: optim.RMSprop(p, lr=lr, alpha=beta, eps=eps,
                                               convention="article"), O.ARTICLE_STEPS)
    ref = _article_rmsprop(lr, beta, eps)
    O.assert_close(ours, ref, rtol=O.ARTICLE_RTOL, atol=O.ARTICLE_ATOL,
                   cell="rmsprop|article|numpy")
    outside = _article_rmsprop(lr, beta, eps, eps_inside=False)
    assert max(np.max(np.abs(a - b)) for a, b in zip(ref, outside)) > 1e-3
