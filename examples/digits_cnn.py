"""A small CNN on scikit-learn's digits (1,797 images of 8x8 pixels, bundled: nothing is
downloaded), with a custom loss: cross-entropy with label smoothing.

    optarena compare examples/digits_cnn.py --budget 8 --seeds 3
"""

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

batch_size = 32
steps = 200


def model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # 8x8 -> 4x4
        nn.Conv2d(6, 12, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 4x4 -> 2x2
        nn.Flatten(), nn.Linear(12 * 2 * 2, 10),
    )


def data():
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(y, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, val = order[:1400], order[1400:]
    return (x[train], y[train]), (x[val], y[val])


def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output, target, label_smoothing=0.05)
