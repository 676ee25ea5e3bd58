"""Argument checks shared by the problems: each names the parameter, the value and the allowed range."""

from __future__ import annotations

import math
import numbers

import torch


def check_int(name: str, value: object, minimum: int) -> int:
    """`value` as an int, or a ValueError if it is not an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(
    name: str, value: object, *, above: float | None = None, at_least: float | None = None
) -> float:
    """`value` as a finite float, or a ValueError if it is not `> above` / `>= at_least`."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and above is not None:
        ok = value > above
    if ok and at_least is not None:
        ok = value >= at_least
    if not ok:
        bound = f"> {above}" if above is not None else f">= {at_least}" if at_least is not None else "finite"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_dtype(dtype: torch.dtype) -> torch.dtype:
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point torch.dtype (e.g. torch.float32), got {dtype!r}")
    return dtype
