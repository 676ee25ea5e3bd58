"""The small pieces every rule is built from: moving averages, bias corrections, eps placement,
weight decay. Each works for a float hyperparameter or a per-run tensor one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from optarena.rules.base import HP, any_nonzero


def ema_(average: Tensor, value: Tensor, decay: HP) -> Tensor:
    """average = decay * average + (1 - decay) * value   (in place; an exponential moving average)."""
    if isinstance(decay, Tensor):
        return average.mul_(decay).add_((1 - decay) * value)
    return average.mul_(decay).add_(value, alpha=1 - decay)


def power(base: HP, exponent) -> HP:
    """base ** exponent, for the scalars of a step (bias corrections, momentum schedules).

    Under ``torch.compile`` a tensor result is computed once per call: inductor would otherwise
    recompute the 0-d expression inside every loop over a parameter that reads it, and it cannot
    hoist ``std::pow`` out of the loop (it compiles with ``-fmath-errno``), which alone made the
    compiled Adam 3x slower than torch's fused kernel on 8M parameters. A cumulative sum over one
    element is the identity, and inductor leaves it to ATen: one call, its result read by the loop.
    (Over a new axis of length one, so a per-run tensor, one value per run, stays one value per run.)
    """
    result = base**exponent
    if isinstance(result, Tensor) and torch.compiler.is_compiling():
        return torch.cumsum(result.unsqueeze(-1), -1).squeeze(-1)
    return result


def bias_correction(decay: HP, step: int) -> HP:
    """1 - decay^t: the factor that un-biases a zero-initialised moving average after t steps."""
    return 1 - power(decay, step)


def denominator(second_moment: Tensor, eps: HP, eps_inside_root: bool) -> Tensor:
    """sqrt(v + eps) (the article, Keras's AdaGrad/RMSprop) or sqrt(v) + eps (PyTorch, Adam papers)."""
    if eps_inside_root:
        return (second_moment + eps).sqrt_()
    return second_moment.sqrt().add_(eps)


def l2_gradient(grad: Tensor, param: Tensor, weight_decay: HP) -> Tensor:
    """g + wd * w: L2 regularisation folded into the gradient (PyTorch's ``weight_decay``)."""
    if not any_nonzero(weight_decay):
        return grad
    return grad + weight_decay * param


def decoupled_decay_(param: Tensor, lr: HP, weight_decay: HP) -> None:
    """w = w - lr * wd * w: decoupled weight decay (Loshchilov & Hutter; AdamW, Keras's weight_decay)."""
    if any_nonzero(weight_decay):
        param.sub_(lr * weight_decay * param)


def step_(param: Tensor, update: Tensor, lr: HP) -> None:
    """w = w - lr * update."""
    if isinstance(lr, Tensor):
        param.sub_(lr * update)
    else:
        param.add_(update, alpha=-lr)


def maximum_(running_max: Tensor, value: Tensor) -> Tensor:
    return torch.maximum(running_max, value, out=running_max)


def weight_decay_(param: Tensor, grad: Tensor, lr: HP, weight_decay: HP, decoupled: bool) -> Tensor:
    """Apply weight decay the convention's way; returns the gradient the rule goes on with.

    decoupled: w = w - lr*wd*w, gradient unchanged (AdamW, Keras);  else g + wd*w (PyTorch's L2).
    """
    if decoupled:
        decoupled_decay_(param, lr, weight_decay)
        return grad
    return l2_gradient(grad, param, weight_decay)
