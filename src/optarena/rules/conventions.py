"""The named conventions (article, pytorch, keras): each optimizer's defaults, allowed
hyperparameters, formula and source, and `build`, which turns torch-style keyword arguments into a
validated rule. The one home of every default in optarena.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from optarena.rules.adadelta import Adadelta
from optarena.rules.adagrad import AdaGrad
from optarena.rules.adam import Adam
from optarena.rules.base import Rule
from optarena.rules.ftrl import FTRL
from optarena.rules.momentum import EMAMomentum
from optarena.rules.nadam import Nadam
from optarena.rules.rmsprop import RMSprop
from optarena.rules.sgd import SGD, KerasSGD, TorchSGD

CONVENTIONS = ("article", "pytorch", "keras")
OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw", "adadelta", "nadam", "ftrl")

_TORCH_SGD = {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False}
_KERAS_SGD = {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "nesterov": False}

DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "sgd": {
        "article": {"lr": 0.01, "weight_decay": 0.0},
        "pytorch": _TORCH_SGD,
        "keras": _KERAS_SGD,
    },
    "momentum": {
        "article": {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0},
        "pytorch": {**_TORCH_SGD, "momentum": 0.9},
        "keras": {**_KERAS_SGD, "momentum": 0.9},
    },
    "adagrad": {
        "article": {"lr": 0.01, "eps": 1e-8, "weight_decay": 0.0},
        "pytorch": {"lr": 0.01, "eps": 1e-10, "initial_accumulator_value": 0.0, "lr_decay": 0.0, "weight_decay": 0.0},
        "keras": {"lr": 1e-3, "eps": 1e-7, "initial_accumulator_value": 0.1, "weight_decay": 0.0},
    },
    "rmsprop": {
        "article": {"lr": 1e-3, "alpha": 0.9, "eps": 1e-8, "weight_decay": 0.0},
        "pytorch": {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "centered": False, "weight_decay": 0.0},
        "keras": {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7, "momentum": 0.0, "centered": False, "weight_decay": 0.0},
    },
    "adam": {
        "article": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False, "bias_correction": True},
        "pytorch": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False},
        "keras": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7, "weight_decay": 0.0, "amsgrad": False},
    },
    "adamw": {
        "article": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01, "amsgrad": False},
        "pytorch": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01, "amsgrad": False},
        "keras": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7, "weight_decay": 0.004, "amsgrad": False},
    },
    "adadelta": {
        "article": {"lr": 1.0, "rho": 0.95, "eps": 1e-6, "weight_decay": 0.0},
        "pytorch": {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0},
        "keras": {"lr": 1e-3, "rho": 0.95, "eps": 1e-7, "weight_decay": 0.0},
    },
    "nadam": {
        "article": {"lr": 2e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "momentum_decay": 4e-3, "weight_decay": 0.0},
        "pytorch": {"lr": 2e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "momentum_decay": 4e-3, "weight_decay": 0.0},
        "keras": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7, "weight_decay": 0.0},
    },
    "ftrl": {
        "article": {"lr": 0.1, "beta": 1.0, "l1": 0.0, "l2": 0.0},
        "keras": {"lr": 1e-3, "lr_power": -0.5, "initial_accumulator_value": 0.1, "l1": 0.0, "l2": 0.0, "l2_shrinkage": 0.0, "beta": 0.0},
    },
}

SOURCES: dict[str, str] = {
    "article": "the article's formulas (shared/CLAIMS.md); Zeiler 2012; Dozat 2016; McMahan et al. 2013",
    "pytorch": f"torch.optim (step-for-step, tested against torch {torch.__version__.split('+')[0]})",
    "keras": "keras.optimizers (Keras 3, tested with KERAS_BACKEND=torch)",
}

FORMULAS: dict[str, dict[str, str]] = {
    "sgd": {
        "article": "w -= lr*g",
        "pytorch": "b = mu*b + (1-damp)*g; w -= lr*(g + mu*b if nesterov else b)",
        "keras": "m = mu*m - lr*g; w += (mu*m - lr*g if nesterov else m)",
    },
    "momentum": {
        "article": "v = mu*v + (1-mu)*g; w -= lr*v  (EMA)",
        "pytorch": "b = mu*b + g; w -= lr*b  (heavy ball)",
        "keras": "m = mu*m - lr*g; w += m",
    },
    "adagrad": {
        "article": "G += g^2; w -= lr*g/sqrt(G + eps)",
        "pytorch": "G += g^2; w -= lr/(1+(t-1)*decay) * g/(sqrt(G) + eps)",
        "keras": "G += g^2 (G0=0.1); w -= lr*g/sqrt(G + eps)",
    },
    "rmsprop": {
        "article": "G = a*G + (1-a)*g^2; w -= lr*g/sqrt(G + eps)",
        "pytorch": "G = a*G + (1-a)*g^2; w -= lr*g/(sqrt(G) + eps)",
        "keras": "G = a*G + (1-a)*g^2; w -= lr*g/sqrt(G + eps)",
    },
    "adam": {
        "article": "w -= lr*m^/sqrt(v^ + eps)",
        "pytorch": "w -= lr*m^/(sqrt(v^) + eps)",
        "keras": "w -= lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v) + eps)",
    },
    "adamw": {
        "article": "w -= lr*wd*w; then Adam (article)",
        "pytorch": "w -= lr*wd*w; then Adam (pytorch)",
        "keras": "w -= lr*wd*w; then Adam (keras)",
    },
    "adadelta": {c: "E[g2] = r*E[g2]+(1-r)g^2; dx = sqrt(E[dx2]+eps)/sqrt(E[g2]+eps)*g; w -= lr*dx" for c in CONVENTIONS},
    "nadam": {
        "article": "mu_t = b1(1-0.5*0.96^(t/250)); w -= lr*((1-mu_t)g/(1-P_t) + mu_t+1 m/(1-P_t+1))/(sqrt(v^)+eps)",
        "pytorch": "as article, psi = momentum_decay",
        "keras": "as article with mu_t = b1(1-0.5*0.96^t)",
    },
    "ftrl": {
        "article": "z += g - sigma*w; n += g^2; w = -(z - sgn(z) l1)/((beta+sqrt(n))/lr + l2) if |z|>l1 else 0",
        "pytorch": "(none: torch.optim has no FTRL)",
        "keras": "as article with n0=0.1, quadratic 2*l2, lr_power, l2_shrinkage",
    },
}

# Allowed values per hyperparameter: (predicate on a finite float, description). Checked for every
# element when a hyperparameter is a per-run tensor.
_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "lr": (lambda x: x >= 0, "a finite number >= 0"),
    "beta1": (lambda x: 0 <= x < 1, "in [0, 1)"),
    "beta2": (lambda x: 0 <= x < 1, "in [0, 1)"),
    "alpha": (lambda x: 0 <= x < 1, "in [0, 1)"),
    "rho": (lambda x: 0 <= x < 1, "in [0, 1)"),
    "momentum": (lambda x: 0 <= x < 1, "in [0, 1)"),
    "dampening": (lambda x: 0 <= x <= 1, "in [0, 1]"),
    "eps": (lambda x: x > 0, "a finite number > 0"),
    "weight_decay": (lambda x: x >= 0, "a finite number >= 0"),
    "lr_decay": (lambda x: x >= 0, "a finite number >= 0"),
    "momentum_decay": (lambda x: x >= 0, "a finite number >= 0"),
    "initial_accumulator_value": (lambda x: x >= 0, "a finite number >= 0"),
    "l1": (lambda x: x >= 0, "a finite number >= 0"),
    "l2": (lambda x: x >= 0, "a finite number >= 0"),
    "l2_shrinkage": (lambda x: x >= 0, "a finite number >= 0"),
    "beta": (lambda x: x >= 0, "a finite number >= 0"),
    "lr_power": (lambda x: x <= 0, "a finite number <= 0"),
}
_BOOLS = ("nesterov", "centered", "amsgrad", "bias_correction")


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; allowed: {', '.join(CONVENTIONS)}")


def _check_name(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}")


def defaults(name: str, convention: str = "article") -> dict[str, Any]:
    """The hyperparameters `name` takes under `convention` when none are given."""
    _check_name(name)
    _check_convention(convention)
    if convention not in DEFAULTS[name]:
        raise ValueError(
            f"{name} has no {convention!r} convention: torch.optim has no FTRL; "
            f"use convention='article' (McMahan et al. 2013) or 'keras'"
        )
    return dict(DEFAULTS[name][convention])


def _check_value(name: str, key: str, value: Any) -> None:
    if key in _BOOLS:
        if not isinstance(value, bool):
            raise ValueError(f"{name}: {key}={value!r} is invalid; allowed: True or False")
        return
    ok, allowed = _RANGES[key]
    if isinstance(value, Tensor):
        values = value.detach().flatten().tolist()
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: {key}={value!r} is invalid; allowed: {allowed}")
    else:
        values = [float(value)]
    for x in values:
        if not (math.isfinite(x) and ok(x)):
            raise ValueError(f"{name}: {key}={value!r} is invalid; allowed: {allowed}")


def resolve(name: str, convention: str = "article", **hparams: Any) -> dict[str, Any]:
    """The convention's defaults overridden by `hparams`, validated. `None` means "default";
    ``betas=(b1, b2)`` is accepted for ``beta1``, ``beta2``."""
    merged = defaults(name, convention)
    if "betas" in hparams:
        betas = hparams.pop("betas")
        if betas is not None:
            if not isinstance(betas, (tuple, list)) or len(betas) != 2:
                raise ValueError(f"{name}: betas={betas!r} is invalid; allowed: a pair (beta1, beta2), each in [0, 1)")
            for key, b in zip(("beta1", "beta2"), betas):
                try:
                    _check_value(name, key, b)
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
        _check_value(name, key, value)
    if merged.get("nesterov"):
        if not any_positive(merged["momentum"]) or (convention == "pytorch" and any_positive(merged.get("dampening", 0.0))):
            raise ValueError(
                f"{name}: nesterov=True needs momentum > 0"
                + (" and dampening = 0" if convention == "pytorch" else "")
                + f"; got momentum={merged['momentum']!r}"
                + (f", dampening={merged.get('dampening')!r}" if convention == "pytorch" else "")
            )
    return merged


def any_positive(value: Any) -> bool:
    if isinstance(value, Tensor):
        return bool((value > 0).all())
    return value > 0


def build(name: str, convention: str = "article", **hparams: Any) -> Rule:
    """The rule for `name` under `convention`, e.g. ``build("adam", "pytorch", lr=1e-3)``."""
    h = resolve(name, convention, **hparams)
    return _FACTORIES[name](convention, h)


def _sgd(convention: str, h: dict) -> Rule:
    if convention == "article":
        return SGD(lr=h["lr"], weight_decay=h["weight_decay"])
    if convention == "pytorch":
        return TorchSGD(h["lr"], h["momentum"], h["dampening"], h["weight_decay"], h["nesterov"])
    return KerasSGD(h["lr"], h["momentum"], h["weight_decay"], h["nesterov"])


def _momentum(convention: str, h: dict) -> Rule:
    if convention == "article":
        return EMAMomentum(lr=h["lr"], momentum=h["momentum"], weight_decay=h["weight_decay"])
    return _sgd(convention, h)


def _adagrad(convention: str, h: dict) -> Rule:
    return AdaGrad(
        lr=h["lr"],
        eps=h["eps"],
        initial_accumulator_value=h.get("initial_accumulator_value", 0.0),
        lr_decay=h.get("lr_decay", 0.0),
        weight_decay=h["weight_decay"],
        eps_inside_root=convention != "pytorch",
        decoupled=convention == "keras",
    )


def _rmsprop(convention: str, h: dict) -> Rule:
    return RMSprop(
        lr=h["lr"],
        alpha=h["alpha"],
        eps=h["eps"],
        momentum=h.get("momentum", 0.0),
        weight_decay=h["weight_decay"],
        centered=h.get("centered", False),
        eps_inside_root=convention != "pytorch",
        decoupled=convention == "keras",
        lr_in_buffer=convention == "keras",
    )


def _adam(convention: str, h: dict, decoupled: bool = False) -> Rule:
    return Adam(
        lr=h["lr"],
        beta1=h["beta1"],
        beta2=h["beta2"],
        eps=h["eps"],
        weight_decay=h["weight_decay"],
        amsgrad=h["amsgrad"],
        decoupled=decoupled or convention == "keras",
        bias_correction=h.get("bias_correction", True),
        eps_inside_root=convention == "article",
        epsilon_hat=convention == "keras",
    )


def _adadelta(convention: str, h: dict) -> Rule:
    return Adadelta(h["lr"], h["rho"], h["eps"], h["weight_decay"], decoupled=convention == "keras")


def _nadam(convention: str, h: dict) -> Rule:
    return Nadam(
        lr=h["lr"],
        beta1=h["beta1"],
        beta2=h["beta2"],
        eps=h["eps"],
        momentum_decay=h.get("momentum_decay", 1.0),  # Keras: the fixed mu_t = b1(1 - 0.5*0.96^t)
        weight_decay=h["weight_decay"],
        decoupled=convention == "keras",
        framework_product=convention == "pytorch",
    )


def _ftrl(convention: str, h: dict) -> Rule:
    if convention == "article":
        return FTRL(lr=h["lr"], lr_power=-0.5, initial_accumulator_value=0.0, l1=h["l1"], l2=h["l2"], l2_shrinkage=0.0, beta=h["beta"])
    # Keras adds 2*(l2 + beta/(2*lr)) to the quadratic: the paper's lambda_2 is 2*l2.
    return FTRL(h["lr"], h["lr_power"], h["initial_accumulator_value"], h["l1"], 2 * h["l2"], h["l2_shrinkage"], h["beta"])


_FACTORIES: dict[str, Callable[[str, dict], Rule]] = {
    "sgd": _sgd,
    "momentum": _momentum,
    "adagrad": _adagrad,
    "rmsprop": _rmsprop,
    "adam": _adam,
    "adamw": lambda convention, h: _adam(convention, h, decoupled=True),
    "adadelta": _adadelta,
    "nadam": _nadam,
    "ftrl": _ftrl,
}
