"""Nadam (Dozat 2016): Adam with Nesterov momentum and a warming momentum schedule.

mu_t  = b1 * (1 - 0.5 * 0.96^(t * psi))          psi = momentum_decay
m = b1*m + (1-b1)*g ;  v = b2*v + (1-b2)*g^2 ;  v^ = v / (1 - b2^t)
m_bar = (1 - mu_t) * g / (1 - prod_{i<=t} mu_i) + mu_{t+1} * m / (1 - prod_{i<=t+1} mu_i)
w = w - lr * m_bar / (sqrt(v^) + eps)

article and pytorch (torch.optim.NAdam) use Dozat's psi = 0.004 (t/250); keras.optimizers.Nadam
uses psi = 1, i.e. mu_t = b1 * (1 - 0.5 * 0.96^t), a schedule that is flat after ~100 steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from optarena.rules.base import HP, Rule, zeros_like
from optarena.rules.primitives import bias_correction, denominator, ema_, power, step_, weight_decay_
from optarena.rules.spec import Convention, Dimension, Optimizer


@dataclass(frozen=True)
class Nadam(Rule):
    name = "nadam"
    lr: HP
    beta1: HP
    beta2: HP
    eps: HP
    momentum_decay: HP
    weight_decay: HP
    decoupled: bool
    framework_product: bool  # torch keeps prod(mu_i) as a default-precision scalar

    def init_state(self, param):
        dtype = param.dtype
        if self.framework_product:  # torch: float64 only when it is the default dtype; else float32
            dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        if isinstance(self.beta1, Tensor):
            product = torch.ones_like(self.beta1, dtype=dtype)
        else:
            product = torch.ones((), dtype=dtype, device=param.device)
        return {"m": zeros_like(param), "v": zeros_like(param), "mu_product": product}

    def momentum_at(self, t: int) -> HP:
        return self.beta1 * (1 - 0.5 * power(0.96, t * self.momentum_decay))

    def apply_(self, param, grad, state, step):
        g = weight_decay_(param, grad, self.lr, self.weight_decay, self.decoupled)
        mu_t, mu_next = self.momentum_at(step), self.momentum_at(step + 1)
        mu_product = state["mu_product"].mul_(mu_t)
        m = ema_(state["m"], g, self.beta1)
        v = ema_(state["v"], g * g, self.beta2)
        d = denominator(v / bias_correction(self.beta2, step), self.eps, eps_inside_root=False)
        if mu_product.ndim == 0 and not torch.compiler.is_compiling():  # one run, eager: floats, as frameworks do
            mu_product = mu_product.item()
        else:
            mu_product = mu_product.to(param.dtype)
        m_bar = (1 - mu_t) / (1 - mu_product) * g + mu_next / (1 - mu_product * mu_next) * m
        step_(param, m_bar / d, self.lr)


_DOZAT = "mu_t = b1(1-0.5*0.96^(t*psi)); w -= lr*((1-mu_t)g/(1-P_t) + mu_t+1 m/(1-P_t+1))/(sqrt(v^)+eps)"

ENTRIES = (
    Optimizer(
        "nadam", "Nadam", family="article",
        signature=("lr", "betas", "eps", "weight_decay", "momentum_decay"),
        summary="Dozat 2016: Adam with Nesterov momentum and the schedule mu_t = b1(1 - 0.5*0.96^(t*psi))",
        search={"beta1": Dimension(0.5, 0.99), "beta2": Dimension(0.9, 0.9999)},
        conventions={
            "article": Convention(
                Nadam, {"lr": 2e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "momentum_decay": 4e-3, "weight_decay": 0.0},
                _DOZAT + "  (psi = momentum_decay)", flags={"decoupled": False, "framework_product": False}),
            "pytorch": Convention(
                Nadam, {"lr": 2e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "momentum_decay": 4e-3, "weight_decay": 0.0},
                "as article, psi = momentum_decay", flags={"decoupled": False, "framework_product": True},
                source="torch.optim.NAdam"),
            # Keras has no momentum_decay: its schedule is mu_t = b1(1 - 0.5*0.96^t), i.e. psi = 1.
            "keras": Convention(
                Nadam, {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7, "momentum_decay": 1.0, "weight_decay": 0.0},
                "as article with psi = momentum_decay = 1: mu_t = b1(1-0.5*0.96^t)",
                flags={"decoupled": True, "framework_product": False}, source="keras.optimizers.Nadam"),
        },
    ),
)
