"""The registry: every optimizer's entry, collected from the rule files, and the functions that turn
torch-style keyword arguments into a validated rule.

An optimizer is one rule file ending in ``ENTRIES`` (see ``optarena.rules.spec``); the file's
module name in ``MODULES`` registers it. Everything that lists optimizers reads this registry:
the ``optarena.optim`` classes, ``optarena optimizers``, the tuning search spaces, ``compare``'s
"all", the claims. To add an optimizer: write ``rules/<name>.py`` (the rule and its entry) and add
``"<name>"`` to ``MODULES``.

Every convention also takes ``decoupled_weight_decay`` (default 0): w = w - lr*wd*w before the
rule's own update (AdamW's form), so that weight decay can be applied alike to every optimizer.
"""

from __future__ import annotations

import importlib
import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from optarena.rules.base import Rule
from optarena.rules.spec import Convention, Dimension, Optimizer, Range, above, at_least, at_most, integer, interval

CONVENTIONS = ("article", "pytorch", "keras")

SOURCES: dict[str, str] = {
    "article": "the article's formulas (shared/CLAIMS.md); for the others, each paper's algorithm as written",
    "pytorch": f"the reference PyTorch implementation, step for step (torch {torch.__version__.split('+')[0]}; "
               "schedulefree, lion-pytorch, pytorch-optimizer for the contenders torch lacks)",
    "keras": "keras.optimizers (Keras 3, tested with KERAS_BACKEND=torch)",
}

# Module names under optarena.rules holding ENTRIES, in the order optimizers are listed.
MODULES = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adadelta", "nadam", "ftrl",
           "lion", "adafactor", "muon", "schedulefree", "soap", "lamb")

# Allowed values per hyperparameter name; an entry's Convention.ranges may override one.
RANGES: dict[str, Range] = {
    "lr": at_least(0.0),
    "beta1": interval(0.0, 1.0),
    "beta2": interval(0.0, 1.0),
    "alpha": interval(0.0, 1.0),
    "rho": interval(0.0, 1.0),
    "momentum": interval(0.0, 1.0),
    "dampening": interval(0.0, 1.0, closed_high=True),
    "eps": above(0.0),
    "weight_decay": at_least(0.0),
    "decoupled_weight_decay": at_least(0.0),
    "lr_decay": at_least(0.0),
    "momentum_decay": at_least(0.0),
    "initial_accumulator_value": at_least(0.0),
    "l1": at_least(0.0),
    "l2": at_least(0.0),
    "l2_shrinkage": at_least(0.0),
    "beta": at_least(0.0),
    "lr_power": at_most(0.0),
    # the contenders' (eps1 and shampoo_beta, whose -1 stands for torch-style None, are in their entries)
    "beta2_decay": at_most(0.0),
    "eps2": at_least(0.0),
    "d": at_least(1.0),
    "ns_steps": Range(lambda x: 1 <= x < 100 and float(x).is_integer(), "an integer in [1, 99]"),
    "adamw_lr_ratio": at_least(0.0),
    "adamw_beta1": interval(0.0, 1.0),
    "adamw_beta2": interval(0.0, 1.0),
    "adamw_eps": above(0.0),
    "adamw_weight_decay": at_least(0.0),
    "warmup_steps": integer(0),
    "r": at_least(0.0),
    "weight_lr_power": at_least(0.0),
    "precondition_frequency": integer(1),
}
DECOUPLED = "decoupled_weight_decay"

_REGISTRY: dict[str, Optimizer] = {}


def _load() -> dict[str, Optimizer]:
    if not _REGISTRY:
        for module in MODULES:
            for entry in importlib.import_module(f"optarena.rules.{module}").ENTRIES:
                if entry.name in _REGISTRY:
                    raise RuntimeError(f"optimizer {entry.name!r} is registered twice")
                _REGISTRY[entry.name] = entry
    return _REGISTRY


def entries() -> dict[str, Optimizer]:
    """Every registered optimizer by name, in listing order."""
    return dict(_load())


def names(family: str | tuple[str, ...] | None = None) -> list[str]:
    """Optimizer names, optionally of one family ("article", "extra", "contender") or several."""
    families = (family,) if isinstance(family, str) else family
    return [n for n, e in _load().items() if families is None or e.family in families]


def entry(name: str) -> Optimizer:
    reg = _load()
    if name not in reg:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(reg)}")
    return reg[name]


def has_convention(name: str, convention: str) -> bool:
    return convention in entry(name).conventions


def convention_of(name: str, convention: str) -> Convention:
    """The entry of `name` under `convention`, or a ValueError saying why there is none."""
    e = entry(name)
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; allowed: {', '.join(CONVENTIONS)}")
    if convention not in e.conventions:
        why = e.absent.get(convention, f"{name} is not defined under that convention")
        have = " or ".join(repr(c) for c in e.conventions)
        raise ValueError(f"{name} has no {convention!r} convention: {why}; use convention={have}")
    return e.conventions[convention]


def defaults(name: str, convention: str = "article") -> dict[str, Any]:
    """The hyperparameters `name` takes under `convention` when none are given (torch-style names,
    beta1/beta2 flat), ``decoupled_weight_decay`` included."""
    return {**convention_of(name, convention).defaults, DECOUPLED: 0.0}


def formula(name: str, convention: str) -> str:
    return convention_of(name, convention).formula


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:12]}...({len(text)} characters)"


def _number(name: str, key: str, value: Any, allowed: str, keep_tensor: bool) -> float | Tensor:
    """`value` as a float (a Python or NumPy number, or a one-element tensor), else ValueError."""
    problem = f"{name}: {key}={_shown(value)} is invalid; allowed: {allowed}"
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{name}: {key} must be one number; got a tensor of shape {tuple(value.shape)} "
                             f"and dtype {value.dtype} (allowed: {allowed})")
        x = float(value.detach().reshape(()).item())
        if not math.isfinite(x):
            raise ValueError(problem)
        return value if keep_tensor else x
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(problem)
    try:
        x = float(value)
    except (OverflowError, ValueError):
        raise ValueError(f"{name}: {key}={_shown(value)} is invalid (too large for a float); allowed: {allowed}") from None
    if not math.isfinite(x):
        raise ValueError(problem)
    return x


def _checked(name: str, convention: Convention, key: str, value: Any, is_bool: bool) -> Any:
    if is_bool:
        if isinstance(value, np.bool_):
            value = bool(value)
        if not isinstance(value, bool):
            raise ValueError(f"{name}: {key}={value!r} is invalid; allowed: True or False")
        return value
    allowed = convention.ranges.get(key) or RANGES.get(key)
    if allowed is None:
        raise RuntimeError(f"{name}: hyperparameter {key!r} has no allowed range in the registry")
    x = _number(name, key, value, allowed.text, keep_tensor=key == "lr")
    if not allowed(float(x)):
        raise ValueError(f"{name}: {key}={value!r} is invalid; allowed: {allowed.text}")
    return x


def resolve(name: str, convention: str = "article", **hparams: Any) -> dict[str, Any]:
    """The convention's defaults overridden by `hparams`, validated. `None` means "default";
    ``betas=(b1, b2)`` is accepted for ``beta1``, ``beta2``. Numbers may be Python or NumPy
    numbers or one-element tensors (kept as a tensor for ``lr``, as torch.optim does)."""
    conv = convention_of(name, convention)
    merged = defaults(name, convention)
    bools = {k for k, v in merged.items() if isinstance(v, bool)}
    if "betas" in hparams:
        betas = hparams.pop("betas")
        if betas is not None:
            if "beta1" not in merged:
                raise ValueError(f"{name} ({convention} convention) has no betas; allowed: {', '.join(sorted(merged))}")
            if isinstance(betas, Tensor):
                betas = betas.tolist() if betas.numel() == 2 else betas
            if not isinstance(betas, (tuple, list)) or len(betas) != 2:
                raise ValueError(f"{name}: betas={betas!r} is invalid; allowed: a pair (beta1, beta2), each in [0, 1)")
            for key, b in zip(("beta1", "beta2"), betas):
                try:
                    _checked(name, conv, key, b, False)
                except ValueError:
                    raise ValueError(f"{name}: betas={tuple(betas)!r} is invalid; allowed: each in [0, 1)") from None
            hparams.update(beta1=betas[0], beta2=betas[1])
    for key, value in hparams.items():
        if value is None:
            continue
        if key not in merged:
            raise ValueError(
                f"{name} ({convention} convention) has no hyperparameter {key!r}; "
                f"allowed: {', '.join(sorted(merged))}"
            )
        merged[key] = value
    for key, value in merged.items():
        merged[key] = _checked(name, conv, key, value, key in bools)
    for constraint in conv.constraints:
        problem = constraint(name, convention, merged)
        if problem:
            raise ValueError(problem)
    return merged


def construct(name: str, convention: str, resolved: Mapping[str, Any]) -> Rule:
    """The rule from already-resolved hyperparameters, which may be per-run (R,) tensors (the
    engine stacks validated trials this way); no validation."""
    conv = convention_of(name, convention)
    return conv.rule(**resolved, **conv.flags)


def build(name: str, convention: str = "article", **hparams: Any) -> Rule:
    """The rule for `name` under `convention`, e.g. ``build("adam", "pytorch", lr=1e-3)``."""
    return construct(name, convention, resolve(name, convention, **hparams))


def code_path(name: str, convention: str, resolved: Mapping[str, Any]) -> tuple:
    """What trials must share to be stacked in one group: optimizer, convention and the rule's
    code-path switches (see ``Rule.code_path``)."""
    conv = convention_of(name, convention)
    return (name, convention) + conv.rule.code_path({**resolved, **conv.flags})


def search_space(name: str) -> dict[str, Dimension]:
    """The hyperparameters beyond lr that a study may tune for `name`, with their ranges."""
    return dict(entry(name).search)


def class_name(name: str) -> str:
    return entry(name).class_name
