"""torch.optim drop-ins built from the rules: ``optarena.optim.Adam(model.parameters(), lr=1e-3)``.

One generic `RuleOptimizer` does the work (param groups, state_dict, LR schedulers, closures,
sparse gradients); the public classes only name their hyperparameters. Hyperparameters left as
``None`` take the chosen convention's defaults (``optarena.rules.conventions.DEFAULTS``).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Iterable

import torch
from torch import Tensor

from optarena import rules
from optarena.rules.base import Rule, any_nonzero

__all__ = ["RuleOptimizer", "SGD", "Momentum", "AdaGrad", "RMSprop", "Adam", "AdamW", "Adadelta", "Nadam", "FTRL", "OPTIMIZERS", "create"]


class RuleOptimizer(torch.optim.Optimizer):
    """A torch.optim.Optimizer that applies ``rules.get(rule_name, convention, **group)`` per group."""

    rule_name: ClassVar[str] = ""

    def __init__(self, params: Iterable, *, convention: str = "article", **hparams: Any) -> None:
        given = {k: v for k, v in hparams.items() if v is not None}
        defaults = rules.resolve(self.rule_name, convention, **given)
        if "beta1" in defaults:  # present them as torch does
            defaults["betas"] = (defaults.pop("beta1"), defaults.pop("beta2"))
        defaults["convention"] = convention
        super().__init__(params, defaults)
        self._rule_cache: dict[int, tuple[tuple, Rule]] = {}

    def _rule(self, index: int, group: dict) -> Rule:
        # Groups also carry keys of others (e.g. a scheduler's "initial_lr"): pass only the rule's own.
        convention = group["convention"]
        known = set(rules.defaults(self.rule_name, convention)) | {"betas"}
        hparams = {k: v for k, v in group.items() if k in known}
        key = (convention,) + tuple(sorted((k, v.item() if isinstance(v, Tensor) else v) for k, v in hparams.items()))
        cached = self._rule_cache.get(index)
        if cached is None or cached[0] != key:
            cached = (key, rules.build(self.rule_name, convention, **hparams))
            self._rule_cache[index] = cached
        return cached[1]

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            rule = self._rule(index, group)
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state.update(rule.init_state(param))
                state["step"] += 1
                if param.grad.is_sparse:
                    self._apply_sparse(rule, param, param.grad, state)
                else:
                    rule.apply_(param, param.grad, state, state["step"])
        return loss

    def _apply_sparse(self, rule: Rule, param: Tensor, grad: Tensor, state: dict) -> None:
        """Apply the dense rule to the gathered rows present in a sparse gradient, then scatter back.

        Equal to the dense update because these rules leave rows with zero gradient unchanged.
        """
        name = type(self).__name__
        if not rule.supports_sparse:
            raise ValueError(f"{name} does not support sparse gradients; AdaGrad and FTRL do")
        decay = {k: v for k, v in rule.hparams().items() if k in ("weight_decay", "l2_shrinkage")}
        if any(any_nonzero(v) for v in decay.values()):
            raise ValueError(f"{name}: {decay} is not compatible with sparse gradients (it touches every row)")
        grad = grad.coalesce()
        if grad.sparse_dim() != 1:
            raise ValueError(f"{name}: sparse gradients must be sparse along dim 0 only (as nn.Embedding's are)")
        rows = grad.indices()[0]
        row_state = {k: v[rows] for k, v in state.items() if isinstance(v, Tensor) and v.shape == param.shape}
        row_param = param[rows]
        rule.apply_(row_param, grad.values(), {**state, **row_state}, state["step"])
        param.index_copy_(0, rows, row_param)
        for k, v in row_state.items():
            state[k].index_copy_(0, rows, v)


class SGD(RuleOptimizer):
    """SGD: w = w - lr * g (article). pytorch/keras conventions add their momentum options."""

    rule_name = "sgd"

    def __init__(self, params, lr=None, momentum=None, dampening=None, weight_decay=None, nesterov=None, *, convention="article"):
        super().__init__(params, convention=convention, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)


class Momentum(RuleOptimizer):
    """Momentum: article v = m*v + (1-m)*g (EMA); pytorch heavy ball v = m*v + g; keras m = m*v - lr*g."""

    rule_name = "momentum"

    def __init__(self, params, lr=None, momentum=None, dampening=None, weight_decay=None, nesterov=None, *, convention="article"):
        super().__init__(params, convention=convention, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)


class AdaGrad(RuleOptimizer):
    """AdaGrad: G += g^2, w -= lr * g / sqrt(G + eps) (article). Accepts sparse gradients."""

    rule_name = "adagrad"

    def __init__(self, params, lr=None, lr_decay=None, weight_decay=None, initial_accumulator_value=None, eps=None, *, convention="article"):
        super().__init__(params, convention=convention, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, initial_accumulator_value=initial_accumulator_value, eps=eps)


class RMSprop(RuleOptimizer):
    """RMSprop: G = alpha*G + (1-alpha)*g^2, w -= lr * g / sqrt(G + eps) (article)."""

    rule_name = "rmsprop"

    def __init__(self, params, lr=None, alpha=None, eps=None, weight_decay=None, momentum=None, centered=None, *, convention="article"):
        super().__init__(params, convention=convention, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered)


class Adam(RuleOptimizer):
    """Adam: w -= lr * m^ / sqrt(v^ + eps) (article); ``bias_correction=False`` drops m^, v^ (article only)."""

    rule_name = "adam"

    def __init__(self, params, lr=None, betas=None, eps=None, weight_decay=None, amsgrad=None, *, bias_correction=None, convention="article"):
        super().__init__(params, convention=convention, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, bias_correction=bias_correction)


class AdamW(RuleOptimizer):
    """AdamW: w -= lr*wd*w, then Adam of the chosen convention."""

    rule_name = "adamw"

    def __init__(self, params, lr=None, betas=None, eps=None, weight_decay=None, amsgrad=None, *, convention="article"):
        super().__init__(params, convention=convention, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


class Adadelta(RuleOptimizer):
    """Adadelta (Zeiler 2012): dx = sqrt(E[dx^2]+eps)/sqrt(E[g^2]+eps) * g, w -= lr * dx."""

    rule_name = "adadelta"

    def __init__(self, params, lr=None, rho=None, eps=None, weight_decay=None, *, convention="article"):
        super().__init__(params, convention=convention, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)


class Nadam(RuleOptimizer):
    """Nadam (Dozat 2016): Adam with Nesterov momentum and the schedule mu_t = b1(1 - 0.5*0.96^(t*psi))."""

    rule_name = "nadam"

    def __init__(self, params, lr=None, betas=None, eps=None, weight_decay=None, momentum_decay=None, *, convention="article"):
        super().__init__(params, convention=convention, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, momentum_decay=momentum_decay)


class FTRL(RuleOptimizer):
    """FTRL-Proximal (McMahan et al. 2013). Start parameters at zero. Accepts sparse gradients."""

    rule_name = "ftrl"

    def __init__(self, params, lr=None, lr_power=None, initial_accumulator_value=None, l1=None, l2=None, l2_shrinkage=None, beta=None, *, convention="article"):
        super().__init__(params, convention=convention, lr=lr, lr_power=lr_power, initial_accumulator_value=initial_accumulator_value, l1=l1, l2=l2, l2_shrinkage=l2_shrinkage, beta=beta)


OPTIMIZERS: dict[str, type[RuleOptimizer]] = {
    cls.rule_name: cls for cls in (SGD, Momentum, AdaGrad, RMSprop, Adam, AdamW, Adadelta, Nadam, FTRL)
}


def create(name: str, params: Iterable, convention: str = "article", **hparams: Any) -> RuleOptimizer:
    """The optimizer called `name` (see ``optarena.rules.names()``), hyperparameters given flat
    (``beta1``/``beta2`` accepted), as trials store them."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}")
    flat = dict(hparams)
    if "beta1" in flat or "beta2" in flat:
        d = rules.defaults(name, convention)
        flat["betas"] = (flat.pop("beta1", d.get("beta1")), flat.pop("beta2", d.get("beta2")))
    return OPTIMIZERS[name](params, convention=convention, **flat)
