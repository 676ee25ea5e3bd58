"""Elementwise kernels compiled once per process by ``torch.compile``, each with an eager twin.

A `Kernel` wraps a function of tensors written with plain torch ops. Its first call compiles it
(inductor: one vectorised C++ loop per fused group of operations; shapes dynamic, so one compiled
kernel serves every size) and later calls run the compiled code. It runs the eager twin instead

- where compilation is switched off: ``OPTARENA_COMPILE=0`` in the environment, or inside
  ``with compiled.eager():`` (the tests run both ways);
- where compilation failed (no C++ compiler, an unsupported platform): said once, with a warning;
- on a device other than the CPU, or a dtype not in ``Kernel(..., dtypes=...)``;
- on tensors too small for compiling to pay: the first argument has fewer values than the kernel's
  ``min_values`` (``MIN_VALUES`` unless it says)
  (compiling takes seconds, once per process; a small study never compiles). ``with
  compiled.always():`` compiles whatever the size (the tests of the compiled form).

The eager twin is the same formula in ATen's own operations (by default the function itself,
uncompiled; a `Kernel` may name another, e.g. ``torch.tanh`` for a rational approximation of it).
Compiled and eager results agree to float rounding; the engine's tests check both ways.
Inductor caches compiled kernels on disk (``TORCHINDUCTOR_CACHE_DIR``), so later processes load them.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from typing import Callable, Iterator

import torch

MIN_VALUES = 2**20
"""Values of a kernel's first argument below which it runs eagerly (unless `always`)."""

_local = threading.local()


def enabled() -> bool:
    """Whether kernels may run compiled here and now (not switched off by the environment or `eager`)."""
    return os.environ.get("OPTARENA_COMPILE", "1") != "0" and getattr(_local, "mode", None) != "eager"


def forced() -> bool:
    """Whether `always` is in force (compile whatever the size)."""
    return getattr(_local, "mode", None) == "always"


@contextlib.contextmanager
def _mode(mode: str) -> Iterator[None]:
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
    """Compile every `Kernel` inside this block whatever its tensors' size (this thread only)."""
    return _mode("always")


class Kernel:
    """`fn` compiled on first use (``torch.compile``, dynamic shapes, one graph), else `eager_fn`.

    ``dtypes``: the floating dtypes of the first tensor argument for which the compiled form is
    used; ``min_values``: its size below which the kernel runs eagerly (see the module docstring)."""

    def __init__(self, fn: Callable, eager_fn: Callable | None = None,
                 dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64), min_values: int = MIN_VALUES) -> None:
        self.fn, self.eager_fn, self.dtypes, self.min_values = fn, eager_fn or fn, dtypes, min_values
        self.__name__ = self.__qualname__ = fn.__name__
        self.__doc__ = fn.__doc__
        self._compiled: Callable | None = None
        self._failed = False

    def __call__(self, *args, **kwargs):
        first = args[0]
        if (self._failed or not enabled() or first.device.type != "cpu" or first.dtype not in self.dtypes
                or (first.numel() < self.min_values and not forced()) or torch.compiler.is_compiling()):
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
