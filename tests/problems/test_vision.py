"""Vision and tabular problems: splits, and forward passes against plain torch.nn oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

SPLITS = {"digits_mlp": (1400, 397, 1797), "breast_cancer_logreg": (455, 114, 569), "mnist_mlp": (4000, 1000, 5000),
          "mnist_cnn": (4000, 1000, 5000)}


@pytest.mark.parametrize("name", list(SPLITS))
def test_splits_are_disjoint_stratified_and_of_the_stated_sizes(build, name):
    p = build(name)
    n_train, n_val, n_all = SPLITS[name]
    assert (p.n_train, p.n_val) == (n_train, n_val)
    assert len(p.x_train) == len(p.train_rows) == n_train and len(p.x_val) == len(p.val_rows) == n_val
    assert not set(p.train_rows) & set(p.val_rows)
    assert set(p.train_rows) | set(p.val_rows) == set(range(n_all))
    train_share = np.bincount(p.y_train.long().numpy()) / n_train
    val_share = np.bincount(p.y_val.long().numpy()) / n_val
    np.testing.assert_allclose(train_share, val_share, atol=0.02)


@pytest.mark.parametrize("name", ["digits_mlp", "mnist_mlp", "mnist_cnn"])
def test_images_are_scaled_to_unit_interval(build, name):
    p = build(name)
    assert p.x_train.min() == 0.0 and p.x_train.max() == 1.0


def test_breast_cancer_standardised_with_train_statistics(build):
    p = build("breast_cancer_logreg")
    features = p.x_train[:, :30]
    torch.testing.assert_close(features.mean(0), torch.zeros(30), atol=1e-5, rtol=0)
    torch.testing.assert_close(features.std(0, unbiased=False), torch.ones(30), atol=1e-4, rtol=0)
    assert (p.x_train[:, 30] == 1).all() and (p.x_val[:, 30] == 1).all()
    params = p.init_params(torch.tensor([0, 1]))
    assert params["w"].shape == (2, 31)
    torch.testing.assert_close(p.evaluate(params)["val_loss"], torch.full((2,), math.log(2)))


def test_breast_cancer_loss_matches_sklearn(build):
    from sklearn.metrics import log_loss

    p = build("breast_cancer_logreg")
    w = torch.randn(1, 31, generator=torch.Generator().manual_seed(0))
    prob = torch.sigmoid(p.x_val.double() @ w[0].double()).numpy()
    expected = log_loss(p.y_val.numpy(), prob)
    assert p.evaluate({"w": w})["val_loss"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("name", "activation"), [("digits_mlp", nn.Tanh()), ("mnist_mlp", nn.ReLU())])
def test_mlp_matches_torch_nn(build, name, activation):
    p = build(name)
    params = p.init_params(torch.tensor([2, 5]))
    x = p.x_val[:50]
    logits = p.forward(params, x.expand(2, *x.shape))
    for r in range(2):
        # weights as nn.Linear holds them, (out, in)
        first, second = nn.Linear(*params["w1"][r].shape[::-1]), nn.Linear(*params["w2"][r].shape[::-1])
        with torch.no_grad():
            first.weight.copy_(params["w1"][r]), first.bias.copy_(params["b1"][r])
            second.weight.copy_(params["w2"][r]), second.bias.copy_(params["b2"][r])
        torch.testing.assert_close(logits[r], nn.Sequential(first, activation, second)(x), rtol=1e-5, atol=1e-5)
    expected = torch.stack([F.cross_entropy(logits[r], p.y_val[:50]) for r in range(2)])
    torch.testing.assert_close(p.example_loss(logits, p.y_val[:50]).mean(-1), expected)


def test_mlp_hidden_option(build):
    p = build("digits_mlp", hidden=16)
    assert p.init_params(torch.tensor([0]))["w1"].shape == (1, 16, 64)  # (runs, hidden, inputs)


def test_cnn_matches_ungrouped_convolutions(build):
    p = build("mnist_cnn")
    params = p.init_params(torch.tensor([1, 4, 9]))
    x = p.x_val[:20]
    logits = p.forward(params, x.expand(3, *x.shape))
    assert logits.shape == (3, 20, 10)
    for r in range(3):
        h = F.conv2d(x.view(20, 1, 28, 28), params["conv1_w"][r], params["conv1_b"][r])
        h = F.max_pool2d(F.relu(h), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, params["conv2_w"][r], params["conv2_b"][r])), 2)
        expected = h.flatten(1) @ params["fc_w"][r] + params["fc_b"][r]
        torch.testing.assert_close(logits[r], expected, rtol=1e-5, atol=1e-5)


def test_accuracy_counts_correct_predictions(build):
    p = build("digits_mlp")
    params = p.init_params(torch.tensor([0]))
    logits = p.forward(params, p.x_val[None])
    expected = (logits[0].argmax(-1) == p.y_val).float().mean()
    torch.testing.assert_close(p.evaluate(params)["val_accuracy"][0], expected)
