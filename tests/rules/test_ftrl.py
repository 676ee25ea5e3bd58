"""FTRL against keras.optimizers.Ftrl and McMahan et al. (2013), Algorithm 1 (FTRL-Proximal,
per coordinate, L1 and L2), and sparse against dense gradients. There is no torch original."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import _oracle as O
import _sparse as S
from optarena import optim
from optarena import rules as conventions

# ---- Keras ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ours_hp,keras_hp",
    [
        ({}, {}),
        (dict(lr=0.05, lr_power=-0.3, initial_accumulator_value=0.5, l1=0.01, l2=0.02,
              l2_shrinkage=0.03, beta=0.1),
         dict(learning_rate=0.05, learning_rate_power=-0.3, initial_accumulator_value=0.5,
              l1_regularization_strength=0.01, l2_regularization_strength=0.02,
              l2_shrinkage_regularization_strength=0.03, beta=0.1)),
    ],
    ids=["defaults", "all-options"],
)
def test_keras_convention_equals_keras_ftrl(ours_hp, keras_hp):
    ours = O.run_torch(lambda p: optim.FTRL(p, convention="keras", **ours_hp), O.KERAS_STEPS,
                       dtype=torch.float32)
    ref = O.run_keras(O.make_keras("Ftrl", **keras_hp), O.KERAS_STEPS)
    O.assert_close(ours, ref, rtol=O.KERAS_RTOL, atol=O.KERAS_ATOL, cell="ftrl|keras|keras")
    for a, e in zip(ours, ref):  # the L1 clip gives exact zeros; they must be the same ones
        np.testing.assert_array_equal(a == 0, e == 0)


# ---- McMahan et al. 2013, Algorithm 1, on a sparse logistic regression --------------------------

D, N, B = 30, 128, 16


def _logistic_data():
    rng = np.random.default_rng(5)
    x = (rng.random((N, D)) < 0.15) * (0.5 + rng.random((N, D)))  # ~15% of features present
    x[:, 0] = 1.0  # a bias feature
    w_true = np.zeros(D)
    w_true[[0, 3, 7, 11, 19]] = [-0.5, 2.0, -2.0, 1.5, 2.5]
    y = (rng.random(N) < 1 / (1 + np.exp(-x @ w_true))).astype(np.float64)
    return x, y


def _batch(x, y, t):
    lo = (t % (N // B)) * B
    return x[lo : lo + B], y[lo : lo + B]


def _mcmahan(x, y, steps, alpha, beta, l1, l2):
    z, n = np.zeros(D), np.zeros(D)

    def weights():  # w_i = 0 if |z_i| <= l1 else -(z_i - sgn(z_i) l1) / ((beta + sqrt(n_i))/alpha + l2)
        w = np.zeros(D)
        active = np.abs(z) > l1
        w[active] = -(z[active] - np.sign(z[active]) * l1) / (
            (beta + np.sqrt(n[active])) / alpha + l2
        )
        return w

    for t in range(steps):
        w = weights()
        xb, yb = _batch(x, y, t)
        p = 1 / (1 + np.exp(-xb @ w))
        g = xb.T @ (p - yb) / B  # gradient of the mean log loss
        sigma = (np.sqrt(n + g * g) - np.sqrt(n)) / alpha
        z += g - sigma * w
        n += g * g
    return weights()


def _article_hp(alpha, beta, l1, l2):
    """The paper's four hyperparameters, plus the ones the paper fixes (lr_power = -1/2, no
    accumulator offset, no shrinkage) where the article convention has them at all."""
    hp = dict(lr=alpha, beta=beta, l1=l1, l2=l2)
    extra = dict(lr_power=-0.5, initial_accumulator_value=0.0, l2_shrinkage=0.0)
    article_defaults = conventions.defaults("ftrl", "article")
    hp.update({k: v for k, v in extra.items() if k in article_defaults})
    return hp


@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_article_convention_is_mcmahan_algorithm_1(l2):
    alpha, beta, l1, steps = 0.5, 1.0, 0.5, O.ARTICLE_STEPS
    x, y = _logistic_data()
    ref = _mcmahan(x, y, steps, alpha, beta, l1, l2)

    w = torch.zeros(D, dtype=torch.float64, requires_grad=True)
    opt = optim.FTRL([w], convention="article", **_article_hp(alpha, beta, l1, l2))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for t in range(steps):
        lo = (t % (N // B)) * B
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(
            xt[lo : lo + B] @ w, yt[lo : lo + B]
        ).backward()
        opt.step()
    ours = w.detach().numpy()

    assert 0 < (ref == 0).sum() < D  # the test needs both exact zeros and active weights
    np.testing.assert_array_equal(ours == 0, ref == 0, err_msg="exact-zero pattern differs")
    O.assert_close([ours], [ref], rtol=O.ARTICLE_RTOL, atol=O.ARTICLE_ATOL,
                   cell="ftrl|article|numpy")


# ---- sparse gradients ---------------------------------------------------------------------------

SPARSE_HP = {
    "article": dict(lr=0.5, beta=1.0, l1=0.05, l2=0.1),
    "keras": dict(lr=0.5, beta=1.0, l1=0.05, l2=0.1),
}


@pytest.mark.parametrize("convention", ["article", "keras"])
def test_sparse_gradients_give_the_dense_result(convention):
    # from zero weights (FTRL's own start) a row that gets no gradient keeps w = 0 on the dense
    # path too, so both paths must agree everywhere
    make = lambda p: optim.FTRL(p, convention=convention, **SPARSE_HP[convention])  # noqa: E731
    init = S.initial_table("zeros")
    sparse = S.train(make, sparse=True, steps=30, init=init)
    dense = S.train(make, sparse=False, steps=30, init=init)
    O.assert_close([sparse.numpy()], [dense.numpy()], rtol=1e-10, atol=1e-12,
                   cell=f"ftrl|{convention}|dense-vs-sparse")
    np.testing.assert_array_equal(sparse.numpy() == 0, dense.numpy() == 0)
    assert (sparse[: S.USED] != 0).any()


@pytest.mark.parametrize("convention", ["article", "keras"])
def test_sparse_step_leaves_absent_rows_bitwise_untouched(convention):
    indices = torch.tensor([[1, 3, 3], [5, 1, 1], [3, 7, 7], [1, 1, 1], [5, 5, 3], [7, 1, 3]])
    init = S.initial_table()  # random, so an accidental rewrite of absent rows would show
    out = S.train(lambda p: optim.FTRL(p, convention=convention, **SPARSE_HP[convention]),
                  sparse=True, steps=1, init=init, indices=indices)
    present = torch.zeros(S.ROWS, dtype=torch.bool)
    present[indices.unique()] = True
    assert torch.equal(out[~present], init[~present])
    assert (out[present] != init[present]).any(dim=1).all()
