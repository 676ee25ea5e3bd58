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
