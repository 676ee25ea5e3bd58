"""Adam (Kingma & Ba 2015), AMSGrad (Reddi et al. 2018) and AdamW (Loshchilov & Hutter 2019).

article   m = b1*m + (1-b1)*g ;  v = b2*v + (1-b2)*g^2 ;  m^ = m/(1-b1^t) ;  v^ = v/(1-b2^t)
          w = w - alpha * m^ / sqrt(v^ + eps)                              (eps inside the root)
          bias_correction=False: m^ = m, v^ = v (claim M4)
pytorch   torch.optim.Adam / AdamW: the same averages, w = w - lr * m^ / (sqrt(v^) + eps);
          amsgrad: v = max(v_max, v);  Adam: g = g + wd*w;  AdamW: w = w - lr*wd*w first
keras     keras.optimizers.Adam / AdamW, the paper's "epsilon hat" form:
          alpha_t = lr * sqrt(1-b2^t) / (1-b1^t) ;  w = w - alpha_t * m / (sqrt(v) + eps)
          (eps is not rescaled by the bias correction, so it acts sqrt(1-b2^t) times larger)
"""

from __future__ import annotations

from dataclasses import dataclass

from optarena.rules.base import HP, Rule, zeros_like
from optarena.rules.primitives import bias_correction, denominator, ema_, maximum_, power, step_, weight_decay_
from optarena.rules.spec import Convention, Dimension, Optimizer


@dataclass(frozen=True)
class Adam(Rule):
    name = "adam"
    lr: HP
    beta1: HP
    beta2: HP
    eps: HP
    weight_decay: HP
    amsgrad: bool
    decoupled: bool
    bias_correction: bool
    eps_inside_root: bool
    epsilon_hat: bool  # Keras's form: bias corrections folded into the step size

    def init_state(self, param):
        state = {"m": zeros_like(param), "v": zeros_like(param)}
        if self.amsgrad:
            state["v_max"] = zeros_like(param)
        return state

    def apply_(self, param, grad, state, step):
        g = weight_decay_(param, grad, self.lr, self.weight_decay, self.decoupled)
        m = ema_(state["m"], g, self.beta1)
        v = ema_(state["v"], g * g, self.beta2)
        if self.amsgrad:
            v = maximum_(state["v_max"], v)
        if self.epsilon_hat:
            alpha_t = self.lr * power(bias_correction(self.beta2, step), 0.5) / bias_correction(self.beta1, step)
            step_(param, m / denominator(v, self.eps, eps_inside_root=False), alpha_t)
            return
        if self.bias_correction:
            m_hat = m / bias_correction(self.beta1, step)
            v_hat = v / bias_correction(self.beta2, step)
        else:
            m_hat, v_hat = m, v
        step_(param, m_hat / denominator(v_hat, self.eps, self.eps_inside_root), self.lr)


ADAM_SEARCH = {"beta1": Dimension(0.5, 0.99), "beta2": Dimension(0.9, 0.9999)}
_BETAS = {"beta1": 0.9, "beta2": 0.999}
_ARTICLE = {"eps_inside_root": True, "epsilon_hat": False}
_PYTORCH = {"eps_inside_root": False, "epsilon_hat": False, "bias_correction": True}
_KERAS = {"eps_inside_root": False, "epsilon_hat": True, "bias_correction": True, "decoupled": True}

ENTRIES = (
    Optimizer(
        "adam", "Adam", family="article",
        summary="w -= lr * m^ / sqrt(v^ + eps) (article); bias_correction=False drops m^, v^ (article only)",
        search=ADAM_SEARCH,
        conventions={
            "article": Convention(
                Adam, {"lr": 1e-3, **_BETAS, "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False, "bias_correction": True},
                "w -= lr*m^/sqrt(v^ + eps)", flags={**_ARTICLE, "decoupled": False}),
            "pytorch": Convention(
                Adam, {"lr": 1e-3, **_BETAS, "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False},
                "w -= lr*m^/(sqrt(v^) + eps)", flags={**_PYTORCH, "decoupled": False}, source="torch.optim.Adam"),
            "keras": Convention(
                Adam, {"lr": 1e-3, **_BETAS, "eps": 1e-7, "weight_decay": 0.0, "amsgrad": False},
                "w -= lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v) + eps)", flags=_KERAS, source="keras.optimizers.Adam"),
        },
    ),
    Optimizer(
        "adamw", "AdamW", family="extra",
        summary="w -= lr*wd*w, then Adam of the chosen convention",
        search=ADAM_SEARCH,
        conventions={
            "article": Convention(
                Adam, {"lr": 1e-3, **_BETAS, "eps": 1e-8, "weight_decay": 0.01, "amsgrad": False},
                "w -= lr*wd*w; then Adam (article)", flags={**_ARTICLE, "bias_correction": True, "decoupled": True}),
            "pytorch": Convention(
                Adam, {"lr": 1e-3, **_BETAS, "eps": 1e-8, "weight_decay": 0.01, "amsgrad": False},
                "w -= lr*wd*w; then Adam (pytorch)", flags={**_PYTORCH, "decoupled": True}, source="torch.optim.AdamW"),
            "keras": Convention(
                Adam, {"lr": 1e-3, **_BETAS, "eps": 1e-7, "weight_decay": 0.004, "amsgrad": False},
                "w -= lr*wd*w; then Adam (keras)", flags=_KERAS, source="keras.optimizers.AdamW"),
        },
    ),
)
