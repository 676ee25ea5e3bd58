"""SOAP, Shampoo with Adam in the Preconditioner's eigenbasis (Vyas et al. 2024, "SOAP: Improving and
Stabilizing Shampoo using Adam").

For a matrix G (m x n): Shampoo's factors L = E[G G^T], R = E[G^T G], their eigenbases Q_L, Q_R,
and Adam run on the rotated gradient G' = Q_L^T G Q_R (tensors of any rank: one factor per
dimension of size <= 10000; vectors only with precondition_1d; scalars never, i.e. plain Adam):

  t = 1:   L = (1-bs) G G^T ,  R = (1-bs) G^T G ,  Q = eigenvectors (descending eigenvalues); no step
  t > 1, s = t - 1:
           M = lerp(M, G, 1-b1)                      (the first moment in the original basis)
           V = lerp(V, (Q_L^T G Q_R)^2, 1-b2)        (the second moment in the eigenbasis)
           N = Q_L [(Q_L^T M Q_R) / (sqrt(V) + eps)] Q_R^T   (/ (RMS(N) + eps) with normalize_gradient)
           w = w - lr * sqrt(1-b2^s)/(1-b1^s) * N ;  w = w*(1 - lr*wd)
           L = lerp(L, G G^T, 1-bs) ;  R = lerp(R, G^T G, 1-bs)
           every precondition_frequency steps (s % f == 0), one power iteration per factor:
           P = L Q_L ;  order the columns by the estimated eigenvalues diag(Q_L^T L Q_L), descending
           (V's rows permuted alike) ;  Q_L = QR(P) in float32
  (bs = shampoo_beta; -1, torch-style None, means b2.)

pytorch   pytorch-optimizer 4.1.0, ``pytorch_optimizer.SOAP`` (pytorch_optimizer/optimizer/soap.py:
          ``step``, ``project``, ``update_pre_conditioner``, ``get_orthogonal_matrix[_qr]``), with
          merge_dims=False and max_precondition_dim=10000 fixed (not offered here), maximize=False.
article   the same rule: pytorch-optimizer's SOAP is a transcription of the authors' code
          (github.com/nikhilvyas/SOAP), which the paper gives as its algorithm; it is not
          transcribed a second time from the paper's pseudo-code.

Batched over the run dimension: the factor updates, rotations, power iterations, column orders
and QR are batched matrix operations on (R, d, d) (``@``, ``torch.linalg.eigh`` / ``qr`` on the
stack, ``gather`` with a per-run order); runs that differ in precondition_frequency share a batch
(the new basis is taken only for the runs due). Per-run hyperparameters stay float64 and are cast
where the reference casts its Python floats. Equal to a run alone to rounding only: MKL's batched
eigh, QR and some matrix products round differently from single calls (their results depend on
the matrices' memory alignment). Where a factor is rank-deficient at the first step (an m x n
gradient with m > n has an m x m factor of rank <= n), its eigenbasis within the null space is set
by that rounding, so SOAP -- the reference included -- has no trajectory reproducible across
kernels there. The step count is kept per parameter (the reference keeps it per param group:
equal while every parameter gets a gradient at every step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from optarena.rules.base import HP, Rule, any_nonzero, zeros_like
from optarena.rules.muon import at, descend_, per_run_float64
from optarena.rules.primitives import bias_correction
from optarena.rules.spec import Convention, Dimension, Optimizer, Range


@dataclass(frozen=True)
class SOAP(Rule):
    name = "soap"
    elementwise = False
    lr: HP
    beta1: HP
    beta2: HP
    shampoo_beta: HP
    eps: HP
    weight_decay: HP
    precondition_frequency: HP
    precondition_1d: bool
    correct_bias: bool
    normalize_gradient: bool
    max_precondition_dim: int = 10000

    def init_state(self, param):
        state = {"exp_avg": zeros_like(param), "exp_avg_sq": zeros_like(param)}
        for i in self._factored(param.shape[1:]):
            d = param.shape[1 + i]
            state[f"GG{i}"] = param.new_zeros(param.shape[0], d, d)
            state[f"Q{i}"] = param.new_zeros(param.shape[0], d, d)
        return state

    def for_param(self, param):
        return per_run_float64(self, param)  # cast at each use: a batched run rounds as it does alone

    def apply_(self, param, grad, state, step):
        if step == 1:  # the first gradient only sets the preconditioner (as the reference does)
            self._precondition(grad, state, 0)
            return
        s = step - 1
        step_size = self.lr
        if self.correct_bias:
            step_size = step_size * (_sqrt(bias_correction(self.beta2, s)) / bias_correction(self.beta1, s))
        m, v = state["exp_avg"], state["exp_avg_sq"]
        g_rotated = self._rotate(grad, state, back=False)
        m.lerp_(grad, at(1 - self.beta1, m))
        v.lerp_(g_rotated.square(), at(1 - self.beta2, v))
        eps = at(self.eps, v)
        n = self._rotate(self._rotate(m, state, back=False) / v.sqrt().add_(eps), state, back=True)
        if self.normalize_gradient:
            n = n / n.square().reshape(n.shape[0], -1).mean(dim=1).sqrt_().view(_per_run(n)).add_(eps)
        descend_(param, n, step_size)
        if any_nonzero(self.weight_decay):
            param.mul_(at(1 - self.weight_decay * self.lr, param))
        self._precondition(grad, state, s)

    def _factored(self, shape: tuple[int, ...]) -> list[int]:
        """The dimensions (of one run's tensor) that get a Shampoo factor."""
        if len(shape) == 1:
            return [0] if self.precondition_1d and shape[0] <= self.max_precondition_dim else []
        return [i for i, d in enumerate(shape) if d <= self.max_precondition_dim]

    def _rotate(self, x: Tensor, state: dict, back: bool) -> Tensor:
        """x times Q_i^T along each factored dimension i (Q_L^T X Q_R), or times Q_i (back)."""
        for i in self._factored(x.shape[1:]):
            q = state[f"Q{i}"]
            moved = x.movedim(1 + i, -1)
            rotated = moved.reshape(x.shape[0], -1, moved.shape[-1]) @ (q.mT if back else q)
            x = rotated.reshape(moved.shape).movedim(-1, 1 + i)
        return x

    def _precondition(self, grad: Tensor, state: dict, s: int) -> None:
        """Update the factors with G; at s = 0 take their eigenbases, every f-th step a power iteration."""
        factored = self._factored(grad.shape[1:])
        shampoo_beta = _where_negative(self.shampoo_beta, self.beta2)
        for i in factored:
            g = grad.movedim(1 + i, 1).reshape(grad.shape[0], grad.shape[1 + i], -1)
            gg = state[f"GG{i}"]
            gg.lerp_(g @ g.mT, at(_matrix_hp(1 - shampoo_beta), gg))
        if not factored:
            return
        if s == 0:
            for i in factored:
                gg = state[f"GG{i}"]
                eye = torch.eye(gg.shape[-1], dtype=gg.dtype, device=gg.device)
                state[f"Q{i}"].copy_(torch.linalg.eigh(gg + 1e-30 * eye).eigenvectors.flip(-1))
            return
        frequency = self.precondition_frequency
        if not isinstance(frequency, Tensor):
            if s % int(frequency) == 0:
                self._power_iteration(state, factored, None)
            return
        due = torch.remainder(torch.as_tensor(s, dtype=frequency.dtype), frequency).reshape(-1) == 0
        if bool(due.any()):
            self._power_iteration(state, factored, None if bool(due.all()) else due)

    def _power_iteration(self, state: dict, factored: list[int], due: Tensor | None) -> None:
        """pytorch-optimizer's get_orthogonal_matrix_qr for every run (or the runs `due`)."""
        v = state["exp_avg_sq"]
        for i in factored:
            gg, q = state[f"GG{i}"], state[f"Q{i}"]
            product = gg @ q
            estimated = (q * product).sum(dim=-2)  # diag(Q^T GG Q), one row per run
            order = torch.argsort(estimated, dim=-1, descending=True)
            along_i = order.view(order.shape[:1] + (1,) * i + order.shape[1:] + (1,) * (v.ndim - 2 - i))
            v_sorted = torch.gather(v, 1 + i, along_i.expand_as(v))
            power = torch.gather(product, -1, order.unsqueeze(-2).expand_as(product))
            q_new = torch.linalg.qr(power.to(torch.float32)).Q.to(power.dtype)
            if due is None:
                v.copy_(v_sorted)
                q.copy_(q_new)
            else:
                v.copy_(torch.where(due.view(_per_run(v)), v_sorted, v))
                q.copy_(torch.where(due.view(-1, 1, 1), q_new, q))


def _per_run(x: Tensor) -> tuple[int, ...]:
    return (-1,) + (1,) * (x.ndim - 1)


def _sqrt(h: HP) -> HP:
    return h.sqrt() if isinstance(h, Tensor) else math.sqrt(h)


def _where_negative(h: HP, fallback: HP) -> HP:
    """h, or `fallback` where h < 0 (shampoo_beta = -1 stands for the reference's None: beta2)."""
    if isinstance(h, Tensor):
        return torch.where(h < 0, fallback, h)
    return fallback if h < 0 else h


def _matrix_hp(h: HP) -> HP:
    """A per-run hyperparameter viewed as (R, 1, 1) to weight a stack of factor matrices."""
    return h.reshape(-1, 1, 1) if isinstance(h, Tensor) and h.ndim > 0 else h


_DEFAULTS = {"lr": 3e-3, "beta1": 0.95, "beta2": 0.95, "shampoo_beta": -1.0, "weight_decay": 1e-2,
             "precondition_frequency": 10.0, "precondition_1d": False, "correct_bias": True,
             "normalize_gradient": False, "eps": 1e-8}
_RANGES = {"shampoo_beta": Range(lambda x: 0 <= x < 1 or x == -1, "in [0, 1), or -1 (the reference's None: beta2)")}
_FORMULA = ("V = lerp(V, (QL^T g QR)^2, 1-b2); w -= lr*sqrt(1-b2^s)/(1-b1^s) * QL[(QL^T m QR)/(sqrt(V)+eps)]QR^T; "
            "w *= 1-lr*wd; QL, QR: eigenbases of lerp(L, g g^T, 1-bs), lerp(R, g^T g, 1-bs), every f steps")

ENTRIES = (
    Optimizer(
        "soap", "SOAP", family="contender",
        summary="Adam in the eigenbasis of Shampoo's preconditioner (Vyas et al. 2024)",
        search={"beta1": Dimension(0.8, 0.99), "beta2": Dimension(0.9, 0.999)},
        absent={"keras": "Keras has no SOAP optimizer; use 'article' or 'pytorch'"},
        reference="Vyas et al. 2024, SOAP: Improving and Stabilizing Shampoo using Adam; pytorch "
                  "convention: pytorch-optimizer 4.1.0 SOAP (merge_dims=False, max_precondition_dim=10000).",
        conventions={
            "article": Convention(SOAP, _DEFAULTS, _FORMULA, ranges=_RANGES,
                                  source="Vyas et al. 2024 (= pytorch_optimizer.SOAP, the authors' code)"),
            "pytorch": Convention(SOAP, _DEFAULTS, _FORMULA, ranges=_RANGES, source="pytorch_optimizer.SOAP 4.1.0"),
        },
    ),
)
