"""torch.optim drop-ins built from the rules: ``optarena.optim.Adam(model.parameters(), lr=1e-3)``.

One generic `RuleOptimizer` does the work (param groups, state_dict, LR schedulers, closures,
sparse gradients, ``eval()`` / ``train()`` for rules with an evaluation point); the public classes
(``SGD``, ``Adam``, ...) are made from the registry (``optarena.rules.registry``), one per
optimizer, with torch-style signatures. Hyperparameters left as ``None`` take the chosen
convention's defaults.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, ClassVar, Iterable

import torch
from torch import Tensor

from optarena import rules
from optarena.rules.base import Rule, any_nonzero


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
        self._at_eval_point = False

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
            if self._at_eval_point and rule.has_eval_point:
                # gradients were taken at the evaluation point, not where the rule takes them
                raise RuntimeError(f"{type(self).__name__}.step() called after optimizer.eval(); "
                                   "call optimizer.train() before training again")
            for param in group["params"]:
                if param.grad is None:
                    continue
                p, grad = _real(param, rule, type(self).__name__), param.grad
                if torch.is_complex(grad) and not grad.is_sparse:
                    grad = torch.view_as_real(grad)
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state.update(_tensor_state(rule, p))
                state["step"] += 1
                if grad.is_sparse:
                    self._apply_sparse(rule, p, grad, state)
                elif rule.elementwise:
                    rule.update_(p, grad, state, state["step"])
                else:
                    rule.update_(p.unsqueeze(0), grad.unsqueeze(0), _run_views(state), state["step"])
        return loss

    def _apply_sparse(self, rule: Rule, param: Tensor, grad: Tensor, state: dict) -> None:
        """Apply the dense rule to the gathered rows present in a sparse gradient, then scatter back.

        Equal to the dense update because these rules leave rows with zero gradient unchanged.
        """
        name = type(self).__name__
        if not rule.supports_sparse:
            raise ValueError(f"{name} does not support sparse gradients; AdaGrad and FTRL do")
        decay = {k: v for k, v in rule.hparams().items() if k in ("weight_decay", "l2_shrinkage", "decoupled_weight_decay")}
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

    # -- evaluation point (Schedule-Free); a no-op for rules without one -------------------------

    @torch.no_grad()
    def eval(self) -> None:
        """Move the parameters to where the model should be evaluated (Schedule-Free's x)."""
        self._move(to_eval=True)

    @torch.no_grad()
    def train(self) -> None:
        """Move the parameters back to where gradients are taken (Schedule-Free's y)."""
        self._move(to_eval=False)

    def _move(self, to_eval: bool) -> None:
        if self._at_eval_point == to_eval:
            return
        for index, group in enumerate(self.param_groups):
            rule = self._rule(index, group)
            if not rule.has_eval_point:
                continue
            for param in group["params"]:
                state = self.state.get(param)
                if not state:
                    continue
                real = _real(param, rule, type(self).__name__)
                p, s = (real, state) if rule.elementwise else (real.unsqueeze(0), _run_views(state))
                (rule.to_eval_ if to_eval else rule.to_train_)(p, s)
        self._at_eval_point = to_eval


def _real(param: Tensor, rule: Rule, name: str) -> Tensor:
    """A complex parameter as its real view (..., 2), as torch.optim treats it: the real and the
    imaginary part are two real parameters (so |g|^2 is never taken as g*g of a complex number).
    Rules that act on a parameter's matrix shape (Muon, SOAP, Adafactor) refuse complex ones."""
    if not torch.is_complex(param):
        return param
    if param.is_sparse or (param.grad is not None and param.grad.is_sparse):
        raise ValueError(f"{name}: complex sparse parameters are not supported")
    if not rule.elementwise:
        raise ValueError(f"{name} acts on the parameter's matrix shape and does not support complex parameters "
                         f"(got {param.dtype} of shape {tuple(param.shape)}); split it into real and imaginary parts")
    return torch.view_as_real(param)


def _tensor_state(rule: Rule, param: Tensor) -> dict[str, Tensor]:
    """A rule's initial state for one parameter, stored without the run dimension of rules that
    are not elementwise (so state_dict() shapes are the parameter's own)."""
    if rule.elementwise:
        return rule.init_state(param)
    return {k: v.squeeze(0) if isinstance(v, Tensor) and v.ndim > 0 else v
            for k, v in rule.init_state(param.unsqueeze(0)).items()}


def _run_views(state: dict) -> dict:
    """The state with a leading run dimension of 1 on every tensor (views: updates reach the state)."""
    return {k: v.unsqueeze(0) if isinstance(v, Tensor) else v for k, v in state.items()}


def _signature_names(entry: rules.Optimizer) -> list[str]:
    """The drop-in's keyword names: the entry's `signature`, else every convention's defaults in
    order of first appearance (pytorch first, as torch.optim orders them), beta1/beta2 as betas."""
    order = list(entry.signature)
    conventions = sorted(entry.conventions, key=lambda c: (c != "pytorch", c != "article"))
    for c in conventions:
        for key in rules.defaults(entry.name, c):
            key = "betas" if key in ("beta1", "beta2") else key
            if key not in order and key != rules.registry.DECOUPLED:
                order.append(key)
    return order + [rules.registry.DECOUPLED]


def _docstring(entry: rules.Optimizer) -> str:
    lines = [f"{entry.class_name}: {entry.summary}.", "", "Conventions (``convention=``):"]
    for c, conv in entry.conventions.items():
        source = f"  [{conv.source}]" if conv.source else ""
        lines.append(f"    {c:8s} {conv.formula}{source}")
        lines.append(f"             defaults: {', '.join(f'{k}={v!r}' for k, v in conv.defaults.items())}")
    for c, why in entry.absent.items():
        lines.append(f"    {c:8s} none: {why}")
    if entry.reference:
        lines += ["", entry.reference]
    return "\n".join(lines)


def _make_class(entry: rules.Optimizer) -> type[RuleOptimizer]:
    names = _signature_names(entry)
    signature = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
         inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for n in names[:-1]]
        + [inspect.Parameter(names[-1], inspect.Parameter.KEYWORD_ONLY, default=None),
           inspect.Parameter("convention", inspect.Parameter.KEYWORD_ONLY, default="article")]
    )

    def __init__(self, params, *args, **kwargs):
        try:
            bound = signature.bind(self, params, *args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{entry.class_name}(): {e}") from None
        given = {k: v for k, v in bound.arguments.items() if k not in ("self", "params", "convention")}
        RuleOptimizer.__init__(self, params, convention=bound.arguments.get("convention", "article"), **given)

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    return type(entry.class_name, (RuleOptimizer,), {
        "rule_name": entry.name, "__init__": __init__, "__doc__": _docstring(entry), "__module__": __name__,
        "__qualname__": entry.class_name,
    })


OPTIMIZERS: dict[str, type[RuleOptimizer]] = {name: _make_class(e) for name, e in rules.entries().items()}
globals().update({cls.__name__: cls for cls in OPTIMIZERS.values()})

__all__ = ["RuleOptimizer", "OPTIMIZERS", "create", *(cls.__name__ for cls in OPTIMIZERS.values())]


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


def __getattr__(name: str):  # a clear message for a name that is not an optimizer here
    raise AttributeError(f"module 'optarena.optim' has no attribute {name!r}; optimizers: "
                         f"{', '.join(cls.__name__ for cls in OPTIMIZERS.values())}")
