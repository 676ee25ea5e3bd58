"""The Rule interface shared by every optimizer.

A rule is a frozen dataclass of hyperparameters with

- ``init_state(param) -> dict[str, Tensor]``: the optimizer state of one parameter tensor,
- ``apply_(param, grad, state, step)``: one in-place update, ``step`` counting from 1 (a Python
  int, or a 0-d tensor under ``torch.compile`` so that one graph serves every step).

Callers use ``update_``: decoupled weight decay shared by every rule, then ``apply_``.

Hyperparameters are Python floats (one run) or tensors broadcasting over a leading run dimension
(R runs at once: shape ``(R,)``, reshaped to ``(R, 1, ..., 1)`` by :meth:`Rule.for_param`).
Booleans (``nesterov``, ``centered``, ``amsgrad``, ...) and the numbers in ``switches`` (e.g. a
momentum that is 0 or not) select a code path; the engine never stacks runs that differ in them
(see :meth:`Rule.code_path`).

Elementwise rules (every coordinate updated from its own gradient and state) see any shape. A rule
that looks at a whole tensor (a norm, factored moments, a matrix function) sets
``elementwise = False``: its ``apply_`` always receives tensors with a leading run dimension,
``(R, *shape)``; the drop-in optimizers pass ``(1, *shape)`` views.

A rule whose evaluation point differs from its training point (Schedule-Free) sets
``has_eval_point = True`` and implements ``to_eval_`` / ``to_train_``, which move the parameter
between the two in place; the engine evaluates at the evaluation point, and the drop-in exposes
them as ``optimizer.eval()`` / ``optimizer.train()``.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import torch
from torch import Tensor

HP = Union[float, Tensor]
"""A hyperparameter: one value, or one value per run along the leading run dimension."""

Step = Union[int, Tensor]
"""The step count from 1: a Python int, or a 0-d tensor (compiled execution)."""


def any_nonzero(h: HP) -> bool:
    """Whether a hyperparameter is non-zero for at least one run (selects a code path).

    Under ``torch.compile`` a tensor hyperparameter is taken as non-zero (its value is not known
    while tracing): the general path, which is exact for a zero too. The compiled executor
    (``optarena.fused``) passes zeros as Python floats, so their paths stay the cheap ones.
    """
    if isinstance(h, Tensor):
        if torch.compiler.is_compiling():
            return True
        return bool((h != 0).any())
    return h != 0


@dataclass(frozen=True)
class Rule(abc.ABC):
    name: ClassVar[str] = ""
    # Whether apply_ on the gathered rows of a sparse gradient equals the dense update (rows
    # with zero gradient are left unchanged by the dense formula), unless a field of
    # ``sparse_blockers`` is non-zero (see :meth:`leaves_zero_rows`).
    supports_sparse: ClassVar[bool] = False
    # Fields that, when non-zero, make a zero gradient still change the parameter or the state
    # (weight decay reaches every coordinate).
    sparse_blockers: ClassVar[tuple[str, ...]] = ("weight_decay", "l2_shrinkage", "decoupled_weight_decay")
    # False: apply_ receives (R, *shape) tensors with a leading run dimension (see module docstring).
    elementwise: ClassVar[bool] = True
    # True: to_eval_ / to_train_ move the parameter between training and evaluation points.
    has_eval_point: ClassVar[bool] = False
    # Numeric fields whose being zero or not selects a code path (e.g. a momentum buffer or none).
    switches: ClassVar[tuple[str, ...]] = ()

    # w = w - lr * decoupled_weight_decay * w before every update (optax's add_decayed_weights
    # followed by the rule; AdamW's form), available to every rule in every convention.
    decoupled_weight_decay: HP = field(default=0.0, kw_only=True)

    @abc.abstractmethod
    def init_state(self, param: Tensor) -> dict[str, Tensor]:
        """The optimizer state of one parameter tensor (moments, accumulators, ...)."""

    @abc.abstractmethod
    def apply_(self, param: Tensor, grad: Tensor, state: dict[str, Tensor], step: Step) -> None:
        """One update of `param` (and `state`) in place; `step` counts from 1."""

    def update_(self, param: Tensor, grad: Tensor, state: dict[str, Tensor], step: Step) -> None:
        """Decoupled weight decay (when set), then the rule's own update."""
        if any_nonzero(self.decoupled_weight_decay):
            lr = self.learning_rate()
            param.mul_(1 - lr * self.decoupled_weight_decay)
        self.apply_(param, grad, state, step)

    def leaves_zero_rows(self) -> bool:
        """Whether this rule, with these hyperparameters, leaves every coordinate whose gradient is
        zero exactly as it was (parameter and state). Then updating only the coordinates that a
        sparse gradient reaches equals the dense update; the drop-ins (sparse gradients) and the
        engine (sparse problems) rely on it."""
        return self.supports_sparse and not any(
            any_nonzero(getattr(self, k)) for k in self.sparse_blockers if hasattr(self, k))

    def learning_rate(self) -> HP:
        """The step size the decoupled weight decay is scaled by (``lr`` for every rule here)."""
        return getattr(self, "lr")

    def to_eval_(self, param: Tensor, state: dict[str, Tensor]) -> None:
        """Move `param` to the point where the model is evaluated (a no-op for most rules)."""

    def to_train_(self, param: Tensor, state: dict[str, Tensor]) -> None:
        """Move `param` back to the point where gradients are taken (a no-op for most rules)."""

    @classmethod
    def structural(cls) -> tuple[str, ...]:
        """Fields that select a code path (bools); runs stacked together must agree on them."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.type in ("bool", bool))

    @classmethod
    def code_path(cls, hparams: dict[str, Any]) -> tuple:
        """What runs stacked together must share: the bool fields and, for each of ``switches``,
        whether it is non-zero. `hparams` are the rule's field values (or a resolved trial's)."""
        bools = tuple((k, hparams[k]) for k in cls.structural() if k in hparams)
        switched = tuple((k, any_nonzero(hparams[k])) for k in cls.switches if k in hparams)
        return bools + switched

    def for_param(self, param: Tensor) -> "Rule":
        """This rule with every per-run tensor hyperparameter viewed as (R, 1, ..., 1) for ``param``."""
        changes = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor) and value.ndim == 1:
                changes[f.name] = value.view((-1,) + (1,) * (param.ndim - 1)).to(param.dtype)
        return dataclasses.replace(self, **changes) if changes else self

    def hparams(self) -> dict[str, HP | bool]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def update_at_(rule: Rule, param: Tensor, grad: Tensor, state: dict, index: Tensor, dim: int, step: Step) -> None:
    """`rule` on the slices of `param` at `index` along `dim` (and of every state tensor shaped like
    `param`): gathered, updated, written back; `grad` is the gradient of those slices. Equal to the
    dense update with a gradient that is zero elsewhere when ``rule.leaves_zero_rows()``. Serves the
    drop-ins' sparse gradients (rows, dim 0) and the engine's sparse problems (columns, dim -1)."""
    shaped = [k for k, v in state.items() if isinstance(v, Tensor) and v.shape == param.shape]
    part = param.index_select(dim, index)
    part_state = {**state, **{k: state[k].index_select(dim, index) for k in shaped}}
    rule.update_(part, grad, part_state, step)
    param.index_copy_(dim, index, part)
    for k in shaped:
        state[k].index_copy_(dim, index, part_state[k])


def zeros_like(param: Tensor) -> Tensor:
    return torch.zeros_like(param, memory_format=torch.preserve_format)
