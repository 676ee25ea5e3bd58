"""Batchable stand-ins for the few torch ops that `vmap` cannot batch (or cannot batch reproducibly),
active around every forward pass of a user's model, batched or alone, so both compute the same.

`BatchableOps(key)` is a ``TorchFunctionMode``: a call to one of the ops below goes to its
stand-in, every other call runs unchanged.

- **Dropout** (``F.dropout``, ``torch.dropout``; so ``nn.Dropout``, the dropouts of
  ``nn.TransformerEncoderLayer`` and the attention dropout of ``nn.MultiheadAttention``): the mask is
  a hash of (run key, call number, element number), not a draw from torch's global RNG. The run key
  is the run's noise seed at this step (a tensor, batched under vmap), so inside one vmap every run
  has its own masks, and they equal the masks of the same run alone. Element i is kept where
  ``u_i / 2**32 >= p``, ``u_i = lowbias32((i * GOLDEN) xor base)`` (C. Wellons's hash; ``base``
  is SplitMix64 of the key and the call number, Steele et al. 2014), and scaled by ``1 / (1 - p)``
  as torch does (``inplace=True`` returns a new tensor, as every user of the return value expects).
  Other random ops (``torch.randn``, ``Dropout2d``, ...) still draw from torch's global RNG.
- **Attention** (``F.scaled_dot_product_attention``): ``softmax(q k^T * scale + mask) v`` written
  out, with the keyed dropout on the weights; torch's fused kernels have no batching rule (vmap
  would loop over runs) and draw their dropout from the global RNG.
- **MultiheadAttention** (``F.multi_head_attention_forward``): torch's own function, its calls to
  dropout and attention bound to the two above (a copy with those names rebound; nothing global
  changes).
- **Recurrent layers** (``torch.gru``, ``torch.lstm``, ``torch.rnn_tanh``, ``torch.rnn_relu``,
  called by ``nn.GRU`` / ``nn.LSTM`` / ``nn.RNN``): the recurrence written with ``F.linear`` per
  time step (PyTorch's gate order and formulas; bidirectional, stacked, projections, dropout between
  layers), which vmap batches; the fused kernels have no batching rule. Packed sequences run
  unchanged (and are then not vmappable).
- **Sparse embeddings** (``F.embedding`` / ``F.embedding_bag`` with ``sparse=True``): run dense.
  A sparse gradient has no batching rule (and no per-run ``select``); the dense gradient has the
  same values on the rows the batch touched and zeros elsewhere, which is what the optimizers here
  receive.
"""

from __future__ import annotations

import math
import types
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

_GOLDEN = 0x9E3779B97F4A7C15 - 2**64  # SplitMix64's increment, as a signed int64
_MIX_1 = 0xBF58476D1CE4E5B9 - 2**64
_MIX_2 = 0x94D049BB133111EB - 2**64
_CALL = 0xD1B54A32D192ED03 - 2**64  # separates the streams of successive calls
_GOLDEN_32 = 0x9E3779B9 - 2**32
_LOW_BIAS_1 = 0x7FEB352D  # the constants of Wellons's "lowbias32" hash
_LOW_BIAS_2 = 0x846CA68B - 2**32


def _wrap(n: int) -> int:
    """An integer as the int64 with the same low 64 bits (as the tensor arithmetic wraps)."""
    return (n + 2**63) % 2**64 - 2**63


def _shift_right(z: Tensor, bits: int, width: int = 64) -> Tensor:
    """Logical right shift of a signed integer tensor (torch's >> is arithmetic)."""
    return (z >> bits) & ((1 << (width - bits)) - 1)


def _splitmix(z: Tensor) -> Tensor:
    """SplitMix64's output function (int64 arithmetic wraps as uint64 would)."""
    z = (z ^ _shift_right(z, 30)) * _MIX_1
    z = (z ^ _shift_right(z, 27)) * _MIX_2
    return z ^ _shift_right(z, 31)


def _low_bias(x: Tensor) -> Tensor:
    """Wellons's lowbias32 hash of int32 values without its last step, which changes only the low
    16 bits (the comparison that reads the result depends on the high ones). 32-bit, not 64-bit:
    int64 multiplication has no vector instruction on most CPUs and is ~6 times slower."""
    x = (x ^ _shift_right(x, 16, 32)) * _LOW_BIAS_1
    return (x ^ _shift_right(x, 15, 32)) * _LOW_BIAS_2


def _rebind(function: Callable, **names: Any) -> Callable:
    """A copy of `function` whose module-level `names` refer to other objects."""
    copy = types.FunctionType(function.__code__, {**function.__globals__, **names}, function.__name__,
                              function.__defaults__, function.__closure__)
    copy.__kwdefaults__ = function.__kwdefaults__
    return copy


class BatchableOps(TorchFunctionMode):
    """The stand-ins of the module docstring for one forward pass keyed by `key` (an int64 scalar
    tensor, batched under vmap; None: key 0)."""

    def __init__(self, key: Tensor | None = None) -> None:
        super().__init__()
        self.key = key
        self.calls = 0
        self.drew = False  # whether any keyed dropout was applied (the model is stochastic)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        stand_in = _STAND_INS.get(func)
        if stand_in is None:
            return func(*args, **kwargs)
        return stand_in(self, *args, **kwargs)

    # ---- random numbers ----

    def keep(self, like: Tensor, p: float) -> Tensor:
        """A bool mask of `like`'s shape, True with probability 1 - p: a function of (key, call
        number, position), so the same in a vmap and alone."""
        self.calls += 1
        key = torch.zeros((), dtype=torch.int64, device=like.device) if self.key is None else self.key.to(like.device)
        base = _splitmix(key * _GOLDEN + _wrap(self.calls * _CALL))  # one int64 per run and call
        base = ((base & 0xFFFFFFFF) - 2**31).to(torch.int32)
        position = torch.arange(like.numel(), dtype=torch.int32, device=like.device).reshape(like.shape)
        bits = _low_bias((position * _GOLDEN_32) ^ base)
        # bits is uniform over [-2**31, 2**31): at least this threshold with probability 1 - p.
        return bits >= int(p * 2.0**32) - 2**31

    def dropout(self, input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        if not training or p == 0.0:
            return input
        self.drew = True
        if p == 1.0:
            return input * 0.0
        return input * self.keep(input, p) * (1.0 / (1.0 - p))

    def _dropout_positional(self, input: Tensor, p: float, train: bool) -> Tensor:  # torch.dropout
        return self.dropout(input, p, train)

    # ---- attention ----

    def attention(self, query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
                  dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                  enable_gqa: bool = False) -> Tensor:
        """F.scaled_dot_product_attention's math reference."""
        target, source = query.shape[-2], key.shape[-2]
        scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
        if enable_gqa:
            key = key.repeat_interleave(query.shape[-3] // key.shape[-3], -3)
            value = value.repeat_interleave(query.shape[-3] // value.shape[-3], -3)
        scores = query @ key.transpose(-2, -1) * scale
        if is_causal:
            allowed = torch.ones(target, source, dtype=torch.bool, device=query.device).tril()
            scores = scores.masked_fill(~allowed, -math.inf)
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, -math.inf) if attn_mask.dtype == torch.bool else scores + attn_mask
        # A row with every position masked gets zero weights (as torch's math kernel), not NaN.
        weights = torch._safe_softmax(scores, -1) if hasattr(torch, "_safe_softmax") else torch.softmax(scores, -1)
        if dropout_p > 0.0:
            weights = self.dropout(weights, dropout_p)
        return weights @ value

    def multi_head_attention(self, *args, **kwargs):
        forward = _rebind(F.multi_head_attention_forward, dropout=self.dropout,
                          scaled_dot_product_attention=self.attention)
        return forward(*args, **kwargs)

    # ---- recurrent layers ----

    def gru(self, *args):
        return self._recurrent("gru", torch.gru, args)

    def lstm(self, *args):
        return self._recurrent("lstm", torch.lstm, args)

    def rnn_tanh(self, *args):
        return self._recurrent("rnn_tanh", torch.rnn_tanh, args)

    def rnn_relu(self, *args):
        return self._recurrent("rnn_relu", torch.rnn_relu, args)

    def _recurrent(self, cell: str, fused: Callable, args: tuple):
        # (input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first);
        # the packed-sequence overload (data, batch_sizes, hx, ...) runs fused.
        if len(args) != 9 or not isinstance(args[2], (list, tuple)):
            return fused(*args)
        input, hx, weights, has_biases, num_layers, dropout, train, bidirectional, batch_first = args
        directions = 2 if bidirectional else 1
        h0, c0 = (hx[0], hx[1]) if cell == "lstm" else (hx, None)
        per_layer = len(weights) // (num_layers * directions)
        projected = cell == "lstm" and per_layer == 2 + 2 * bool(has_biases) + 1
        x = input.transpose(0, 1) if batch_first else input  # (time, batch, features)
        h_last, c_last = [], []
        for layer in range(num_layers):
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction
                w = list(weights[index * per_layer:(index + 1) * per_layer])
                w_ih, w_hh = w[0], w[1]
                b_ih, b_hh = (w[2], w[3]) if has_biases else (None, None)
                w_hr = w[-1] if projected else None
                sequence = x if direction == 0 else x.flip(0)
                x_gates = F.linear(sequence, w_ih, b_ih)  # every time step's input part at once
                h, c = h0[index], None if c0 is None else c0[index]
                steps = []
                for t in range(sequence.shape[0]):
                    h, c = _cell(cell, x_gates[t], h, c, w_hh, b_hh, w_hr)
                    steps.append(h)
                y = torch.stack(steps)
                outputs.append(y if direction == 0 else y.flip(0))
                h_last.append(h)
                c_last.append(c)
            x = outputs[0] if directions == 1 else torch.cat(outputs, -1)
            if dropout and train and layer < num_layers - 1:
                x = self.dropout(x, dropout)
        output = x.transpose(0, 1) if batch_first else x
        if cell == "lstm":
            return output, torch.stack(h_last), torch.stack(c_last)
        return output, torch.stack(h_last)

    # ---- embeddings ----

    def embedding(self, *args, **kwargs):
        args, kwargs = _dense(args, kwargs, position=6)
        return F.embedding(*args, **kwargs)

    def embedding_bag(self, *args, **kwargs):
        args, kwargs = _dense(args, kwargs, position=7)
        return F.embedding_bag(*args, **kwargs)


def _cell(cell: str, x_gates: Tensor, h: Tensor, c: Tensor | None, w_hh: Tensor, b_hh: Tensor | None,
          w_hr: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """One time step of torch.nn.GRU / LSTM / RNN (the formulas of their documentation)."""
    h_gates = F.linear(h, w_hh, b_hh)
    if cell == "gru":
        x_r, x_z, x_n = x_gates.chunk(3, -1)
        h_r, h_z, h_n = h_gates.chunk(3, -1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return (1 - z) * n + z * h, None
    if cell == "lstm":
        i, f, g, o = (x_gates + h_gates).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return (h if w_hr is None else F.linear(h, w_hr)), c
    activation = torch.tanh if cell == "rnn_tanh" else torch.relu
    return activation(x_gates + h_gates), None


def _dense(args: tuple, kwargs: dict, position: int) -> tuple[tuple, dict]:
    """The arguments with sparse=False (keyword, or positional at `position`)."""
    if len(args) > position:
        args = args[:position] + (False,) + args[position + 1:]
    else:
        kwargs = {**kwargs, "sparse": False}
    return args, kwargs


_STAND_INS: dict[Callable, Callable] = {
    F.dropout: BatchableOps.dropout,
    torch.dropout: BatchableOps._dropout_positional,
    F.scaled_dot_product_attention: BatchableOps.attention,
    F.multi_head_attention_forward: BatchableOps.multi_head_attention,
    torch.gru: BatchableOps.gru,
    torch.lstm: BatchableOps.lstm,
    torch.rnn_tanh: BatchableOps.rnn_tanh,
    torch.rnn_relu: BatchableOps.rnn_relu,
    F.embedding: BatchableOps.embedding,
    F.embedding_bag: BatchableOps.embedding_bag,
}
