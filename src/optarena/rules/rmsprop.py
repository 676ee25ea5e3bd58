"""RMSprop (Hinton 2012): AdaGrad with a decaying average of squared gradients.

article   G = beta*G + (1-beta)*g^2 ;  w = w - alpha / sqrt(G + eps) * g     (eps inside the root)
pytorch   torch.optim.RMSprop: G = a*G + (1-a)*g^2; centered: G~ = G - gbar^2 with gbar = EMA(g);
          d = sqrt(G~) + eps;  momentum: b = mu*b + g/d, w = w - lr*b;  else w = w - lr*g/d
keras     keras.optimizers.RMSprop: same averages, d = sqrt(G~ + eps) (eps inside the root);
          momentum: m = mu*m + lr*g/d, w = w - m   (the learning rate lives inside the buffer)
``alpha`` is the decay (the article's beta, Keras's rho).
"""

from __future__ import annotations

from dataclasses import dataclass

from optarena.rules.base import HP, Rule, any_nonzero, zeros_like
from optarena.rules.primitives import denominator, ema_, step_, weight_decay_
from optarena.rules.spec import Convention, Dimension, Optimizer


@dataclass(frozen=True)
class RMSprop(Rule):
    name = "rmsprop"
    switches = ("momentum",)
    lr: HP
    alpha: HP
    eps: HP
    momentum: HP
    weight_decay: HP
    centered: bool
    eps_inside_root: bool
    decoupled: bool  # Keras's decoupled weight decay instead of PyTorch's L2 gradient term
    lr_in_buffer: bool  # Keras keeps lr inside the momentum buffer; PyTorch applies it after

    def init_state(self, param):
        state = {"G": zeros_like(param)}
        if self.centered:
            state["g_avg"] = zeros_like(param)
        if any_nonzero(self.momentum):
            state["b"] = zeros_like(param)
        return state

    def apply_(self, param, grad, state, step):
        g = weight_decay_(param, grad, self.lr, self.weight_decay, self.decoupled)
        G = ema_(state["G"], g * g, self.alpha)
        if self.centered:
            g_avg = ema_(state["g_avg"], g, self.alpha)
            G = G - g_avg * g_avg
        d = denominator(G, self.eps, self.eps_inside_root)
        if "b" not in state:
            step_(param, g / d, self.lr)
        elif self.lr_in_buffer:
            b = state["b"].mul_(self.momentum).add_(self.lr * g / d)
            param.sub_(b)
        else:
            b = state["b"].mul_(self.momentum).add_(g / d)
            step_(param, b, self.lr)


ENTRIES = (
    Optimizer(
        "rmsprop", "RMSprop", family="article",
        signature=("lr", "alpha", "eps", "weight_decay", "momentum", "centered"),
        summary="G = alpha*G + (1-alpha)*g^2, w -= lr * g / sqrt(G + eps) (article)",
        search={"alpha": Dimension(0.8, 0.999)},
        conventions={
            "article": Convention(
                RMSprop, {"lr": 1e-3, "alpha": 0.9, "eps": 1e-8, "weight_decay": 0.0},
                "G = a*G + (1-a)*g^2; w -= lr*g/sqrt(G + eps)",
                flags={"momentum": 0.0, "centered": False, "eps_inside_root": True, "decoupled": False, "lr_in_buffer": False}),
            "pytorch": Convention(
                RMSprop, {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "centered": False, "weight_decay": 0.0},
                "G = a*G + (1-a)*g^2; w -= lr*g/(sqrt(G) + eps)",
                flags={"eps_inside_root": False, "decoupled": False, "lr_in_buffer": False}, source="torch.optim.RMSprop"),
            "keras": Convention(
                RMSprop, {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7, "momentum": 0.0, "centered": False, "weight_decay": 0.0},
                "G = a*G + (1-a)*g^2; w -= lr*g/sqrt(G + eps)",
                flags={"eps_inside_root": True, "decoupled": True, "lr_in_buffer": True}, source="keras.optimizers.RMSprop"),
        },
    ),
)
