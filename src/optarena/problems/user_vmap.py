"""Naming what keeps a user's model from being vmapped: the layer whose forward raised under vmap,
or the first layer whose vmapped output differs from its output run alone.

`Watch` hooks every submodule: ``stack`` holds the paths of the modules being run (so, when an
error escapes, ``stack[-1]`` is the innermost module it came from), and with ``capture`` on,
``outputs`` the first tensor of each module's output in the order the modules finished.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from optarena.problems.user_data import first_tensor


class Watch:
    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.paths = {id(m): path for path, m in module.named_modules()}
        self.stack: list[str] = []
        self.outputs: list[tuple[str, Tensor]] = []
        self.capture = False
        self._handles: list[Any] = []

    def __enter__(self) -> "Watch":
        for m in self.module.modules():
            self._handles.append(m.register_forward_pre_hook(self._enter))
            self._handles.append(m.register_forward_hook(self._exit))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _enter(self, module: nn.Module, _args) -> None:
        self.stack.append(self.paths[id(module)])

    def _exit(self, module: nn.Module, _args, output) -> None:
        path = self.stack.pop() if self.stack else self.paths[id(module)]
        if self.capture:
            t = first_tensor(output)
            if t is not None:
                self.outputs.append((path, t))

    def innermost(self) -> str | None:
        return self.stack[-1] if self.stack else None


def layer(model: nn.Module, path: str) -> str:
    """"nn.GRU at encoder.rnn", "Net (the model's own forward)"."""
    cls = type(model.get_submodule(path))
    name = f"nn.{cls.__name__}" if cls.__module__.startswith("torch.nn") else cls.__name__
    return f"{name} at {path}" if path else f"{name} (the model's own forward)"


def attention_with_dropout(model: nn.Module, path: str) -> str | None:
    """The path of an nn.MultiheadAttention with dropout > 0 at or inside `path`, if any."""
    for sub_path, m in model.get_submodule(path).named_modules():
        if isinstance(m, nn.MultiheadAttention) and m.dropout > 0:
            return ".".join(p for p in (path, sub_path) if p)
    return None


def is_randomness_error(error: BaseException) -> bool:
    """vmap refused a random draw (randomness="error"): the model draws from torch's global RNG."""
    return isinstance(error, RuntimeError) and "randomness" in str(error)


def largest_difference(a: Tensor, b: Tensor) -> float:
    a, b = a.detach(), b.detach()
    if a.shape != b.shape:
        return float("inf")
    if not (a.is_floating_point() or a.is_complex()):
        return float((a != b).any())
    return float(torch.nan_to_num((a - b).abs(), nan=float("inf")).max()) if a.numel() else 0.0
