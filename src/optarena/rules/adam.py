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
from optarena.rules.primitives import bias_correction, denominator, ema_, maximum_, step_, weight_decay_


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
            alpha_t = self.lr * bias_correction(self.beta2, step) ** 0.5 / bias_correction(self.beta1, step)
            step_(param, m / denominator(v, self.eps, eps_inside_root=False), alpha_t)
            return
        if self.bias_correction:
            m_hat = m / bias_correction(self.beta1, step)
            v_hat = v / bias_correction(self.beta2, step)
        else:
            m_hat, v_hat = m, v
        step_(param, m_hat / denominator(v_hat, self.eps, self.eps_inside_root), self.lr)
