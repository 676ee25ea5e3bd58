"""Momentum as the article writes it: an exponential moving average of gradients.

article   v = beta*v + (1-beta)*g ;  w = w - alpha*v
pytorch   heavy ball, torch.optim.SGD(momentum=0.9): see ``TorchSGD`` in sgd.py
keras     keras.optimizers.SGD(momentum=0.9): see ``KerasSGD`` in sgd.py

The EMA form and the heavy-ball form ``v = mu*v + g`` take the same direction but the EMA's step is
(1 - beta) times smaller for the same alpha: the same lr means different training in each framework.
"""

from __future__ import annotations

from dataclasses import dataclass

from optarena.rules.base import HP, Rule, zeros_like
from optarena.rules.primitives import ema_, l2_gradient, step_
from optarena.rules.sgd import KERAS_SGD, TORCH_SGD, KerasSGD, TorchSGD
from optarena.rules.spec import Convention, Dimension, Optimizer, nesterov_needs_momentum


@dataclass(frozen=True)
class EMAMomentum(Rule):
    """v = beta*v + (1-beta)*g ; w = w - alpha*v   (``momentum`` is beta)."""

    name = "momentum"
    lr: HP
    momentum: HP
    weight_decay: HP = 0.0

    def init_state(self, param):
        return {"v": zeros_like(param)}

    def apply_(self, param, grad, state, step):
        g = l2_gradient(grad, param, self.weight_decay)
        v = ema_(state["v"], g, self.momentum)
        step_(param, v, self.lr)


ENTRIES = (
    Optimizer(
        "momentum", "Momentum", family="article",
        summary="article v = m*v + (1-m)*g (EMA); pytorch heavy ball v = m*v + g; keras m = m*v - lr*g",
        search={"momentum": Dimension(0.5, 0.99)},
        conventions={
            "article": Convention(EMAMomentum, {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0},
                                  "v = mu*v + (1-mu)*g; w -= lr*v  (EMA)"),
            "pytorch": Convention(TorchSGD, {**TORCH_SGD, "momentum": 0.9}, "b = mu*b + g; w -= lr*b  (heavy ball)",
                                  constraints=(nesterov_needs_momentum,), source="torch.optim.SGD(momentum=0.9)"),
            "keras": Convention(KerasSGD, {**KERAS_SGD, "momentum": 0.9}, "m = mu*m - lr*g; w += m",
                                constraints=(nesterov_needs_momentum,), source="keras.optimizers.SGD(momentum=0.9)"),
        },
    ),
)
