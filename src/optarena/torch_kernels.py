"""convention="pytorch", executed by torch.optim's own kernels.

That convention is torch.optim's formula by definition (its rules in `optarena.rules` are proven
equal to torch.optim in tests/test_optim.py and tests/test_oracles.py), so for the eight optimizers
torch has, a drop-in group under it with ``foreach=True`` or ``fused=True`` hands its tensors to
torch.optim's functional API (``torch.optim.adam.adam``, ``torch.optim.sgd.sgd``, ...): the kernels
torch.optim would run with that choice, so the same speed and the same bits as
``torch.optim.<Same>(..., foreach=True)`` / ``(..., fused=True)`` (a ``fused=True`` group under
`fused.MIN_COMPILED_VALUES` values is `optim`'s flat eager rule instead, faster there). The
default (``None``) runs the rule itself, eagerly (torch.optim's CPU default is its for-loop too):
the numbers of the engine, bit for bit, which tests/test_engine.py checks. The rule stays the
definition, the engine's code and the oracle; this module only maps names: ours to torch's, one
table.

Not handed over (the rule's own path runs instead): sparse gradients, per-run tensor
hyperparameters, a non-zero ``decoupled_weight_decay`` (optarena's extra, torch has none), and
``fused=True`` for the optimizers torch has no fused kernel for (RMSprop, Adadelta, NAdam), which
go through `optarena.fused`.
"""

from __future__ import annotations

import operator
from itertools import repeat
from typing import Callable

import torch
from torch import Tensor
from torch.optim import adadelta, adagrad, adam, nadam, rmsprop, sgd

from optarena.rules.base import Rule, any_nonzero

# Our state names -> torch.optim's, per optimizer (also the state_dict mapping of optarena.optim).
STATE_NAMES: dict[str, dict[str, str]] = {
    "sgd": {"momentum_buffer": "momentum_buffer"},
    "momentum": {"momentum_buffer": "momentum_buffer"},
    "adagrad": {"G": "sum"},
    "rmsprop": {"G": "square_avg", "g_avg": "grad_avg", "b": "momentum_buffer"},
    "adam": {"m": "exp_avg", "v": "exp_avg_sq", "v_max": "max_exp_avg_sq"},
    "adamw": {"m": "exp_avg", "v": "exp_avg_sq", "v_max": "max_exp_avg_sq"},
    "adadelta": {"Eg2": "square_avg", "Edx2": "acc_delta"},
    "nadam": {"m": "exp_avg", "v": "exp_avg_sq", "mu_product": "mu_product"},
}
CLASS_NAMES = {"sgd": "SGD", "momentum": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam",
               "adamw": "AdamW", "adadelta": "Adadelta", "nadam": "NAdam"}
# The optimizers with a fused torch kernel (torch.optim's `fused=True`; CPU and CUDA).
FUSED = frozenset({"sgd", "momentum", "adagrad", "adam", "adamw"})
# Those whose state torch creates at the first step (SGD's momentum buffer starts as the gradient):
# their state starts empty here; the others start with the rule's initial state.
STATE_AT_FIRST_STEP = frozenset({"sgd", "momentum"})


_STEP = operator.itemgetter("step")
_BUFFER = operator.itemgetter("momentum_buffer")


def handles(name: str, rule: Rule, group: dict) -> bool:
    """Whether this pytorch-convention group goes to torch.optim's kernels (see the module docstring;
    `optim` also keeps a group with a sparse gradient off them)."""
    if group.get("convention") != "pytorch" or name not in STATE_NAMES:
        return False
    if not (group.get("foreach") or group.get("fused")) or (group.get("fused") and name not in FUSED):
        return False
    hparams = rule.hparams()
    return not (any(isinstance(v, Tensor) for v in hparams.values())
                or any_nonzero(hparams.get("decoupled_weight_decay", 0.0)))


def _sgd_step_(h: dict, states: list[dict], params: list[Tensor], grads: list[Tensor], foreach, fused, flags: dict) -> None:
    """torch.optim.SGD's step. It keeps no step (ours: a Python int, a tensor under torch.compile so
    that one graph serves every step); its buffer is None before the first step, which starts it at
    the gradient: a state without "momentum_buffer" here, as a key dynamo guards on. In eager mode
    the usual step (ints, every buffer there) takes a path of `map` over C functions, as this
    Python runs for every parameter beside a kernel of microseconds (dynamo traces the plain loops)."""
    momentum = any_nonzero(h["momentum"])
    hyper = dict(weight_decay=h["weight_decay"], momentum=h["momentum"], lr=h["lr"], dampening=h["dampening"],
                 nesterov=h["nesterov"], foreach=foreach, fused=fused, **flags)
    if not torch.compiler.is_compiling():
        counts = list(map(_STEP, states))
        if all(map(int.__instancecheck__, counts)) and (
                not momentum or all(map(operator.contains, states, repeat("momentum_buffer")))):
            for s, count in zip(states, counts):
                s["step"] = count + 1
            sgd.sgd(params, grads, list(map(_BUFFER, states)) if momentum else [None] * len(states), **hyper)
            return
    for s in states:
        count = s["step"]
        if isinstance(count, Tensor):
            count.add_(1)
        elif torch.compiler.is_compiling():
            s["step"] = torch.tensor(count + 1.0, dtype=step_dtype(False))
        else:
            s["step"] = count + 1
    first = [momentum and "momentum_buffer" not in s for s in states]
    parts = [range(len(states))] if len(set(first)) == 1 else [
        [i for i, f in enumerate(first) if f == part] for part in (True, False)]
    for index in parts:
        buffers = [states[i].get("momentum_buffer") for i in index] if momentum else [None] * len(index)
        sgd.sgd([params[i] for i in index], [grads[i] for i in index], buffers, **hyper)
        if momentum:
            for i, b in zip(index, buffers):
                states[i]["momentum_buffer"] = b


def step_dtype(fused: bool) -> torch.dtype:
    """torch.optim's dtype for state["step"]: float32 for fused kernels, else float64 only under a
    float64 default dtype (``torch.optim.optimizer._get_scalar_dtype``)."""
    if fused:
        return torch.float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def step_(name: str, rule: Rule, group: dict, params: list[Tensor], grads: list[Tensor], states: list[dict]) -> None:
    """One torch.optim step of the group's (real) parameters; ``states`` are ours, initialised,
    with ``state["step"]`` not yet advanced (torch's kernels advance it)."""
    fused, foreach = group.get("fused"), group.get("foreach")
    capturable = bool(group.get("capturable", False))
    flags = {"maximize": bool(group.get("maximize", False))}
    h = rule.hparams()
    if name in ("sgd", "momentum"):
        _sgd_step_(h, states, params, grads, foreach, fused, flags)
        return
    device_steps = bool(fused) or capturable
    steps = []
    for p, s in zip(params, states):
        count = s["step"]
        if not isinstance(count, Tensor) or (device_steps and count.device != p.device):
            s["step"] = torch.as_tensor(float(count), dtype=step_dtype(bool(fused)),
                                        device=p.device if device_steps else "cpu").clone()
        steps.append(s["step"])
    column: Callable[[str], list[Tensor]] = lambda key: [s[key] for s in states if key in s]  # noqa: E731
    if name in ("adam", "adamw"):
        adam.adam(params, grads, column("m"), column("v"), column("v_max"), steps, foreach=foreach,
                  capturable=capturable, fused=fused, decoupled_weight_decay=rule.decoupled, amsgrad=rule.amsgrad,
                  beta1=h["beta1"], beta2=h["beta2"], lr=h["lr"], weight_decay=h["weight_decay"], eps=h["eps"], **flags)
    elif name == "adagrad":
        adagrad.adagrad(params, grads, column("G"), steps, fused=fused, foreach=foreach, lr=h["lr"],
                        weight_decay=h["weight_decay"], lr_decay=h["lr_decay"], eps=h["eps"], **flags)
    elif name == "rmsprop":
        rmsprop.rmsprop(params, grads, column("G"), column("g_avg"), column("b"), steps, foreach=foreach,
                        capturable=capturable, lr=h["lr"], alpha=h["alpha"], eps=h["eps"],
                        weight_decay=h["weight_decay"], momentum=h["momentum"], centered=h["centered"], **flags)
    elif name == "adadelta":
        adadelta.adadelta(params, grads, column("Eg2"), column("Edx2"), steps, capturable=capturable, foreach=foreach,
                          lr=h["lr"], rho=h["rho"], eps=h["eps"], weight_decay=h["weight_decay"], **flags)
    elif name == "nadam":
        nadam.nadam(params, grads, column("m"), column("v"), column("mu_product"), steps, foreach=foreach,
                    capturable=capturable, beta1=h["beta1"], beta2=h["beta2"], lr=h["lr"],
                    weight_decay=h["weight_decay"], momentum_decay=h["momentum_decay"], eps=h["eps"], **flags)
    else:  # pragma: no cover - STATE_NAMES and this dispatch list the same eight
        raise KeyError(name)
