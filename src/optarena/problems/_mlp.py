"""MLP classifiers for many runs at once, forward and backward written out: the engine's fast path.

Weights are held as ``torch.nn.Linear`` holds them, W_l (R, out, in) with biases b_l (R, out), and
activations are feature-major, h_l (R, features, B), so that every product below is a (batched)
matrix product whose operands need no copy. With f the activation and y the labels:

    forward   z_1 = W_1 x^T + b_1,  h_l = f(z_l),  z_l = W_l h_{l-1} + b_l,  logits z_L (R, C, B)
    loss      loss_r = mean_b [logsumexp_c z_L - z_L[y]]
    backward  d_L = (softmax(z_L) - onehot(y)) / B,  dW_l = d_l h_{l-1}^T,  db_l = sum_b d_l,
              d_{l-1} = f'(h_{l-1}) * (W_l^T d_l)          (f' from the output: tanh 1 - h^2, relu [h > 0])

which is what autograd computes, without its graph (tests/problems/test_hand_gradients.py holds the
two equal). Two things make it fast:

- **Runs that share an input share one matrix product.** Runs that share a seed share their
  minibatches, and the engine orders runs by seed within each rule group, so the runs fall into
  consecutive blocks of L runs on one input (`Blocks`). Block k's first layer is then ONE product
  (L*out, in) @ (in, B) of its stacked weights with its input, and all blocks are one `torch.bmm`;
  the same for the first layer's weight gradient. Evaluation, where every run sees the same
  examples, is one product (R*out, in) @ (in, N) per chunk. (Measured on the 2-core CI machine,
  1 thread, 400 runs of digits_mlp: 4.3 ms for the first layer as 40 blocks of 10 runs against
  5.5 ms as 400 per-run products.)
- **The elementwise work is compiled** where the engine judges the work large enough
  (`optarena.compiled.Kernel`: the activation, its derivative and the softmax cross-entropy with its
  gradient, each one pass over memory). tanh is then the
  13/6 rational interpolant of Eigen (``generic_fast_tanh_float``, Eigen/src/Core/MathFunctionsImpl.h),
  which XLA also uses on CPUs (``EmitFastTanh``, xla/service/llvm_ir/math_ops.cc): within 4e-7 relative
  of ``torch.tanh`` (7 ulp), and 5x faster than ATen's tanh on the CI machine (0.8 against 4.4 ns per value,
  1 thread). Run eagerly (a short study, ``OPTARENA_COMPILE=0``, or where compiling fails) it is
  ``torch.tanh``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from optarena.compiled import Kernel

Layers = Sequence[tuple[Tensor, Tensor]]
"""[(W_l (R, out, in), b_l (R, out)), ...], first layer first."""

def tanh_rational(x: Tensor) -> Tensor:
    """tanh(x) ~ x * p(x^2) / q(x^2), Eigen's / XLA's 13/6 interpolant, for float32 (torch.tanh for
    other dtypes). Beyond +-7.905... it is exactly +-1 in float32 (the input is clamped there); below
    0.0004 in magnitude it returns x (tanh(x) = x to float32 precision, which the interpolant would
    lose). The coefficients are literals: a module-level float would enter the compiled kernel as an
    input read in every iteration (measured 2x slower)."""
    if x.dtype != torch.float32:
        return torch.tanh(x)
    c = x.clamp(-7.90531110763549805, 7.90531110763549805)
    c2 = c * c
    p = c2 * -2.76076847742355e-16 + 2.00018790482477e-13
    p = c2 * p + -8.60467152213735e-11
    p = c2 * p + 5.12229709037114e-08
    p = c2 * p + 1.48572235717979e-05
    p = c2 * p + 6.37261928875436e-04
    p = c2 * p + 4.89352455891786e-03
    q = c2 * 1.19825839466702e-06 + 1.18534705686654e-04
    q = c2 * q + 2.26843463243900e-03
    q = c2 * q + 4.89352518554385e-03
    return torch.where(x.abs() < 0.0004, x, c * p / q)


def _tanh_grad(grad: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """grad * (1 - h^2) from tanh's output h, and its sum over the batch (the bias gradient)."""
    d = grad * (1 - h * h)
    return d, d.sum(-1)


def _relu_grad(grad: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """grad * [h > 0] from relu's output h, and its sum over the batch."""
    d = torch.where(h > 0, grad, 0.0)
    return d, d.sum(-1)


ACTIVATIONS = {"tanh": (Kernel(tanh_rational, torch.tanh), Kernel(_tanh_grad)),
               "relu": (torch.relu, Kernel(_relu_grad))}
"""Activation name -> (f, (grad, h) -> (grad * f'(h), its sum over the batch))."""


def _softmax_cross_entropy_grad(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """From logits (R, C, B) and labels (R, 1, B) (class numbers as floats): per-run mean loss (R,),
    the gradient of the losses' sum d = (softmax - onehot) / B (R, C, B), and its sum over the batch.

    The labels are floats and the label's logit a masked sum, not a gather: integer vectors and
    indexed loads inside inductor's loops made this kernel 2x slower (measured)."""
    classes = torch.arange(logits.shape[1], device=logits.device, dtype=logits.dtype).view(1, -1, 1)
    onehot = (classes == labels).to(logits.dtype)
    top = logits.amax(1, keepdim=True)
    e = (logits - top).exp()
    total = e.sum(1, keepdim=True)
    batch = logits.shape[-1]
    losses = (top.squeeze(1) + total.squeeze(1).log() - (logits * onehot).sum(1)).sum(-1) / batch
    d = (e / total - onehot) / batch
    return losses, d, d.sum(-1)


def _loss_and_correct_sums(logits: Tensor, labels: Tensor, count_correct: bool) -> tuple[Tensor, Tensor | None]:
    """Summed cross-entropy per run from logits (R, C, N) and labels (N,) (floats, as above), and the
    number of correct predictions (None unless `count_correct`).

    Correct as ``logits.argmax(class) == label``: no class's logit is above the label's, and no
    earlier class's equals it (argmax takes the first of equal maxima). An argmax over this strided
    axis took 40% of an evaluation (measured)."""
    classes = torch.arange(logits.shape[1], device=logits.device, dtype=logits.dtype).view(1, -1, 1)
    is_label = classes == labels
    top = logits.amax(1, keepdim=True)
    label_logit = torch.where(is_label, logits, 0.0).sum(1, keepdim=True)
    log_total = top + (logits - top).exp().sum(1, keepdim=True).log()
    loss_sum = (log_total - label_logit).sum((1, 2))
    if not count_correct:
        return loss_sum, None
    beaten = ((logits > label_logit) | ((logits == label_logit) & (classes < labels))).sum(1)
    return loss_sum, (beaten == 0).to(logits.dtype).sum(-1)


softmax_cross_entropy_grad = Kernel(_softmax_cross_entropy_grad)
loss_and_correct_sums = Kernel(_loss_and_correct_sums)


@dataclass(frozen=True)
class Blocks:
    """How runs map to inputs: consecutive blocks of `size` runs, block k on input row ``rows[k]``
    (``rows`` None: block k on row k). Made by `Blocks.of`."""

    size: int
    rows: Tensor | None

    @staticmethod
    def of(slot: Tensor | None, runs: int, n_inputs: int) -> "Blocks":
        """From each run's input row `slot` (R,) (None: run r on row r, or every run on row 0 when
        there is one row). The block size is the gcd of the lengths of the stretches of equal slot."""
        if slot is None:
            return Blocks(runs, None) if n_inputs == 1 else Blocks(1, None)
        values = slot.tolist()
        size, start = 0, 0
        for i in range(1, runs + 1):
            if i == runs or values[i] != values[start]:
                size, start = math.gcd(size, i - start), i
        rows = slot[::size]
        if len(rows) == n_inputs and rows.tolist() == list(range(n_inputs)):
            rows = None
        return Blocks(size, rows)

    def inputs(self, x: Tensor) -> Tensor:
        """Each block's input, (R / size, B, ...), from one input per row, x (U, B, ...)."""
        return x if self.rows is None else x.index_select(0, self.rows)

    def part(self, start: int, stop: int) -> "Blocks":
        """The blocks of runs start .. stop - 1 (a whole number of blocks, or runs inside one block)."""
        if stop - start < self.size:  # inside block start // size: a block of its own
            first = start // self.size
            return Blocks(stop - start, torch.tensor([first]) if self.rows is None else self.rows[first:first + 1])
        first, last = start // self.size, stop // self.size
        return Blocks(self.size, torch.arange(first, last) if self.rows is None else self.rows[first:last])

    def chunk(self, runs: int, target: int) -> int:
        """Runs per chunk near `target` that cut no block but into equal parts: a multiple of the
        block size, or a divisor of it when the blocks are larger than `target`."""
        if self.size <= target:
            return self.size * (target // self.size)
        return max(d for d in range(1, target + 1) if self.size % d == 0)


def first_layer(w: Tensor, b: Tensor, x: Tensor, blocks: Blocks) -> Tensor:
    """z = W x^T + b, (R, out, B), from weights (R, out, in), biases (R, out) and inputs x (U, B, in):
    one product (size*out, in) @ (in, B) per block, all blocks in one `torch.baddbmm`."""
    runs, out, n_in = w.shape
    k = runs // blocks.size
    xb = blocks.inputs(x)
    z = torch.baddbmm(b.reshape(k, blocks.size * out, 1), w.reshape(k, blocks.size * out, n_in), xb.transpose(1, 2))
    return z.view(runs, out, -1)


def first_layer_weight_grad(d: Tensor, x: Tensor, blocks: Blocks, out: Tensor) -> Tensor:
    """dW = d x, (R, out, in), into `out`, from d (R, out, B) and the inputs x (U, B, in), block by
    block as above."""
    runs, width, batch = d.shape
    k = runs // blocks.size
    torch.bmm(d.reshape(k, blocks.size * width, batch), blocks.inputs(x), out=out.view(k, blocks.size * width, -1))
    return out


TRAIN_BUDGET = 2**19
"""Activations (values) of one chunk of runs in `loss_and_grad`: 2 MiB in float32 for each of the
arrays a layer keeps (pre-activation, activation, their gradients, the logits'), so that a chunk's
stay in the last-level cache from the forward to the backward pass. Measured on the CI machine
(1 thread, digits_mlp, 400 runs on 5 seeds in blocks of 10, min of 20 interleaved rounds, a busy
machine): 35.5 ms a step in one piece, 28.8 ms in chunks of 220 runs, 20.7 ms of 110 (this
budget), 22.8 ms of 50, 29.8 ms of 20."""


def loss_and_grad(layers: Layers, x: Tensor, labels: Tensor, blocks: Blocks, activation: str
                  ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """Per-run mean cross-entropy (R,) on inputs x (U, B, in) with labels (R, B), and the gradient of
    the losses' sum, [(dW_l, db_l)] in the layers' shapes (see the module docstring); computed in
    chunks of runs (`TRAIN_BUDGET`) written into the outputs."""
    runs, batch = labels.shape
    w1 = layers[0][0]
    losses = w1.new_empty(runs)
    grads = [(torch.empty_like(w), torch.empty_like(b)) for w, b in layers]
    width = sum(w.shape[1] for w, _ in layers)
    step = blocks.chunk(runs, max(1, TRAIN_BUDGET // (width * batch)))
    for a in range(0, runs, step):
        b = min(a + step, runs)
        part = [(w[a:b], bias[a:b]) for w, bias in layers]
        out = [(gw[a:b], gb[a:b]) for gw, gb in grads]
        losses[a:b] = _loss_and_grad(part, x, labels[a:b], blocks.part(a, b), activation, out)
    return losses, grads


def _loss_and_grad(layers: Layers, x: Tensor, labels: Tensor, blocks: Blocks, activation: str,
                   out: list[tuple[Tensor, Tensor]]) -> Tensor:
    """`loss_and_grad` of one chunk of runs: the losses, the gradients written into `out`."""
    f, f_grad = ACTIVATIONS[activation]
    (w1, b1), *rest = layers
    hs = [f(first_layer(w1, b1, x, blocks))]
    for w, b in rest:
        z = torch.baddbmm(b.unsqueeze(2), w, hs[-1])
        hs.append(z if len(hs) == len(layers) - 1 else f(z))
    logits = hs.pop()
    losses, d, db = softmax_cross_entropy_grad(logits, labels.unsqueeze(1).to(logits.dtype))
    for (w, _), h, (gw, gb) in zip(reversed(rest), reversed(hs), reversed(out[1:])):
        torch.bmm(d, h.transpose(1, 2), out=gw)
        gb.copy_(db)
        d, db = f_grad(torch.bmm(w.transpose(1, 2), d), h)
    first_layer_weight_grad(d, x, blocks, out[0][0])
    out[0][1].copy_(db)
    return losses


def logits(layers: Layers, x: Tensor, activation: str) -> Tensor:
    """Logits (R, C, N) of every run on inputs x (N, in) that all runs share."""
    f, _ = ACTIVATIONS[activation]
    (w1, b1), *rest = layers
    h = first_layer(w1, b1, x.unsqueeze(0), Blocks(w1.shape[0], None))
    for w, b in rest:
        h = torch.baddbmm(b.unsqueeze(2), w, f(h))
    return h


EVAL_BUDGET = 2**21
"""Hidden activations (values) of one evaluation chunk of runs x examples: 8 MiB in float32, so a
chunk's activations stay in the CPU's last-level cache between the products and the elementwise
passes. (Measured on the CI machine, 1 thread, digits_mlp's 1,400 training examples x 400 runs, min
of 6 interleaved rounds: 159 ms in chunks of 23 runs x 1,400 examples, 178 ms in chunks of 32 x 512,
258 ms in chunks of 11 x 1,400.)"""


EXAMPLES_MULTIPLE = 16
"""Evaluation pads its examples with zero rows to a multiple of this, and drops their logits before
the loss: MKL runs the products with an odd number of examples far below the peak (one thread, CI
machine: (5,248 x 64) @ (64 x 397) at 31-56 GFLOP/s, at 70-80 with 400 columns; digits_mlp's 397
held-out examples x 400 runs evaluated in 41 ms instead of 62 ms, the same sums bit for bit)."""


def evaluate_sums(layers: Layers, x: Tensor, labels: Tensor, activation: str, count_correct: bool = True,
                  examples_per_chunk: int = 2048) -> tuple[Tensor, Tensor | None]:
    """Summed cross-entropy and (if `count_correct`) correct predictions of every run over all of
    (x (N, in), labels (N,)), in chunks of runs and examples (`EVAL_BUDGET`; `EXAMPLES_MULTIPLE`)."""
    runs = layers[0][0].shape[0]
    n = len(x)
    padded = -(-n // EXAMPLES_MULTIPLE) * EXAMPLES_MULTIPLE
    if padded != n:
        x = torch.cat([x, x.new_zeros(padded - n, *x.shape[1:])])
    width = max(w.shape[1] for w, _ in layers)
    examples = min(padded, examples_per_chunk)
    per_chunk = max(1, EVAL_BUDGET // (width * examples))
    labels = labels.to(layers[0][0].dtype)
    loss_sum = layers[0][0].new_zeros(runs)
    correct = layers[0][0].new_zeros(runs) if count_correct else None
    for a in range(0, runs, per_chunk):
        part = [(w[a:a + per_chunk], b[a:a + per_chunk]) for w, b in layers]
        for s in range(0, n, examples):
            real = min(examples, n - s)  # the chunk's examples that are not padding
            z = logits(part, x[s:s + examples], activation)[..., :real]
            l, c = loss_and_correct_sums(z, labels[s:s + real], count_correct)
            loss_sum[a:a + per_chunk] += l
            if count_correct:
                correct[a:a + per_chunk] += c
    return loss_sum, correct
