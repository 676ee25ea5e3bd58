"""Sparse logistic regression: data shape and tails, loss against scikit-learn / SciPy oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss


def _random_w(p, runs=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"w": 0.3 * torch.randn(runs, p.n_features + 1, generator=g)}


def test_zipf_sizes_and_heavy_tail(build):
    p = build("sparse_zipf")
    assert p.n_features >= 100_000
    ids, labels = p.train_data()
    assert ids.shape == (20_000, 20) and ids.dtype == torch.long and labels.shape == (20_000,)
    assert p.val_data()[0].shape == (5_000, 20)
    assert ids.min() >= 0 and ids.max() < p.n_features
    # Binary features: the k ids of a row are distinct.
    assert (ids.sort(1).values.diff(dim=1) > 0).all()
    counts = p.feature_counts
    assert counts.sum() == ids.numel()
    seen = counts[counts > 0]
    assert counts.max() > 100 * np.median(seen)  # a few features everywhere, most almost nowhere
    assert len(p.rare_features) > 10_000
    assert ((counts[p.rare_features] >= 1) & (counts[p.rare_features] <= 5)).all()


def test_ctr_sizes(build):
    p = build("sparse_ctr")
    assert p.n_features >= 1_000_000
    ids, labels = p.train_data()
    assert ids.shape == (100_000, 10) and p.val_data()[0].shape == (20_000, 10)
    assert ids.max() < p.n_features
    assert (p.feature_counts > 0).sum() > 50_000  # many distinct hashed ids are used
    assert 0.1 < labels.mean().item() < 0.5


@pytest.mark.parametrize("name", ["sparse_zipf", "sparse_ctr"])
def test_labels_follow_the_true_weights(build, name):
    p = build(name)
    ids, labels = p.train_data()
    true_logits = p.w_true[ids].sum(1) + p.bias_true
    assert labels.mean().item() == pytest.approx(torch.sigmoid(true_logits).mean().item(), abs=0.01)
    # The true weights beat w = 0 on held-out data.
    w = torch.cat([p.w_true, torch.tensor([p.bias_true])])[None]
    assert p.evaluate({"w": w})["val_loss"].item() < math.log(2) - 0.05


@pytest.mark.parametrize("name", ["sparse_zipf", "sparse_ctr"])
def test_loss_at_zero_is_log_2(build, name):
    p = build(name)
    params = p.init_params(torch.tensor([0, 1]))
    assert params["w"].shape == (2, p.n_features + 1)
    metrics = p.evaluate(params)
    torch.testing.assert_close(metrics["train_loss"], torch.full((2,), math.log(2)))
    torch.testing.assert_close(metrics["val_loss"], torch.full((2,), math.log(2)))


@pytest.mark.parametrize("name", ["sparse_zipf", "sparse_ctr"])
def test_loss_matches_scipy_and_sklearn(build, stacked_batch, name):
    p = build(name)
    params = _random_w(p)
    ids, labels = p.val_data()
    x = p.to_scipy_csr(ids[:3000])
    assert x.shape == (3000, p.n_features)
    for r in range(2):
        w = params["w"][r].double().numpy()
        prob = 1 / (1 + np.exp(-(x @ w[:-1] + w[-1])))
        expected = log_loss(labels[:3000].numpy(), prob, labels=[0, 1])
        got = p.example_loss(p.forward(params, ids[:3000].expand(2, 3000, -1)), labels[:3000])[r].mean()
        assert got.item() == pytest.approx(expected, rel=1e-5)
    # The minibatch loss is the mean over the rows the batch names.
    batch = stacked_batch(p, 0, [4, 9])
    rows = batch[0]
    train_ids, train_labels = p.train_data()
    loss = p.loss(params, batch)
    for r in range(2):
        x_rows = p.to_scipy_csr(train_ids[rows[r]])
        w = params["w"][r].double().numpy()
        prob = 1 / (1 + np.exp(-(x_rows @ w[:-1] + w[-1])))
        assert loss[r].item() == pytest.approx(log_loss(train_labels[rows[r]].numpy(), prob, labels=[0, 1]), rel=1e-5)


def test_rare_weight_error(build):
    p = build("sparse_zipf")
    truth = {"w": torch.cat([p.w_true, torch.zeros(1)])[None]}
    assert p.rare_weight_error(truth).item() == 0.0
    zero = p.init_params(torch.tensor([0]))
    expected = np.sqrt(np.mean(p.w_true.numpy()[p.rare_features] ** 2))
    assert p.rare_weight_error(zero).item() == pytest.approx(expected, rel=1e-5)
    assert p.evaluate(zero)["rare_weight_error"].item() == pytest.approx(expected, rel=1e-5)


def test_csr_sums_repeated_ids(build):
    p = build("sparse_zipf")
    x = p.to_scipy_csr(np.array([[0, 5, 5], [1, 2, 3]]))
    assert x[0, 5] == 2.0 and x[0, 0] == 1.0 and x[1].sum() == 3.0


def test_data_is_the_same_every_time():
    from optarena.problems.sparse import SparseZipf

    a, b = SparseZipf(n_features=1000, n_train=500, n_val=100), SparseZipf(n_features=1000, n_train=500, n_val=100)
    assert torch.equal(a.train_data()[0], b.train_data()[0]) and torch.equal(a.val_data()[1], b.val_data()[1])
    assert torch.equal(a.w_true, b.w_true)
