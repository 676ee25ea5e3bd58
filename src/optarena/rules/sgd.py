"""Stochastic gradient descent.

article   w = w - alpha * g                                   (plus optional L2: g = g + wd*w)
pytorch   torch.optim.SGD: g = g + wd*w;  b = g (t=1), b = mu*b + (1-dampening)*g (t>1);
          d = g + mu*b if nesterov else b;  w = w - lr*d
keras     keras.optimizers.SGD: w = w - lr*wd*w (decoupled);  m = mu*m - lr*g;
          w = w + mu*m - lr*g if nesterov else w + m
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from optarena.rules.base import HP, Rule, any_nonzero, zeros_like
from optarena.rules.primitives import decoupled_decay_, l2_gradient, step_
from optarena.rules.spec import Convention, Optimizer, nesterov_needs_momentum


@dataclass(frozen=True)
class SGD(Rule):
    """The article's SGD: w = w - alpha * g."""

    name = "sgd"
    lr: HP
    weight_decay: HP = 0.0

    def init_state(self, param: Tensor) -> dict[str, Tensor]:
        return {}

    def apply_(self, param, grad, state, step):
        g = l2_gradient(grad, param, self.weight_decay)
        step_(param, g, self.lr)


@dataclass(frozen=True)
class TorchSGD(Rule):
    """torch.optim.SGD, heavy-ball momentum: b = mu*b + (1-dampening)*g; w = w - lr*b."""

    name = "sgd"
    switches = ("momentum",)
    lr: HP
    momentum: HP
    dampening: HP
    weight_decay: HP
    nesterov: bool

    def init_state(self, param):
        return {"momentum_buffer": zeros_like(param)} if any_nonzero(self.momentum) else {}

    def apply_(self, param, grad, state, step):
        g = l2_gradient(grad, param, self.weight_decay)
        if "momentum_buffer" in state:
            b = state["momentum_buffer"]
            if isinstance(step, Tensor):  # compiled (step a tensor): no data-dependent branch
                b.copy_(torch.where(step == 1, g, b * self.momentum + (1 - self.dampening) * g))
            elif step == 1:
                b.copy_(g)  # torch starts the buffer at the first gradient, undamped
            else:
                b.mul_(self.momentum).add_((1 - self.dampening) * g)
            g = g + self.momentum * b if self.nesterov else b
        step_(param, g, self.lr)


@dataclass(frozen=True)
class KerasSGD(Rule):
    """keras.optimizers.SGD: m = mu*m - lr*g; w = w + m (or w + mu*m - lr*g with Nesterov)."""

    name = "sgd"
    switches = ("momentum",)
    lr: HP
    momentum: HP
    weight_decay: HP
    nesterov: bool

    def init_state(self, param):
        return {"m": zeros_like(param)} if any_nonzero(self.momentum) else {}

    def apply_(self, param, grad, state, step):
        decoupled_decay_(param, self.lr, self.weight_decay)
        if "m" not in state:
            step_(param, grad, self.lr)
            return
        m = state["m"]
        m.mul_(self.momentum).sub_(self.lr * grad)
        if self.nesterov:
            param.add_(self.momentum * m - self.lr * grad)
        else:
            param.add_(m)


TORCH_SGD = {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False}
KERAS_SGD = {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "nesterov": False}
TORCH_FORMULA = "b = mu*b + (1-damp)*g; w -= lr*(g + mu*b if nesterov else b)"
KERAS_FORMULA = "m = mu*m - lr*g; w += (mu*m - lr*g if nesterov else m)"

ENTRIES = (
    Optimizer(
        "sgd", "SGD", family="article",
        summary="stochastic gradient descent; pytorch/keras conventions add their momentum options",
        conventions={
            "article": Convention(SGD, {"lr": 0.01, "weight_decay": 0.0}, "w -= lr*g"),
            "pytorch": Convention(TorchSGD, TORCH_SGD, TORCH_FORMULA, constraints=(nesterov_needs_momentum,),
                                  source="torch.optim.SGD"),
            "keras": Convention(KerasSGD, KERAS_SGD, KERAS_FORMULA, constraints=(nesterov_needs_momentum,),
                                source="keras.optimizers.SGD"),
        },
    ),
)
