"""Adafactor (Shazeer & Stern 2018, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost").

Second moments of a matrix are kept factored, a row mean R and a column mean C (for tensors of
higher rank: over the last two dimensions, batched over the others); vectors keep a full V.

  b2_t = 1 - t^decay  (decay = beta2_decay = -0.8) ;  rho_t = min(lr, 1/sqrt(t))
  alpha_t = max(eps2, RMS(w_{t-1})) * rho_t

article   the paper's Algorithms 4 (matrices) and 5 (vectors), relative step size and update
          clipping, eps1 added to the squared gradient:
          R = b2_t*R + (1-b2_t)*mean_cols(g^2 + eps1) ;  C = b2_t*C + (1-b2_t)*mean_rows(g^2 + eps1)
          V^ = R C / mean(R)   (vectors: V^ = b2_t*V^ + (1-b2_t)*(g^2 + eps1))
          U = g / sqrt(V^) ;  U^ = U / max(1, RMS(U)/d) ;  w = w - alpha_t * U^
          (the paper writes sums, R C / (1^T R); with means the ratio is the same.) The paper's
          rho_t = min(1e-2, 1/sqrt(t)) is lr's default here. Defaults eps1=1e-30, eps2=1e-3, d=1.
pytorch   torch.optim.Adafactor (torch 2.13, torch/optim/_adafactor.py, ``_single_tensor_adafactor``):
          w = w*(1 - lr*wd) after alpha_t is taken ;  R, C, V^ as above on g^2 alone (lerp);
          V^ = R C / max(mean(R), eps1) ;  U = g * rsqrt(max(V^, eps1^2)) ; the same clipping.
          ``eps1=None`` (torch's default: the machine epsilon of the parameter's dtype) is
          ``eps1=-1`` here, the registry holding numbers only; ``eps=(eps1, eps2)`` is given flat.

RMS(x) = ||x||_2 / sqrt(numel) per parameter tensor (per run: the rule sees (R, *shape) tensors).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from optarena.rules.base import HP, Rule, any_nonzero, zeros_like
from optarena.rules.spec import Convention, Dimension, Optimizer, Range


@dataclass(frozen=True)
class Adafactor(Rule):
    name = "adafactor"
    elementwise = False
    lr: HP
    beta2_decay: HP
    eps1: HP
    eps2: HP
    d: HP
    weight_decay: HP = 0.0
    eps1_in_moments: bool = False  # article: g^2 + eps1 in the moments; pytorch: eps1 as clamps

    def init_state(self, param):
        if param.ndim > 2:  # a matrix (or higher) per run: factored over the last two dimensions
            return {"row_var": param.new_zeros(param.shape[:-1] + (1,)),
                    "col_var": param.new_zeros(param.shape[:-2] + (1, param.shape[-1]))}
        return {"variance": zeros_like(param)}

    def apply_(self, param, grad, state, step):
        one_minus_beta2_t = step**self.beta2_decay
        rho_t = _minimum(self.lr, 1 / step**0.5)
        alpha_t = (_norm(param) / _numel(param) ** 0.5).clamp_(min=self.eps2) * rho_t  # taken before the decay
        if any_nonzero(self.weight_decay):
            param.mul_(1 - self.lr * self.weight_decay)
        eps1 = self._eps1(param.dtype)
        v_hat = self._second_moment(grad, state, one_minus_beta2_t, eps1)
        if self.eps1_in_moments:
            u = grad / v_hat.sqrt_()
        else:
            u = v_hat.clamp_(min=eps1 * eps1).rsqrt_().mul_(grad)
        clip = (_norm(u) / (_numel(u) ** 0.5 * self.d)).clamp_(min=1.0)  # U^ = U / max(1, RMS(U)/d)
        param.sub_((alpha_t / clip) * u)

    def _second_moment(self, grad: Tensor, state: dict, one_minus_beta2_t: HP, eps1: HP) -> Tensor:
        """V^: R C / mean(R) from the factored moments of a matrix, or the full moment of a vector."""
        g2 = grad * grad + eps1 if self.eps1_in_moments else None
        if "variance" in state:
            return state["variance"].lerp_(grad * grad if g2 is None else g2, one_minus_beta2_t).clone()
        row_var, col_var = state["row_var"], state["col_var"]
        if g2 is None:  # torch: the mean of g^2 as a squared norm, without materialising g^2
            row_mean = torch.norm(grad, dim=-1, keepdim=True).square_().div_(grad.size(-1))
            col_mean = torch.norm(grad, dim=-2, keepdim=True).square_().div_(grad.size(-2))
        else:
            row_mean, col_mean = g2.mean(dim=-1, keepdim=True), g2.mean(dim=-2, keepdim=True)
        row_var.lerp_(row_mean, one_minus_beta2_t)
        col_var.lerp_(col_mean, one_minus_beta2_t)
        row_var_mean = row_var.mean(dim=-2, keepdim=True)
        if g2 is None:
            row_var_mean.clamp_(min=eps1)
        return (row_var @ col_var).div_(row_var_mean)  # R C: an outer product per run

    def _eps1(self, dtype: torch.dtype) -> HP:
        """eps1 < 0 (the pytorch default, torch's None) is the machine epsilon of the dtype."""
        machine = torch.finfo(dtype).eps
        if isinstance(self.eps1, Tensor):
            return torch.where(self.eps1 < 0, machine, self.eps1)
        return machine if self.eps1 < 0 else self.eps1


def _norm(x: Tensor) -> Tensor:
    """||x||_2 of each run's tensor, shaped (R, 1, ..., 1) to broadcast against x."""
    return x.reshape(x.shape[0], -1).norm(dim=1).view((-1,) + (1,) * (x.ndim - 1))


def _numel(x: Tensor) -> int:
    """The number of entries of one run's tensor."""
    return x[0].numel()


def _minimum(h: HP, bound: float) -> HP:
    return h.clamp(max=bound) if isinstance(h, Tensor) else min(h, bound)


EPS1_RANGE = Range(lambda x: x >= 0 or x == -1, "a finite number >= 0, or -1 (torch's None: the dtype's machine epsilon)")
_COMMON = {"lr": 1e-2, "beta2_decay": -0.8}

ENTRIES = (
    Optimizer(
        "adafactor", "Adafactor", family="contender",
        summary="factored second moments, relative step size, update clipping (Shazeer & Stern 2018)",
        search={"beta2_decay": Dimension(-1.0, -0.5)},
        absent={"keras": "not yet compared with keras.optimizers.Adafactor; use 'article' or 'pytorch'"},
        reference="Shazeer & Stern 2018, Adafactor: Adaptive Learning Rates with Sublinear Memory Cost, "
                  "Algorithms 4-5; pytorch convention: torch.optim.Adafactor (torch 2.13). lr caps the "
                  "relative step size rho_t = min(lr, 1/sqrt(t)).",
        conventions={
            "article": Convention(
                Adafactor, {**_COMMON, "eps1": 1e-30, "eps2": 1e-3, "d": 1.0},
                "w -= max(eps2, RMS(w))*min(lr, 1/sqrt(t)) * U/max(1, RMS(U)/d); U = g/sqrt(RC/mean(R)), R, C of g^2+eps1",
                flags={"eps1_in_moments": True}, ranges={"eps1": EPS1_RANGE},
                source="Shazeer & Stern 2018, Algorithms 4-5"),
            "pytorch": Convention(
                Adafactor, {**_COMMON, "eps1": -1.0, "eps2": 1e-3, "d": 1.0, "weight_decay": 0.0},
                "w *= 1-lr*wd; w -= max(eps2, RMS(w))*min(lr, 1/sqrt(t)) * U/max(1, RMS(U)/d); "
                "U = g*rsqrt(max(RC/max(mean(R), eps1), eps1^2))",
                flags={"eps1_in_moments": False}, ranges={"eps1": EPS1_RANGE},
                source="torch.optim.Adafactor"),
        },
    ),
)
