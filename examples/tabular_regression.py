"""Tabular regression: scikit-learn's diabetes data (442 patients, 10 features, bundled: nothing
is downloaded), a small MLP, mean squared error on standardised targets.

    optarena compare examples/tabular_regression.py --budget 8 --seeds 3
"""

import torch
from sklearn.datasets import load_diabetes
from torch import nn

batch_size = 32
steps = 300


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))


def data():
    x, y = load_diabetes(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, val = order[:342], order[342:]
    # Standardise inputs and targets with the training split's statistics only.
    x = (x - x[train].mean(0)) / x[train].std(0)
    y = (y - y[train].mean()) / y[train].std()
    return (x[train], y[train]), (x[val], y[val])

# No loss(): float targets get mean squared error; the (B, 1) output is matched to y's (B,).
