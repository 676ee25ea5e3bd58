"""Nadam against torch.optim.NAdam, keras.optimizers.Nadam and Dozat (2016)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import _oracle as O
from optarena import optim

# keras's torch Nadam converts its scalar u_product through np.array(), which NumPy 2 warns about
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

GRID = list(itertools.product([4e-3, 1e-2], [0.0, 1e-2]))


@pytest.mark.parametrize("momentum_decay,weight_decay", GRID)
def test_pytorch_convention_equals_torch_nadam(momentum_decay, weight_decay):
    hp = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-6, momentum_decay=momentum_decay,
              weight_decay=weight_decay)
    ours = O.run_torch(lambda p: optim.Nadam(p, convention="pytorch", **hp), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: torch.optim.NAdam(p, decoupled_weight_decay=False, **hp),
                      O.TORCH_STEPS)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL,
                   cell="nadam|pytorch|torch.optim")


def test_pytorch_convention_defaults_equal_torch_defaults():
    ours = O.run_torch(lambda p: optim.Nadam(p, convention="pytorch"), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: torch.optim.NAdam(p), O.TORCH_STEPS)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL,
                   cell="nadam|pytorch|torch.optim")


@pytest.mark.parametrize(
    "ours_hp,keras_hp",
    [
        ({}, {}),
        (dict(lr=0.01, betas=(0.8, 0.99), eps=1e-3),
         dict(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-3)),
    ],
    ids=["defaults", "custom"],
)
def test_keras_convention_equals_keras_nadam(ours_hp, keras_hp):
    ours = O.run_torch(lambda p: optim.Nadam(p, convention="keras", **ours_hp), O.KERAS_STEPS,
                       dtype=torch.float32)
    ref = O.run_keras(O.make_keras("Nadam", **keras_hp), O.KERAS_STEPS)
    O.assert_close(ours, ref, rtol=O.KERAS_RTOL, atol=O.KERAS_ATOL, cell="nadam|keras|keras")


@pytest.mark.parametrize("momentum_decay", [0.004, 0.05])
def test_article_convention_is_dozat_2016(momentum_decay):
    lr, b1, b2, eps = 0.01, 0.9, 0.99, 0.1

    def mu(t):  # mu_t = b1 * (1 - 0.5 * 0.96^(t * psi)); Dozat: psi = 0.004 (t/250)
        return b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))

    def prod_mu(t):  # prod_{i<=t} mu_i, recomputed from scratch each time
        return float(np.prod([mu(i) for i in range(1, t + 1)]))

    def update(t, i, w, g, state):
        m = b1 * state.get("m", np.zeros_like(w)) + (1 - b1) * g
        n = b2 * state.get("n", np.zeros_like(w)) + (1 - b2) * g * g
        state["m"], state["n"] = m, n
        m_bar = (1 - mu(t)) * g / (1 - prod_mu(t)) + mu(t + 1) * m / (1 - prod_mu(t + 1))
        n_hat = n / (1 - b2**t)
        return w - lr * m_bar / (np.sqrt(n_hat) + eps)

    ours = O.run_torch(
        lambda p: optim.Nadam(p, lr=lr, betas=(b1, b2), eps=eps, momentum_decay=momentum_decay,
                              convention="article"),
        O.ARTICLE_STEPS,
    )
    ref = O.run_numpy(update, O.ARTICLE_STEPS)
    O.assert_close(ours, ref, rtol=O.ARTICLE_RTOL, atol=O.ARTICLE_ATOL, cell="nadam|article|numpy")
