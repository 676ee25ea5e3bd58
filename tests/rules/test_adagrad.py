"""AdaGrad against torch.optim.Adagrad (dense and sparse), keras.optimizers.Adagrad and the
article's G = G + g^2, w = w - alpha / sqrt(G + eps) * g (eps inside the root)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import _oracle as O
import _sparse as S
from optarena import optim

GRID = list(itertools.product([0.0, 1e-3], [0.0, 0.1], [0.0, 1e-2], [1e-10, 1e-3]))


@pytest.mark.parametrize("lr_decay,initial_accumulator_value,weight_decay,eps", GRID)
def test_pytorch_convention_equals_torch_adagrad(lr_decay, initial_accumulator_value,
                                                 weight_decay, eps):
    hp = dict(lr=0.05, lr_decay=lr_decay, initial_accumulator_value=initial_accumulator_value,
              weight_decay=weight_decay, eps=eps)
    ours = O.run_torch(lambda p: optim.AdaGrad(p, convention="pytorch", **hp), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: torch.optim.Adagrad(p, **hp), O.TORCH_STEPS)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL,
                   cell="adagrad|pytorch|torch.optim")


def test_pytorch_convention_defaults_equal_torch_defaults():
    ours = O.run_torch(lambda p: optim.AdaGrad(p, convention="pytorch"), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: torch.optim.Adagrad(p), O.TORCH_STEPS)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL,
                   cell="adagrad|pytorch|torch.optim")


@pytest.mark.parametrize(
    "ours_hp,keras_hp",
    [
        ({}, {}),
        (dict(lr=0.05, initial_accumulator_value=0.5, eps=1e-3),
         dict(learning_rate=0.05, initial_accumulator_value=0.5, epsilon=1e-3)),
    ],
    ids=["defaults", "custom"],
)
def test_keras_convention_equals_keras_adagrad(ours_hp, keras_hp):
    ours = O.run_torch(lambda p: optim.AdaGrad(p, convention="keras", **ours_hp), O.KERAS_STEPS,
                       dtype=torch.float32)
    ref = O.run_keras(O.make_keras("Adagrad", **keras_hp), O.KERAS_STEPS)
    O.assert_close(ours, ref, rtol=O.KERAS_RTOL, atol=O.KERAS_ATOL, cell="adagrad|keras|keras")


def _article_adagrad(lr, eps, g0, eps_inside=True):
    def update(t, i, w, g, state):
        G = state.get("G", np.full_like(w, g0)) + g * g  # G = G + g^2
        state["G"] = G
        if eps_inside:
            return w - lr / np.sqrt(G + eps) * g  # w = w - alpha / sqrt(G + eps) * g
        return w - lr / (np.sqrt(G) + eps) * g  # the other placement, to show the test sees it

    return O.run_numpy(update, O.ARTICLE_STEPS)


def test_article_convention_puts_eps_inside_the_root():
    # the article's G starts at 0 (its convention has no initial_accumulator_value)
    lr, eps = 0.1, 0.1
    ours = O.run_torch(lambda p: optim.AdaGrad(p, lr=lr, eps=eps, convention="article"),
                       O.ARTICLE_STEPS)
    ref = _article_adagrad(lr, eps, 0.0)
    O.assert_close(ours, ref, rtol=O.ARTICLE_RTOL, atol=O.ARTICLE_ATOL,
                   cell="adagrad|article|numpy")
    outside = _article_adagrad(lr, eps, 0.0, eps_inside=False)
    assert max(np.max(np.abs(a - b)) for a, b in zip(ref, outside)) > 1e-3  # eps=0.1 pins it


# ---- sparse gradients ---------------------------------------------------------------------------

SPARSE_HP = {
    "article": dict(lr=0.1, eps=0.1),
    "pytorch": dict(lr=0.1, lr_decay=1e-3, initial_accumulator_value=0.1, eps=1e-10),
    "keras": dict(lr=0.1, initial_accumulator_value=0.1, eps=1e-7),
}


@pytest.mark.parametrize("convention", O.CONVENTIONS)
def test_sparse_gradients_give_the_dense_result(convention):
    hp = SPARSE_HP[convention]
    make = lambda p: optim.AdaGrad(p, convention=convention, **hp)  # noqa: E731
    init = S.initial_table()
    sparse = S.train(make, sparse=True, steps=30, init=init)
    dense = S.train(make, sparse=False, steps=30, init=init)
    O.assert_close([sparse.numpy()], [dense.numpy()], rtol=1e-10, atol=1e-12,
                   cell=f"adagrad|{convention}|dense-vs-sparse")
    # rows never looked up are untouched by either path
    assert torch.equal(sparse[S.USED:], init[S.USED:])
    assert torch.equal(dense[S.USED:], init[S.USED:])


@pytest.mark.parametrize("convention", O.CONVENTIONS)
def test_sparse_step_leaves_absent_rows_bitwise_untouched(convention):
    indices = torch.tensor([[1, 3, 3], [5, 1, 1], [3, 7, 7], [1, 1, 1], [5, 5, 3], [7, 1, 3]])
    init = S.initial_table()
    out = S.train(lambda p: optim.AdaGrad(p, convention=convention, **SPARSE_HP[convention]),
                  sparse=True, steps=1, init=init, indices=indices)
    present = torch.zeros(S.ROWS, dtype=torch.bool)
    present[indices.unique()] = True
    assert torch.equal(out[~present], init[~present])
    assert (out[present] != init[present]).any(dim=1).all()


@pytest.mark.parametrize(
    "hp",
    [dict(lr=0.1), dict(lr=0.1, lr_decay=1e-3, initial_accumulator_value=0.1, eps=1e-6)],
    ids=["lr", "all-options"],
)
def test_pytorch_convention_sparse_equals_torch_adagrad_sparse(hp):
    init = S.initial_table()
    ours = S.train(lambda p: optim.AdaGrad(p, convention="pytorch", **hp), sparse=True, steps=30,
                   init=init)
    ref = S.train(lambda p: torch.optim.Adagrad(p, **hp), sparse=True, steps=30, init=init)
    O.assert_close([ours.numpy()], [ref.numpy()], rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL,
                   cell="adagrad|pytorch|torch.optim-sparse")
