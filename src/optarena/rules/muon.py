"""Muon, momentum orthogonalised by Newton-Schulz iterations (Jordan et al. 2024), for 2-D weights,
with the usual AdamW fallback for every other parameter.

Matrices (2-D parameters; (R, m, n) with the run dimension):
  NS_k(X):  X = X / max(||X||_F, eps) ;  k times:  A = X X^T ;  B = b*A + c*A A ;  X = a*X + B X
            (X transposed first when m > n; (a, b, c) = (3.4445, -4.7750, 2.0315))

article   Keller Jordan's post "Muon: An optimizer for hidden layers in neural networks" (2024),
          its algorithm as written: B = mu*B + g (heavy ball) ;  O = NS_5(B), or NS_5(g + mu*B)
          with nesterov ;  w = w - lr*wd*w - lr*O ;  NS in the parameter's dtype, X / (||X||_F + eps).
pytorch   torch.optim.Muon (torch 2.13, torch/optim/_muon.py, ``_single_tensor_muon``):
          B = mu*B + (1-mu)*g (lerp) ;  U = (1-mu)*g + mu*B with nesterov, else B ;
          O = NS_k(U) in bfloat16 (clamped norm) ;  w = w*(1 - lr*wd) ;  w = w - lr*s*O with
          s = sqrt(max(1, m/n)) ("original"), or 0.2*sqrt(max(m, n)) with match_rms_adamw=True.
fallback  every parameter that is not 2-D (biases, gains, scalars, convolution kernels) is trained
          by torch.optim.AdamW's rule (torch/optim/adam.py, ``_single_tensor_adam``) with
          lr = lr * adamw_lr_ratio, betas = (adamw_beta1, adamw_beta2), eps = adamw_eps and
          weight_decay = adamw_weight_decay, in both conventions (torch.optim.Muon refuses such
          parameters; its documentation pairs it with AdamW). Defaults: torch.optim.AdamW's.

Batched: the Newton-Schulz iterations are batched matrix products over the run dimension
(``torch.baddbmm``), and runs may differ in ns_steps (each run stops after its own count).
Per-run hyperparameters stay float64 and each derived value is cast where torch casts its Python
scalar, so that a run in a batch rounds as it does alone (on the CPU, bitwise): in bfloat16 one
last-bit difference can flip a rounding and then grow. torch.optim.Muon's ``torch.addmm`` and the
batched ``baddbmm`` round alike but for rare near-ties (addmm rounds through float32 first).
The NS coefficients are fixed by the convention (torch's defaults): they are not a hyperparameter.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from optarena.rules.base import HP, Rule, any_nonzero, zeros_like
from optarena.rules.spec import Convention, Dimension, Optimizer

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # torch.optim._muon's DEFAULT_A, _B, _C (Keller Jordan's)


@dataclass(frozen=True)
class Muon(Rule):
    name = "muon"
    elementwise = False
    lr: HP
    momentum: HP
    weight_decay: HP
    eps: HP
    ns_steps: HP
    adamw_lr_ratio: HP
    adamw_beta1: HP
    adamw_beta2: HP
    adamw_eps: HP
    adamw_weight_decay: HP
    nesterov: bool
    match_rms_adamw: bool = False
    torch_form: bool = True  # pytorch: EMA momentum, bfloat16 NS, clamped norm, shape scaling

    def init_state(self, param):
        if param.ndim == 3:  # one matrix per run
            return {"momentum_buffer": zeros_like(param)}
        return {"exp_avg": zeros_like(param), "exp_avg_sq": zeros_like(param)}

    def for_param(self, param):
        # Per-run hyperparameters stay float64 here, as the reference's Python floats are, and each
        # derived value is cast at its use: a run in a batch then rounds as it does alone, which
        # matters since a last-bit difference can flip a bfloat16 rounding inside Newton-Schulz.
        return per_run_float64(self, param)

    def apply_(self, param, grad, state, step):
        if param.ndim != 3:
            self._adamw_(param, grad, state, step)
            return
        b = state["momentum_buffer"]
        if self.torch_form:
            b.lerp_(grad, at(1 - self.momentum, b))
            u = grad.lerp(b, at(self.momentum, b)) if self.nesterov else b
        else:
            b.mul_(at(self.momentum, b)).add_(grad)
            u = grad + at(self.momentum, b) * b if self.nesterov else b
        o = newton_schulz(u, self.ns_steps, self.eps, bfloat16=self.torch_form)
        if any_nonzero(self.weight_decay):
            param.mul_(at(1 - self.lr * self.weight_decay, param))
        descend_(param, o, self.lr * self._shape_scale(param.shape[1], param.shape[2]))

    def _shape_scale(self, rows: int, cols: int) -> float:
        if not self.torch_form:
            return 1.0
        if self.match_rms_adamw:
            return 0.2 * math.sqrt(max(rows, cols))
        return math.sqrt(max(1, rows / cols))

    def _adamw_(self, param, grad, state, step):
        """torch.optim.AdamW's ``_single_tensor_adam`` (decoupled_weight_decay=True), operation for operation."""
        lr, beta1, beta2 = self.lr * self.adamw_lr_ratio, self.adamw_beta1, self.adamw_beta2
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if any_nonzero(self.adamw_weight_decay):
            param.mul_(at(1 - lr * self.adamw_weight_decay, param))
        m.lerp_(grad, at(1 - beta1, m))
        v.mul_(at(beta2, v))
        if isinstance(beta2, Tensor):
            v.addcmul_(grad, grad * at(1 - beta2, v))
        else:
            v.addcmul_(grad, grad, value=1 - beta2)
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        denom = (v.sqrt() / at(bias_correction2_sqrt, v)).add_(at(self.adamw_eps, v))
        if isinstance(step_size, Tensor):
            param.add_(at(-step_size, param) * m / denom)
        else:
            param.addcdiv_(m, denom, value=-step_size)


def per_run_float64(rule: Rule, param: Tensor) -> Rule:
    """`rule` with its per-run (R,) hyperparameters viewed as (R, 1, ..., 1) for `param`, kept float64."""
    changes = {f.name: getattr(rule, f.name).view((-1,) + (1,) * (param.ndim - 1)) for f in dataclasses.fields(rule)
               if isinstance(getattr(rule, f.name), Tensor) and getattr(rule, f.name).ndim == 1}
    return dataclasses.replace(rule, **changes) if changes else rule


def at(h: HP, like: Tensor) -> HP:
    """A hyperparameter (or a value derived from it) in `like`'s dtype, as torch casts a Python scalar."""
    return h.to(like.dtype) if isinstance(h, Tensor) else h


def descend_(param: Tensor, update: Tensor, step_size: HP) -> None:
    """w = w - step_size * update; a per-run step size takes ``addcmul_``, which rounds as the
    scalar ``add_(update, alpha=-step_size)`` does (one fused multiply-add)."""
    if isinstance(step_size, Tensor):
        param.addcmul_(update, at(-step_size, param))
    else:
        param.add_(update, alpha=-step_size)


def newton_schulz(g: Tensor, steps: HP, eps: HP, bfloat16: bool) -> Tensor:
    """NS_steps(g) for a stack of matrices (R, m, n); `steps` and `eps` may be per-run (R, 1, 1).

    bfloat16: torch.optim.Muon's form (in bfloat16, X / max(||X||, eps)); else the parameter's
    dtype and X / (||X|| + eps) as the post writes it. Runs with fewer steps keep their X while
    the others iterate (torch.where), so runs that differ in ns_steps share one batch.
    """
    a, b, c = NS_COEFFICIENTS
    x = g.bfloat16() if bfloat16 else g.clone()
    tall = g.size(-2) > g.size(-1)
    if tall:
        x = x.mT
    norm = torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True)
    if isinstance(eps, Tensor):
        eps = eps.to(x.dtype)
    x = x / (norm.clamp(min=eps) if bfloat16 else norm + eps)
    per_run = isinstance(steps, Tensor) and bool((steps != steps.flatten()[0]).any())
    count = int(steps.max()) if isinstance(steps, Tensor) else int(steps)
    for k in range(count):
        gram = x @ x.mT
        update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x_next = torch.baddbmm(x, update, x, beta=a)
        x = torch.where(k < steps, x_next, x) if per_run else x_next
    return x.mT if tall else x


_FALLBACK = {"adamw_lr_ratio": 1.0, "adamw_beta1": 0.9, "adamw_beta2": 0.999, "adamw_eps": 1e-8,
             "adamw_weight_decay": 0.01}

ENTRIES = (
    Optimizer(
        "muon", "Muon", family="contender",
        summary="momentum orthogonalised by Newton-Schulz for 2-D weights, AdamW for the others",
        search={"momentum": Dimension(0.8, 0.99), "adamw_lr_ratio": Dimension(0.01, 1.0, log=True)},
        absent={"keras": "not yet compared with keras.optimizers.Muon; use 'article' or 'pytorch'"},
        reference="Jordan et al. 2024, Muon: An optimizer for hidden layers in neural networks "
                  "(kellerjordan.github.io/posts/muon); pytorch convention: torch.optim.Muon (torch 2.13) "
                  "for 2-D parameters and torch.optim.AdamW for the others.",
        conventions={
            "article": Convention(
                Muon, {"lr": 0.02, "momentum": 0.95, "nesterov": False, "weight_decay": 0.0, "eps": 1e-7,
                       "ns_steps": 5.0, **_FALLBACK},
                "B = mu*B + g; w -= lr*wd*w + lr*NS5(B or g + mu*B); others: AdamW",
                flags={"torch_form": False},
                source="Jordan et al. 2024 (the Muon post)"),
            "pytorch": Convention(
                Muon, {"lr": 1e-3, "weight_decay": 0.1, "momentum": 0.95, "nesterov": True, "eps": 1e-7,
                       "ns_steps": 5.0, "match_rms_adamw": False, **_FALLBACK},
                "B = lerp(B, g, 1-mu); w *= 1-lr*wd; w -= lr*sqrt(max(1, m/n))*NS5_bf16(lerp(g, B, mu) or B); "
                "others: torch.optim.AdamW",
                flags={"torch_form": True},
                source="torch.optim.Muon + torch.optim.AdamW"),
        },
    ),
)
