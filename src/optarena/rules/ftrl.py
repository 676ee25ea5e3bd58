"""FTRL-Proximal (McMahan et al. 2013, "Ad Click Prediction", Algorithm 1), per coordinate.

sigma = (n_new^(-p) - n^(-p)) / alpha           n_new = n + g^2,  p = lr_power (-1/2 in the paper)
z     = z + g + 2*l2_shrinkage*w - sigma * w     (Keras's shrinkage term; 0 in the paper)
n     = n_new
w     = 0                                        if |z| <= l1
      = -(z - sign(z)*l1) / ((beta + n^(-p)) / alpha + l2)   otherwise

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


@dataclass(frozen=True)
class FTRL(Rule):
    name = "ftrl"
    supports_sparse = True
    lr: HP  # alpha
    lr_power: HP
    initial_accumulator_value: HP
    l1: HP
    l2: HP  # lambda_2 as in the paper's denominator
    l2_shrinkage: HP
    beta: HP

    def init_state(self, param):
        return {"z": torch.zeros_like(param), "n": torch.zeros_like(param).add_(self.initial_accumulator_value)}

    def apply_(self, param, grad, state, step):
        w, z, n = param, state["z"], state["n"]
        n_new = n + grad * grad
        sigma = (n_new.pow(-self.lr_power) - n.pow(-self.lr_power)) / self.lr
        g = grad + 2 * self.l2_shrinkage * w if any_nonzero(self.l2_shrinkage) else grad
        z.add_(g - sigma * w)
        n.copy_(n_new)
        quadratic = (self.beta + n.pow(-self.lr_power)) / self.lr + self.l2
        w.copy_((z.clamp(-self.l1, self.l1) - z) / quadratic)
