"""Deeper networks on MNIST-5000: a plain deep MLP and a residual MLP (claim R7: Nadam on deep networks).

Same data and split as `vision.mnist_split` (4,000 / 1,000). The layers between input and output
layer have equal shapes, so each kind is stored as ONE stacked tensor with a layer axis, e.g.
hidden_w (R, L, width, width): few tensors for the engine to step, and `unbind` hands the layers to
the forward pass as views whose gradients autograd stacks back in one op.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from optarena.problems import _nn
from optarena.problems._checks import check_int
from optarena.problems._init import glorot_uniform, kaiming_uniform, per_seed
from optarena.problems._supervised import SupervisedProblem
from optarena.problems.vision import mnist_split

N_INPUTS, N_CLASSES = 784, 10


class _MnistNet(SupervisedProblem):
    default_steps = 1000

    def __init__(self, width: int, batch_size: int, dtype, device) -> None:
        super().__init__(batch_size, dtype, device)
        self.width = check_int("width", width, 1)
        x_train, y_train, x_val, y_val, self.train_rows, self.val_rows = mnist_split()
        self._set_data(x_train, y_train, x_val, y_val)

    def _input_and_output(self, g: torch.Generator) -> dict[str, Tensor]:
        width, dtype = self.width, self.dtype
        return {
            "in_w": kaiming_uniform(N_INPUTS, (N_INPUTS, width), g, dtype),
            "in_b": torch.zeros(width, dtype=dtype),
            "out_w": glorot_uniform(width, N_CLASSES, (width, N_CLASSES), g, dtype),
            "out_b": torch.zeros(N_CLASSES, dtype=dtype),
        }


class DeepMLP(_MnistNet):
    """MNIST-5000, a plain MLP with `depth` = 8 hidden ReLU layers of width 64: 784-64x8-10.

    Params in_w (R, 784, 64), in_b (R, 64), hidden_w (R, 7, 64, 64), hidden_b (R, 7, 64),
    out_w (R, 64, 10), out_b (R, 10): 9 weight layers. Kaiming-uniform hidden weights,
    Glorot-uniform output weights, zero biases; softmax cross-entropy; minibatches of 128. Without
    skip connections or normalisation the gradient passes through every layer, which makes it harder
    to train than mnist_mlp. In the suite for claim R7 (Nadam on deep networks).
    """

    name = "deep_mlp"
    tags = frozenset({"deep", "vision"})

    def __init__(self, depth: int = 8, width: int = 64, batch_size: int = 128, dtype=torch.float32, device="cpu"):
        super().__init__(width, batch_size, dtype, device)
        self.depth = check_int("depth", depth, 1)
        self.activation_size = 2 * (self.depth * self.width + N_CLASSES)

    def init_params(self, seeds: Tensor) -> dict[str, Tensor]:
        width, stacked, dtype = self.width, self.depth - 1, self.dtype

        def draw(g: torch.Generator) -> dict[str, Tensor]:
            params = self._input_and_output(g)
            params["hidden_w"] = kaiming_uniform(width, (stacked, width, width), g, dtype)
            params["hidden_b"] = torch.zeros(stacked, width, dtype=dtype)
            return params

        return per_seed(seeds, draw, self.device)

    def forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        hidden = zip(params["hidden_w"].unbind(1), params["hidden_b"].unbind(1))
        layers = [(params["in_w"], params["in_b"]), *hidden, (params["out_w"], params["out_b"])]
        return _nn.mlp(x, layers, torch.relu)


class ResidualMLP(_MnistNet):
    """MNIST-5000, a residual MLP: 784-64, then `blocks` = 16 pre-activation residual blocks, then 64-10.

    h = x W_in + b_in;  h <- h + W2 relu(W1 relu(h) + b1) + b2 (16 times);  logits = relu(h) W_out + b_out.
    Params in_w (R, 784, 64), in_b, block_w1 / block_w2 (R, 16, 64, 64), block_b1 / block_b2 (R, 16, 64),
    out_w (R, 64, 10), out_b. Kaiming-uniform W1 and W_in; W2 Kaiming-uniform scaled by 1/sqrt(blocks)
    so the residual stream's variance grows by about e, not 2^16, over the blocks; Glorot-uniform
    output; zero biases. Minibatches of 128. Pre-activation blocks after He et al. (2016),
    "Identity mappings in deep residual networks". In the suite as the deep network that skip
    connections make trainable (claim R7), 33 weight layers deep.
    """

    name = "residual_mlp"
    tags = frozenset({"deep", "vision", "residual"})

    def __init__(self, blocks: int = 16, width: int = 64, batch_size: int = 128, dtype=torch.float32, device="cpu"):
        super().__init__(width, batch_size, dtype, device)
        self.blocks = check_int("blocks", blocks, 1)
        self.activation_size = 4 * (self.blocks * self.width) + 2 * N_CLASSES

    def init_params(self, seeds: Tensor) -> dict[str, Tensor]:
        width, blocks, dtype = self.width, self.blocks, self.dtype
        shape = (blocks, width, width)

        def draw(g: torch.Generator) -> dict[str, Tensor]:
            params = self._input_and_output(g)
            params["block_w1"] = kaiming_uniform(width, shape, g, dtype)
            params["block_b1"] = torch.zeros(blocks, width, dtype=dtype)
            params["block_w2"] = kaiming_uniform(width, shape, g, dtype) / math.sqrt(blocks)
            params["block_b2"] = torch.zeros(blocks, width, dtype=dtype)
            return params

        return per_seed(seeds, draw, self.device)

    def forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        h = _nn.linear(x, params["in_w"], params["in_b"])
        blocks = zip(*(params[k].unbind(1) for k in ("block_w1", "block_b1", "block_w2", "block_b2")))
        for w1, b1, w2, b2 in blocks:
            h = h + _nn.linear(torch.relu(_nn.linear(torch.relu(h), w1, b1)), w2, b2)
        return _nn.linear(torch.relu(h), params["out_w"], params["out_b"])
