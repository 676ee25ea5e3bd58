"""Elementwise kernels compiled by ``torch.compile`` where the work pays for it, each with an eager twin.

A `Kernel` wraps a function of tensors written with plain torch ops. Inside ``with
compiled.always():`` its first call compiles it (inductor: one vectorised C++ loop per fused group
of operations; shapes dynamic, so one compiled kernel serves every size) and later calls run the
compiled code. Everywhere else, and where compiling is switched off (``OPTARENA_COMPILE=0`` in the
environment, or ``with compiled.eager():``), where it failed (no C++ compiler, an unsupported
platform: said once, with a warning), on a device other than the CPU or a dtype not in
``Kernel(..., dtypes=...)``, it runs its eager twin.

Whether to compile is the caller's decision because only the caller knows how much work follows:
compiling, or loading a compiled kernel from inductor's disk cache in a new process, takes seconds
(measured: the first 8-run digits_mlp study of a process, 200 steps, 4.9 s against 0.4 s for the
next one), which a short study never wins back. `optarena.engine.run` decides per stack of runs
(its ``compile`` argument).

The eager twin is the same formula in ATen's own operations (by default the function itself,
uncompiled; a `Kernel` may name another, e.g. ``torch.tanh`` for a rational approximation of it).
Compiled and eager results agree to float rounding; the engine's tests check both ways.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from typing import Callable, Iterator

import torch

_local = threading.local()


def enabled() -> bool:
    """Whether kernels may run compiled here and now (not switched off by the environment or `eager`)."""
    return os.environ.get("OPTARENA_COMPILE", "1") != "0" and getattr(_local, "mode", None) != "eager"


def forced() -> bool:
    """Whether `always` is in force (and compiling not switched off by the environment)."""
    return getattr(_local, "mode", None) == "always" and enabled()


@contextlib.contextmanager
def _mode(mode: str | None) -> Iterator[None]:
    before = getattr(_local, "mode", None)
    _local.mode = mode
    try:
        yield
    finally:
        _local.mode = before


def eager() -> contextlib.AbstractContextManager:
    """Run every `Kernel` eagerly inside this block (this thread only)."""
    return _mode("eager")


def always() -> contextlib.AbstractContextManager:
    """Run every `Kernel` compiled inside this block (this thread only; where compiling works)."""
    return _mode("always")


class Kernel:
    """`fn`, compiled on first use inside `always` (``torch.compile``, dynamic shapes, one graph),
    else `eager_fn`. ``dtypes``: the floating dtypes of the first tensor argument for which the
    compiled form is used."""

    def __init__(self, fn: Callable, eager_fn: Callable | None = None,
                 dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64)) -> None:
        self.fn, self.eager_fn, self.dtypes = fn, eager_fn or fn, dtypes
        self.__name__ = self.__qualname__ = fn.__name__
        self.__doc__ = fn.__doc__
        self._compiled: Callable | None = None
        self._failed = False

    def __call__(self, *args, **kwargs):
        first = args[0]
        if (self._failed or not forced() or first.device.type != "cpu" or first.dtype not in self.dtypes
                or torch.compiler.is_compiling()):
            return self.eager_fn(*args, **kwargs)
        if self._compiled is None:
            self._compiled = torch.compile(self.fn, dynamic=True, fullgraph=True)
        try:
            return self._compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001  no C++ compiler, an unsupported platform: eager, said once
            self._failed = True
            warnings.warn(f"optarena: the compiled kernel {self.__name__} is not available here "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); running it eagerly "
                          "(same formula, slower)", RuntimeWarning, stacklevel=2)
            return self.eager_fn(*args, **kwargs)
