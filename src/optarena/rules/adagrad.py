"""AdaGrad (Duchi et al. 2011): per-parameter steps shrink with the accumulated squared gradient.

article   G = G + g^2 ;  w = w - alpha / sqrt(G + eps) * g                 (eps inside the root)
pytorch   torch.optim.Adagrad: g = g + wd*w; G = G + g^2 (G_0 = initial_accumulator_value);
          w = w - lr_t * g / (sqrt(G) + eps),  lr_t = lr / (1 + (t-1)*lr_decay)
keras     keras.optimizers.Adagrad: w = w - lr*wd*w; G = G + g^2 (G_0 = 0.1);
          w = w - lr * g / sqrt(G + eps)                                   (eps inside the root)

Rows whose gradient is zero are left unchanged, so sparse gradients update only the rows present.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from optarena.rules.base import HP, Rule
from optarena.rules.primitives import denominator, step_, weight_decay_
from optarena.rules.spec import Convention, Optimizer


@dataclass(frozen=True)
class AdaGrad(Rule):
    """G = G + g^2 ; w = w - lr_t * g / denominator(G, eps).

    ``eps_inside_root`` picks sqrt(G + eps) (article, Keras) or sqrt(G) + eps (PyTorch);
    ``decoupled`` picks Keras's decoupled weight decay over PyTorch's L2 gradient term.
    """

    name = "adagrad"
    supports_sparse = True
    lr: HP
    eps: HP
    initial_accumulator_value: HP
    lr_decay: HP
    weight_decay: HP
    eps_inside_root: bool
    decoupled: bool

    def init_state(self, param):
        return {"G": torch.full_like(param, 0.0).add_(self.initial_accumulator_value)}

    def apply_(self, param, grad, state, step):
        g = weight_decay_(param, grad, self.lr, self.weight_decay, self.decoupled)
        G = state["G"].addcmul_(g, g)
        lr_t = self.lr / (1 + (step - 1) * self.lr_decay)
        step_(param, g / denominator(G, self.eps, self.eps_inside_root), lr_t)


ENTRIES = (
    Optimizer(
        "adagrad", "AdaGrad", family="article",
        signature=("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"),
        summary="G += g^2, w -= lr * g / sqrt(G + eps) (article); accepts sparse gradients",
        conventions={
            "article": Convention(
                AdaGrad, {"lr": 0.01, "eps": 1e-8, "weight_decay": 0.0}, "G += g^2; w -= lr*g/sqrt(G + eps)",
                flags={"initial_accumulator_value": 0.0, "lr_decay": 0.0, "eps_inside_root": True, "decoupled": False}),
            "pytorch": Convention(
                AdaGrad,
                {"lr": 0.01, "eps": 1e-10, "initial_accumulator_value": 0.0, "lr_decay": 0.0, "weight_decay": 0.0},
                "G += g^2; w -= lr/(1+(t-1)*decay) * g/(sqrt(G) + eps)",
                flags={"eps_inside_root": False, "decoupled": False}, source="torch.optim.Adagrad"),
            "keras": Convention(
                AdaGrad, {"lr": 1e-3, "eps": 1e-7, "initial_accumulator_value": 0.1, "weight_decay": 0.0},
                "G += g^2 (G0=0.1); w -= lr*g/sqrt(G + eps)",
                flags={"lr_decay": 0.0, "eps_inside_root": True, "decoupled": True}, source="keras.optimizers.Adagrad"),
        },
    ),
)
