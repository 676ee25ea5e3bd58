"""FTRL-Proximal (McMahan et al. 2013, "Ad Click Prediction", Algorithm 1), per coordinate.

sigma = (n_new^(-p) - n^(-p)) / alpha           n_new = n + g^2,  p = lr_power (-1/2 in the paper)
z     = z + g + 2*l2_shrinkage*w - sigma * w     (Keras's shrinkage term; 0 in the paper)
n     = n_new
w     = 0                                        if |z| <= l1
      = -(z - sign(z)*l1) / ((beta + n^(-p)) / alpha + l2_factor*l2)   otherwise

The parameter always holds w computed from (z, n), so start it at 0 (or at w(z_0, n_0)).
article   the paper exactly: n_0 = 0, p = -1/2, no shrinkage; defaults alpha = 0.1, beta = 1
keras     keras.optimizers.Ftrl: its ``l2`` enters the quadratic as 2*l2 (and beta/(2*lr) is added to
          l2 for the same reason), n_0 = initial_accumulator_value = 0.1, beta = 0
pytorch   there is no torch.optim original; asking for it is an error.
Rows with zero gradient keep (z, n) and therefore w: sparse gradients update only the rows present.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from optarena.rules.base import HP, Rule, any_nonzero
from optarena.rules.spec import Convention, Dimension, Optimizer, above


@dataclass(frozen=True)
class FTRL(Rule):
    name = "ftrl"
    supports_sparse = True
    lr: HP  # alpha
    lr_power: HP
    initial_accumulator_value: HP
    l1: HP
    l2: HP
    l2_shrinkage: HP
    beta: HP
    l2_factor: float = 1.0  # the paper's lambda_2 is l2_factor * l2 (Keras: 2)

    def init_state(self, param):
        return {"z": torch.zeros_like(param), "n": torch.zeros_like(param).add_(self.initial_accumulator_value)}

    def apply_(self, param, grad, state, step):
        w, z, n = param, state["z"], state["n"]
        n_new = n + grad * grad
        sigma = (n_new.pow(-self.lr_power) - n.pow(-self.lr_power)) / self.lr
        g = grad + 2 * self.l2_shrinkage * w if any_nonzero(self.l2_shrinkage) else grad
        z.add_(g - sigma * w)
        n.copy_(n_new)
        quadratic = (self.beta + n.pow(-self.lr_power)) / self.lr + self.l2_factor * self.l2
        w.copy_((z.clamp(-self.l1, self.l1) - z) / quadratic)


ENTRIES = (
    Optimizer(
        "ftrl", "FTRL", family="article",
        summary="FTRL-Proximal (McMahan et al. 2013). Start parameters at zero. Accepts sparse gradients",
        search={"l1": Dimension(1e-6, 1.0, log=True)},
        absent={"pytorch": "torch.optim has no FTRL"},
        conventions={
            "article": Convention(
                FTRL, {"lr": 0.1, "beta": 1.0, "l1": 0.0, "l2": 0.0},
                "z += g - sigma*w; n += g^2; w = -(z - sgn(z) l1)/((beta+sqrt(n))/lr + l2) if |z|>l1 else 0",
                flags={"lr_power": -0.5, "initial_accumulator_value": 0.0, "l2_shrinkage": 0.0},
                ranges={"lr": above(0.0)}),
            # Keras adds 2*(l2 + beta/(2*lr)) to the quadratic: the paper's lambda_2 is 2*l2.
            "keras": Convention(
                FTRL,
                {"lr": 1e-3, "lr_power": -0.5, "initial_accumulator_value": 0.1, "l1": 0.0, "l2": 0.0,
                 "l2_shrinkage": 0.0, "beta": 0.0},
                "as article with n0=0.1, quadratic 2*l2, lr_power, l2_shrinkage",
                flags={"l2_factor": 2.0}, ranges={"lr": above(0.0)}, source="keras.optimizers.Ftrl"),
        },
    ),
)
