"""The Rule interface shared by every optimizer.

A rule is a frozen dataclass of hyperparameters with

- ``init_state(param) -> dict[str, Tensor]``: the optimizer state of one parameter tensor,
- ``apply_(param, grad, state, step)``: one in-place update, ``step`` counting from 1.

Hyperparameters are Python floats (one run) or tensors broadcasting over a leading run dimension
(R runs at once: shape ``(R,)``, reshaped to ``(R, 1, ..., 1)`` by :meth:`Rule.for_param`).
Booleans (``nesterov``, ``centered``, ``amsgrad``, ...) change the code path and are always Python
values; the engine never stacks runs that differ in them (see ``Rule.structural``).
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Union

import torch
from torch import Tensor

HP = Union[float, Tensor]
"""A hyperparameter: one value, or one value per run along the leading run dimension."""


def any_nonzero(h: HP) -> bool:
    """Whether a hyperparameter is non-zero for at least one run (selects a code path)."""
    if isinstance(h, Tensor):
        return bool((h != 0).any())
    return h != 0


@dataclass(frozen=True)
class Rule(abc.ABC):
    name: ClassVar[str] = ""
    # Whether apply_ on the gathered rows of a sparse gradient equals the dense update (rows
    # with zero gradient are left unchanged by the dense formula).
    supports_sparse: ClassVar[bool] = False

    @abc.abstractmethod
    def init_state(self, param: Tensor) -> dict[str, Tensor]:
        """The optimizer state of one parameter tensor (moments, accumulators, ...)."""

    @abc.abstractmethod
    def apply_(self, param: Tensor, grad: Tensor, state: dict[str, Tensor], step: int) -> None:
        """One update of `param` (and `state`) in place; `step` counts from 1."""

    @classmethod
    def structural(cls) -> tuple[str, ...]:
        """Fields that select a code path (bools); runs stacked together must agree on them."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.type in ("bool", bool))

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


def zeros_like(param: Tensor) -> Tensor:
    return torch.zeros_like(param, memory_format=torch.preserve_format)
