"""Lion, EvoLved Sign Momentum (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

article   the paper's Algorithm 2 (Lion with decoupled weight decay):
          c = b1*m + (1-b1)*g ;  w = w - lr*(sign(c) + wd*w) ;  m = b2*m + (1-b2)*g
pytorch   lion-pytorch 0.2.5, ``lion_pytorch.Lion`` (lion_pytorch/lion_pytorch.py, ``update_fn``):
          w = w*(1 - lr*wd) ;  w = w - lr*sign(b1*m + (1-b1)*g) ;  m = b2*m + (1-b2)*g
          -- the paper's algorithm, operation for operation, so the two conventions are one rule
          with the same defaults (lr=1e-4, betas=(0.9, 0.99), wd=0).
          lion-pytorch's ``decoupled_weight_decay=True`` (wd divided by the initial lr) and its
          Triton kernel are not reproduced; ``decoupled_weight_decay=`` here is optarena's own
          (w -= lr*wd*w before the rule, as for every optimizer).

Under a constant gradient g every step moves each coordinate by exactly lr*sign(g) (wd = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from optarena.rules.base import HP, Rule, any_nonzero, zeros_like
from optarena.rules.primitives import ema_, step_
from optarena.rules.spec import Convention, Dimension, Optimizer


@dataclass(frozen=True)
class Lion(Rule):
    name = "lion"
    lr: HP
    beta1: HP
    beta2: HP
    weight_decay: HP

    def init_state(self, param):
        return {"exp_avg": zeros_like(param)}

    def apply_(self, param, grad, state, step):
        if any_nonzero(self.weight_decay):
            param.mul_(1 - self.lr * self.weight_decay)  # w*(1 - lr*wd): lion-pytorch's rounding
        m = state["exp_avg"]
        c = _interpolate(m, grad, self.beta1)
        step_(param, c.sign_(), self.lr)
        ema_(m, grad, self.beta2)


def _interpolate(m: Tensor, g: Tensor, beta: HP) -> Tensor:
    """c = beta*m + (1-beta)*g, a new tensor (lion-pytorch: ``m.clone().mul_(b1).add(g, alpha=1-b1)``)."""
    if isinstance(beta, Tensor):
        return m * beta + (1 - beta) * g
    return (m * beta).add_(g, alpha=1 - beta)


_DEFAULTS = {"lr": 1e-4, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.0}
_FORMULA = "c = b1*m + (1-b1)*g; w -= lr*(sign(c) + wd*w); m = b2*m + (1-b2)*g"

ENTRIES = (
    Optimizer(
        "lion", "Lion", family="contender",
        summary="sign of an interpolated momentum, step lr per coordinate (Chen et al. 2023)",
        search={"beta1": Dimension(0.8, 0.99), "beta2": Dimension(0.9, 0.999)},
        absent={"keras": "not yet compared with keras.optimizers.Lion; use 'article' or 'pytorch'"},
        reference="Chen et al. 2023, Symbolic Discovery of Optimization Algorithms, Algorithm 2; "
                  "pytorch convention: lion-pytorch 0.2.5 (the same algorithm).",
        conventions={
            "article": Convention(Lion, _DEFAULTS, _FORMULA,
                                  source="Chen et al. 2023, Algorithm 2 (= lion-pytorch)"),
            "pytorch": Convention(Lion, _DEFAULTS, _FORMULA, source="lion_pytorch.Lion 0.2.5"),
        },
    ),
)
