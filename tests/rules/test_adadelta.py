"""Adadelta against torch.optim.Adadelta, keras.optimizers.Adadelta and Zeiler (2012),
Algorithm 1, with the learning rate applied to the step as w = w + lr * dx."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import _oracle as O
from optarena import optim

GRID = list(itertools.product([1.0, 0.5], [0.9, 0.5], [0.0, 1e-2]))


@pytest.mark.parametrize("lr,rho,weight_decay", GRID)
def test_pytorch_convention_equals_torch_adadelta(lr, rho, weight_decay):
    hp = dict(lr=lr, rho=rho, weight_decay=weight_decay)
    ours = O.run_torch(lambda p: optim.Adadelta(p, convention="pytorch", **hp), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: torch.optim.Adadelta(p, **hp), O.TORCH_STEPS)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL,
                   cell="adadelta|pytorch|torch.optim")


def test_pytorch_convention_with_large_eps_equals_torch():
    hp = dict(lr=1.0, rho=0.9, eps=1e-2)
    ours = O.run_torch(lambda p: optim.Adadelta(p, convention="pytorch", **hp), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: torch.optim.Adadelta(p, **hp), O.TORCH_STEPS)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL,
                   cell="adadelta|pytorch|torch.optim")


def test_pytorch_convention_defaults_equal_torch_defaults():
    ours = O.run_torch(lambda p: optim.Adadelta(p, convention="pytorch"), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: torch.optim.Adadelta(p), O.TORCH_STEPS)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL,
                   cell="adadelta|pytorch|torch.optim")


@pytest.mark.parametrize(
    "ours_hp,keras_hp",
    [
        ({}, {}),
        (dict(lr=1.0, rho=0.9, eps=1e-4), dict(learning_rate=1.0, rho=0.9, epsilon=1e-4)),
    ],
    ids=["defaults", "custom"],
)
def test_keras_convention_equals_keras_adadelta(ours_hp, keras_hp):
    ours = O.run_torch(lambda p: optim.Adadelta(p, convention="keras", **ours_hp), O.KERAS_STEPS,
                       dtype=torch.float32)
    ref = O.run_keras(O.make_keras("Adadelta", **keras_hp), O.KERAS_STEPS)
    O.assert_close(ours, ref, rtol=O.KERAS_RTOL, atol=O.KERAS_ATOL, cell="adadelta|keras|keras")


@pytest.mark.parametrize("lr", [1.0, 0.5])
def test_article_convention_is_zeiler_algorithm_1(lr):
    rho, eps = 0.9, 0.1

    def update(t, i, w, g, state):
        Eg2 = rho * state.get("Eg2", np.zeros_like(w)) + (1 - rho) * g * g  # accumulate gradient
        Edx2 = state.get("Edx2", np.zeros_like(w))
        dx = -np.sqrt(Edx2 + eps) / np.sqrt(Eg2 + eps) * g  # -RMS[dx]_{t-1} / RMS[g]_t * g_t
        state["Eg2"], state["Edx2"] = Eg2, rho * Edx2 + (1 - rho) * dx * dx  # accumulate update
        return w + lr * dx  # apply update

    ours = O.run_torch(lambda p: optim.Adadelta(p, lr=lr, rho=rho, eps=eps, convention="article"),
                       O.ARTICLE_STEPS)
    ref = O.run_numpy(update, O.ARTICLE_STEPS)
    O.assert_close(ours, ref, rtol=O.ARTICLE_RTOL, atol=O.ARTICLE_ATOL,
                   cell="adadelta|article|numpy")
