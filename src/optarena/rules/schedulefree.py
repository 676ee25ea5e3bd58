"""Schedule-Free AdamW (Defazio et al. 2024, "The Road Less Scheduled").

Three sequences: z (the base AdamW iterate), x (a weighted average of the z's: where the model is
evaluated) and y (where gradients are taken: the parameter during training):
  y = (1-b1)*z + b1*x ;  v = b2*v + (1-b2)*g^2 ;  g^ = g/denom + wd*y
  z = z - lr_t*g^ ;  x = (1-c)*x + c*z ,  c = w_t / sum_{i<=t} w_i ,  w_t = t^r * lr_max^p
with lr_t = lr * min(1, t/warmup_steps) (times sqrt(1-b2^t) in the article), lr_max the largest
lr_t so far, p = weight_lr_power (2). Only y and z are stored; x is recovered from them:
``eval()`` sets w = x = y + (1 - 1/b1)*(z - y), ``train()`` sets w = y = x + (1 - b1)*(z - x).

article   the paper's Algorithm 1: lr_t = lr*min(1, t/warmup)*sqrt(1-b2^t), denom = sqrt(v) + eps;
          equal to the authors' ``schedulefree.AdamWScheduleFreePaper`` (schedulefree 1.4.1,
          schedulefree/adamw_schedulefree_paper.py). Its weights use lr_max, as the authors' code
          does; with a non-decreasing lr_t (a constant lr) that is the Algorithm's c = lr_t^2/sum lr_i^2.
pytorch   ``schedulefree.AdamWScheduleFree`` (schedulefree 1.4.1, schedulefree/adamw_schedulefree.py,
          ``step``): lr_t = lr*min(1, t/warmup), denom = sqrt(v/(1-b2^t)) + eps, the same y, z updates:
          y = lerp(y, z, c) + lr_t*(b1*(1-c) - 1)*g^ ;  z = z - lr_t*g^.

The step count, lr_max and the weight sum are kept per parameter (the reference keeps them per
param group: equal while every parameter of a group gets a gradient at every step). Unlike the
reference, the drop-in starts in training mode (no ``train()`` needed first) and leaves ``p.grad``
untouched; like it, ``step()`` refuses to run while at the evaluation point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from optarena.rules.base import HP, Rule, any_nonzero, zeros_like
from optarena.rules.primitives import bias_correction, step_
from optarena.rules.spec import Convention, Dimension, Optimizer, Range


@dataclass(frozen=True)
class ScheduleFreeAdamW(Rule):
    name = "schedulefree_adamw"
    elementwise = False  # lr_max and the weight sum are one number per run
    has_eval_point = True
    lr: HP
    beta1: HP
    beta2: HP
    eps: HP
    weight_decay: HP
    warmup_steps: HP
    r: HP
    weight_lr_power: HP
    bias_correction_in_lr: bool  # article: sqrt(1-b2^t) in lr_t, none on v

    def init_state(self, param):
        runs = {"dtype": torch.float64, "device": param.device}  # Python floats in the reference
        return {"z": param.clone(), "exp_avg_sq": zeros_like(param),
                "lr_max": torch.full(param.shape[:1], -1.0, **runs), "weight_sum": torch.zeros(param.shape[:1], **runs)}

    def apply_(self, param, grad, state, step):
        y, z, v = param, state["z"], state["exp_avg_sq"]
        per_run = (-1,) + (1,) * (param.ndim - 1)
        bias_correction2 = bias_correction(self.beta2, step)
        lr = self.lr * _warmup(step, self.warmup_steps)
        if self.bias_correction_in_lr:
            lr = lr * (bias_correction2.sqrt() if isinstance(bias_correction2, Tensor) else math.sqrt(bias_correction2))
        lr_max = state["lr_max"].view(per_run)
        torch.maximum(lr_max, torch.as_tensor(lr, dtype=lr_max.dtype), out=lr_max)
        weight = step**self.r * lr_max**self.weight_lr_power
        weight_sum = state["weight_sum"].view(per_run).add_(weight)
        c = torch.where(weight_sum > 0, weight / weight_sum, 0.0).to(param.dtype)

        if isinstance(self.beta2, Tensor):
            v.mul_(self.beta2).add_((1 - self.beta2) * grad * grad)
        else:
            v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        denom = v.sqrt() if self.bias_correction_in_lr else v.div(bias_correction2).sqrt_()
        g_hat = grad / denom.add_(self.eps)
        if any_nonzero(self.weight_decay):  # weight decay taken at y
            g_hat = g_hat.add_(self.weight_decay * y) if isinstance(self.weight_decay, Tensor) \
                else g_hat.add_(y, alpha=self.weight_decay)
        y.lerp_(z, c)
        y.add_(lr * (self.beta1 * (1 - c) - 1) * g_hat)
        step_(z, g_hat, lr)

    def to_eval_(self, param, state):
        param.lerp_(state["z"], _as(1 - 1 / self.beta1, param))  # w = x

    def to_train_(self, param, state):
        param.lerp_(state["z"], _as(1 - self.beta1, param))  # w = y


def _warmup(step: int, warmup_steps: HP) -> HP:
    """min(1, t / warmup_steps): the reference's (k+1)/warmup_steps while k < warmup_steps, k = t-1."""
    if isinstance(warmup_steps, Tensor):
        return torch.where(step <= warmup_steps, step / warmup_steps, 1.0)
    return step / warmup_steps if step <= warmup_steps else 1.0


def _as(h: HP, param: Tensor) -> HP:
    return h.to(param.dtype) if isinstance(h, Tensor) else h


_DEFAULTS = {"lr": 0.0025, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0,
             "warmup_steps": 0.0, "r": 0.0, "weight_lr_power": 2.0}
# b1 = 0 would make x = y + (1 - 1/b1)(z - y) undefined (the reference divides by b1 in eval()).
_RANGES = {"beta1": Range(lambda x: 0 < x < 1, "in (0, 1)")}

ENTRIES = (
    Optimizer(
        "schedulefree_adamw", "ScheduleFreeAdamW", family="contender",
        summary="AdamW without a schedule: gradients at y, evaluation at the average x (Defazio et al. 2024)",
        search={"beta1": Dimension(0.5, 0.98), "beta2": Dimension(0.9, 0.9999)},
        absent={"keras": "Keras has no Schedule-Free optimizer; use 'article' or 'pytorch'"},
        reference="Defazio et al. 2024, The Road Less Scheduled, Algorithm 1; pytorch convention: "
                  "schedulefree 1.4.1 AdamWScheduleFree. Call optimizer.eval() before evaluating and "
                  "optimizer.train() before training again.",
        conventions={
            "article": Convention(
                ScheduleFreeAdamW, _DEFAULTS,
                "z -= lr_t*(g/(sqrt(v)+eps) + wd*y), lr_t = lr*min(1,t/T)*sqrt(1-b2^t); x = lerp(x, z, c); y = lerp(z, x, b1)",
                flags={"bias_correction_in_lr": True}, ranges=_RANGES,
                source="Defazio et al. 2024, Algorithm 1 (= schedulefree.AdamWScheduleFreePaper)"),
            "pytorch": Convention(
                ScheduleFreeAdamW, _DEFAULTS,
                "z -= lr_t*(g/(sqrt(v/(1-b2^t))+eps) + wd*y), lr_t = lr*min(1,t/T); x = lerp(x, z, c); y = lerp(z, x, b1)",
                flags={"bias_correction_in_lr": False}, ranges=_RANGES,
                source="schedulefree.AdamWScheduleFree 1.4.1"),
        },
    ),
)
