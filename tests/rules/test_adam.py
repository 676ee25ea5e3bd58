"""Adam and AdamW against torch.optim.Adam / AdamW, keras.optimizers.Adam / AdamW and the article's
formula (bias correction, eps inside the root), with and without bias correction."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import _oracle as O
from optarena import optim

ADAM_GRID = list(itertools.product([False, True], [0.0, 1e-2]))
ADAMW_GRID = list(itertools.product([False, True], [0.0, 0.1]))


@pytest.mark.parametrize("amsgrad,weight_decay", ADAM_GRID)
def test_pytorch_convention_equals_torch_adam(amsgrad, weight_decay):
    hp = dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, amsgrad=amsgrad, weight_decay=weight_decay)
    ours = O.run_torch(lambda p: optim.Adam(p, convention="pytorch", **hp), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: torch.optim.Adam(p, **hp), O.TORCH_STEPS)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL, cell="adam|pytorch|torch.optim")


@pytest.mark.parametrize("amsgrad,weight_decay", ADAMW_GRID)
def test_pytorch_convention_equals_torch_adamw(amsgrad, weight_decay):
    hp = dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, amsgrad=amsgrad, weight_decay=weight_decay)
    ours = O.run_torch(lambda p: optim.AdamW(p, convention="pytorch", **hp), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: torch.optim.AdamW(p, **hp), O.TORCH_STEPS)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL,
                   cell="adamw|pytorch|torch.optim")


@pytest.mark.parametrize("ours_cls,torch_cls", [("Adam", "Adam"), ("AdamW", "AdamW")])
def test_pytorch_convention_defaults_equal_torch_defaults(ours_cls, torch_cls):
    ours = O.run_torch(lambda p: getattr(optim, ours_cls)(p, convention="pytorch"), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: getattr(torch.optim, torch_cls)(p), O.TORCH_STEPS)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL,
                   cell=f"{ours_cls.lower()}|pytorch|torch.optim")


@pytest.mark.parametrize(
    "ours_hp,keras_hp",
    [
        ({}, {}),
        (dict(lr=0.01, betas=(0.8, 0.999), eps=1e-3, amsgrad=True),
         dict(learning_rate=0.01, beta_1=0.8, beta_2=0.999, epsilon=1e-3, amsgrad=True)),
    ],
    ids=["defaults", "custom-amsgrad"],
)
def test_keras_convention_equals_keras_adam(ours_hp, keras_hp):
    ours = O.run_torch(lambda p: optim.Adam(p, convention="keras", **ours_hp), O.KERAS_STEPS,
                       dtype=torch.float32)
    ref = O.run_keras(O.make_keras("Adam", **keras_hp), O.KERAS_STEPS)
    O.assert_close(ours, ref, rtol=O.KERAS_RTOL, atol=O.KERAS_ATOL, cell="adam|keras|keras")


@pytest.mark.parametrize(
    "ours_hp,keras_hp",
    [
        ({}, {}),
        (dict(lr=0.01, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-3, amsgrad=True),
         dict(learning_rate=0.01, weight_decay=0.1, beta_1=0.8, beta_2=0.99, epsilon=1e-3,
              amsgrad=True)),
    ],
    ids=["defaults", "custom-amsgrad"],
)
def test_keras_convention_equals_keras_adamw(ours_hp, keras_hp):
    ours = O.run_torch(lambda p: optim.AdamW(p, convention="keras", **ours_hp), O.KERAS_STEPS,
                       dtype=torch.float32)
    ref = O.run_keras(O.make_keras("AdamW", **keras_hp), O.KERAS_STEPS)
    O.assert_close(ours, ref, rtol=O.KERAS_RTOL, atol=O.KERAS_ATOL, cell="adamw|keras|keras")


def _article_adam(lr, b1, b2, eps, *, bias_correction=True, weight_decay=0.0, eps_inside=True):
    def update(t, i, w, g, state):
        m = b1 * state.get("m", np.zeros_like(w)) + (1 - b1) * g  # m = b1*m + (1-b1)*g
        v = b2 * state.get("v", np.zeros_like(w)) + (1 - b2) * g * g  # v = b2*v + (1-b2)*g^2
        state["m"], state["v"] = m, v
        if bias_correction:
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        else:
            m_hat, v_hat = m, v
        w = w - lr * weight_decay * w  # decoupled decay on the pre-update w (AdamW only)
        if eps_inside:
            return w - lr / np.sqrt(v_hat + eps) * m_hat  # w = w - alpha / sqrt(v^ + eps) * m^
        return w - lr / (np.sqrt(v_hat) + eps) * m_hat

    return O.run_numpy(update, O.ARTICLE_STEPS)


@pytest.mark.parametrize("bias_correction", [True, False])
def test_article_adam(bias_correction):
    lr, b1, b2, eps = 0.01, 0.9, 0.99, 0.1
    ours = O.run_torch(
        lambda p: optim.Adam(p, lr=lr, betas=(b1, b2), eps=eps, bias_correction=bias_correction,
                             convention="article"),
        O.ARTICLE_STEPS,
    )
    ref = _article_adam(lr, b1, b2, eps, bias_correction=bias_correction)
    O.assert_close(ours, ref, rtol=O.ARTICLE_RTOL, atol=O.ARTICLE_ATOL, cell="adam|article|numpy")
    outside = _article_adam(lr, b1, b2, eps, bias_correction=bias_correction, eps_inside=False)
    assert max(np.max(np.abs(a - b)) for a, b in zip(ref, outside)) > 1e-3


def test_article_adam_bias_correction_is_on_by_default():
    lr, b1, b2, eps = 0.01, 0.9, 0.99, 0.1
    ours = O.run_torch(lambda p: optim.Adam(p, lr=lr, betas=(b1, b2), eps=eps,
                                            convention="article"), O.ARTICLE_STEPS)
    ref = _article_adam(lr, b1, b2, eps, bias_correction=True)
    O.assert_close(ours, ref, rtol=O.ARTICLE_RTOL, atol=O.ARTICLE_ATOL, cell="adam|article|numpy")


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_article_adamw_decays_before_the_adam_step(weight_decay):
    lr, b1, b2, eps = 0.01, 0.9, 0.99, 0.1
    ours = O.run_torch(
        lambda p: optim.AdamW(p, lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay,
                              convention="article"),
        O.ARTICLE_STEPS,
    )
    ref = _article_adam(lr, b1, b2, eps, weight_decay=weight_decay)
    O.assert_close(ours, ref, rtol=O.ARTICLE_RTOL, atol=O.ARTICLE_ATOL, cell="adamw|article|numpy")
