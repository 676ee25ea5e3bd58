"""Adadelta (Zeiler 2012, Algorithm 1): steps in the units of the parameter, no global rate needed.

E[g^2] = rho*E[g^2] + (1-rho)*g^2
dx     = sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) * g
E[dx^2] = rho*E[dx^2] + (1-rho)*dx^2
w      = w - lr * dx

Zeiler has no learning rate (lr = 1, the article's and PyTorch's default); torch.optim.Adadelta and
keras.optimizers.Adadelta scale dx by lr after the accumulation, exactly as here. Conventions differ
in defaults (rho 0.95/0.9/0.95, eps 1e-6/1e-6/1e-7, lr 1/1/0.001) and weight decay.
"""

from __future__ import annotations

from dataclasses import dataclass

from optarena.rules.base import HP, Rule, zeros_like
from optarena.rules.primitives import denominator, ema_, step_, weight_decay_
from optarena.rules.spec import Convention, Dimension, Optimizer


@dataclass(frozen=True)
class Adadelta(Rule):
    name = "adadelta"
    lr: HP
    rho: HP
    eps: HP
    weight_decay: HP
    decoupled: bool

    def init_state(self, param):
        return {"Eg2": zeros_like(param), "Edx2": zeros_like(param)}

    def apply_(self, param, grad, state, step):
        g = weight_decay_(param, grad, self.lr, self.weight_decay, self.decoupled)
        Eg2 = ema_(state["Eg2"], g * g, self.rho)
        dx = denominator(state["Edx2"], self.eps, eps_inside_root=True) / denominator(Eg2, self.eps, eps_inside_root=True) * g
        ema_(state["Edx2"], dx * dx, self.rho)
        step_(param, dx, self.lr)


FORMULA = "E[g2] = r*E[g2]+(1-r)g^2; dx = sqrt(E[dx2]+eps)/sqrt(E[g2]+eps)*g; w -= lr*dx"

ENTRIES = (
    Optimizer(
        "adadelta", "Adadelta", family="article",
        summary="Zeiler 2012: dx = sqrt(E[dx^2]+eps)/sqrt(E[g^2]+eps) * g, w -= lr * dx",
        search={"rho": Dimension(0.8, 0.99), "eps": Dimension(1e-8, 1e-4, log=True)},
        conventions={
            "article": Convention(Adadelta, {"lr": 1.0, "rho": 0.95, "eps": 1e-6, "weight_decay": 0.0}, FORMULA,
                                  flags={"decoupled": False}),
            "pytorch": Convention(Adadelta, {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0}, FORMULA,
                                  flags={"decoupled": False}, source="torch.optim.Adadelta"),
            "keras": Convention(Adadelta, {"lr": 1e-3, "rho": 0.95, "eps": 1e-7, "weight_decay": 0.0}, FORMULA,
                                flags={"decoupled": True}, source="keras.optimizers.Adadelta"),
        },
    ),
)
