"""LAMB, layer-wise adaptive moments (You et al. 2020, "Large Batch Optimization for Deep Learning:
Training BERT in 76 minutes").

Adam's direction, rescaled per parameter tensor by a trust ratio ||w|| / ||update||:

article   the paper's Algorithm 2 (LAMB) with phi(z) = z:
          m = b1*m + (1-b1)*g ;  v = b2*v + (1-b2)*g^2 ;  m^ = m/(1-b1^t) ;  v^ = v/(1-b2^t)
          r = m^/(sqrt(v^) + eps) + wd*w ;  w = w - lr * ||w||/||r|| * r
          (trust ratio 1 where ||w|| or ||r|| is 0, which the paper leaves undefined)
pytorch   pytorch-optimizer 4.1.0, ``pytorch_optimizer.Lamb`` (pytorch_optimizer/optimizer/lamb.py,
          ``_step_foreach``: the path its ``step`` takes by default, on CPU and GPU alike):
          w = w*(1 - lr*wd) (weight_decouple=True) ;  m = b1*m + (1-b1)*g ;  v = b2*v + (1-b2)*g^2
          u = m * 1/(sqrt(v) + eps)  (+ wd*w with weight_decouple=False) ;  no bias correction of v
          q = min(||w||, 10) / (||u|| + eps)  (1 where either norm is 0) ;  w = w - lr/(1-b1^t) * q*u
          Its options rectify, adam, pre_norm, grad_averaging=False, fixed_decay are not offered.

Batched: the norms are per run (the rule sees (R, *shape) tensors).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from optarena.rules.base import HP, Rule, any_nonzero, zeros_like
from optarena.rules.primitives import bias_correction, ema_
from optarena.rules.spec import Convention, Dimension, Optimizer

WEIGHT_NORM_CLAMP = 10.0  # pytorch_optimizer.Lamb.clamp


@dataclass(frozen=True)
class LAMB(Rule):
    name = "lamb"
    elementwise = False
    lr: HP
    beta1: HP
    beta2: HP
    eps: HP
    weight_decay: HP
    weight_decouple: bool
    paper_form: bool  # article: both moments bias-corrected, wd*w in r, no clamp and no eps in the ratio

    def init_state(self, param):
        return {"exp_avg": zeros_like(param), "exp_avg_sq": zeros_like(param)}

    def apply_(self, param, grad, state, step):
        decay = any_nonzero(self.weight_decay)
        if self.weight_decouple and decay:
            param.mul_(1 - self.weight_decay * self.lr)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        ema_(m, grad, self.beta1)
        if isinstance(self.beta2, Tensor):
            v.mul_(self.beta2).add_((1 - self.beta2) * grad * grad)
        else:
            v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        if self.paper_form:
            m_hat, v_hat = m / bias_correction(self.beta1, step), v / bias_correction(self.beta2, step)
            update = m_hat / v_hat.sqrt_().add_(self.eps)
        else:
            update = v.sqrt().add_(self.eps).reciprocal_().mul_(m)
        if not self.weight_decouple and decay:
            update = update + self.weight_decay * param
        weight_norm, update_norm = _norm(param), _norm(update)
        if self.paper_form:
            ratio = weight_norm / update_norm
            step_size = self.lr
        else:
            ratio = weight_norm.clamp_(max=WEIGHT_NORM_CLAMP) / (update_norm + self.eps)
            step_size = self.lr / bias_correction(self.beta1, step)
        trust = torch.where((weight_norm != 0) & (update_norm != 0), ratio, 1.0)
        param.sub_(step_size * (trust * update))


def _norm(x: Tensor) -> Tensor:
    """||x||_2 of each run's tensor, shaped (R, 1, ..., 1) to broadcast against x."""
    return x.reshape(x.shape[0], -1).norm(dim=1).view((-1,) + (1,) * (x.ndim - 1))


_DEFAULTS = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-6, "weight_decay": 0.0}

ENTRIES = (
    Optimizer(
        "lamb", "LAMB", family="contender",
        summary="Adam's direction rescaled per tensor by the trust ratio ||w||/||update|| (You et al. 2020)",
        signature=("lr", "betas", "weight_decay", "weight_decouple"),  # pytorch_optimizer.Lamb's order
        search={"beta1": Dimension(0.5, 0.99), "beta2": Dimension(0.9, 0.9999)},
        absent={"keras": "not yet compared with keras.optimizers.Lamb; use 'article' or 'pytorch'"},
        reference="You et al. 2020, Large Batch Optimization for Deep Learning: Training BERT in 76 minutes, "
                  "Algorithm 2; pytorch convention: pytorch-optimizer 4.1.0 Lamb.",
        conventions={
            "article": Convention(
                LAMB, _DEFAULTS, "r = m^/(sqrt(v^)+eps) + wd*w; w -= lr*||w||/||r|| * r",
                flags={"weight_decouple": False, "paper_form": True},
                source="You et al. 2020, Algorithm 2 (phi = identity)"),
            "pytorch": Convention(
                LAMB, {**_DEFAULTS, "weight_decouple": True},
                "w *= 1-lr*wd; u = m/(sqrt(v)+eps); w -= lr/(1-b1^t) * min(||w||,10)/(||u||+eps) * u",
                flags={"paper_form": False}, source="pytorch_optimizer.Lamb 4.1.0"),
        },
    ),
)
