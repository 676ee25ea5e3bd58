"""SGD against torch.optim.SGD, keras.optimizers.SGD and the article's w = w - alpha * g."""

from __future__ import annotations

import itertools

import pytest
import torch

import _oracle as O
from optarena import optim

GRID = list(itertools.product([0.0, 0.9], [0.0, 0.3], [False, True], [0.0, 1e-2]))


@pytest.mark.parametrize("momentum,dampening,nesterov,weight_decay", GRID)
def test_pytorch_convention_equals_torch_sgd(momentum, dampening, nesterov, weight_decay):
    hp = dict(lr=0.05, momentum=momentum, dampening=dampening, nesterov=nesterov,
              weight_decay=weight_decay)
    if nesterov and (momentum == 0 or dampening != 0):
        # torch refuses these; so must the convention that claims to be torch
        p = [torch.zeros(2, requires_grad=True)]
        with pytest.raises(ValueError):
            torch.optim.SGD(p, **hp)
        with pytest.raises(ValueError, match="(?i)nesterov"):
            optim.SGD(p, convention="pytorch", **hp)
        return
    ours = O.run_torch(lambda p: optim.SGD(p, convention="pytorch", **hp), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: torch.optim.SGD(p, **hp), O.TORCH_STEPS)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL, cell="sgd|pytorch|torch.optim")


def test_pytorch_convention_defaults_equal_torch_defaults():
    ours = O.run_torch(lambda p: optim.SGD(p, convention="pytorch"), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: torch.optim.SGD(p), O.TORCH_STEPS)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL, cell="sgd|pytorch|torch.optim")


@pytest.mark.parametrize(
    "ours_hp,keras_hp",
    [
        ({}, {}),  # both libraries' defaults
        (dict(lr=0.05, momentum=0.8), dict(learning_rate=0.05, momentum=0.8)),
        (dict(lr=0.05, momentum=0.8, nesterov=True),
         dict(learning_rate=0.05, momentum=0.8, nesterov=True)),
    ],
    ids=["defaults", "momentum", "nesterov"],
)
def test_keras_convention_equals_keras_sgd(ours_hp, keras_hp):
    ours = O.run_torch(lambda p: optim.SGD(p, convention="keras", **ours_hp), O.KERAS_STEPS,
                       dtype=torch.float32)
    ref = O.run_keras(O.make_keras("SGD", **keras_hp), O.KERAS_STEPS)
    O.assert_close(ours, ref, rtol=O.KERAS_RTOL, atol=O.KERAS_ATOL, cell="sgd|keras|keras")


@pytest.mark.parametrize("lr", [0.05, 0.3])
def test_article_convention_is_plain_gradient_step(lr):
    def update(t, i, w, g, state):
        return w - lr * g  # w = w - alpha * g

    ours = O.run_torch(lambda p: optim.SGD(p, lr=lr, convention="article"), O.ARTICLE_STEPS)
    ref = O.run_numpy(update, O.ARTICLE_STEPS)
    O.assert_close(ours, ref, rtol=O.ARTICLE_RTOL, atol=O.ARTICLE_ATOL, cell="sgd|article|numpy")
