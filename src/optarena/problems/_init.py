"""Initialisation over the run dimension: run r is drawn from its own generator, then runs are stacked.

Drawing each run from `seed_generator(seed, "init")` alone makes a run's start independent of its
batch-mates: `init_params(tensor([3]))` equals `init_params(tensor([1, 3, 5]))[1]` bit for bit.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from optarena.problems.base import seed_generator


def per_seed(
    seeds: Tensor, draw: Callable[[torch.Generator], dict[str, Tensor]], device: torch.device | str
) -> dict[str, Tensor]:
    """Stack `draw(generator_of_run_r)` over the runs; returns leaf tensors of shape (R, ...) on `device`."""
    seed_list = torch.as_tensor(seeds).reshape(-1).tolist()
    if not seed_list:
        raise ValueError("seeds must hold at least one seed, got an empty tensor")
    draws = [draw(seed_generator(int(seed), "init")) for seed in seed_list]
    return {key: torch.stack([d[key] for d in draws]).to(device) for key in draws[0]}


def uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """U(-bound, bound)."""
    return (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * bound


def glorot_uniform(fan_in: int, fan_out: int, shape: tuple[int, ...], generator, dtype) -> Tensor:
    """Glorot & Bengio (2010): U(-a, a), a = sqrt(6 / (fan_in + fan_out)); for tanh and output layers."""
    return uniform(shape, math.sqrt(6.0 / (fan_in + fan_out)), generator, dtype)


def kaiming_uniform(fan_in: int, shape: tuple[int, ...], generator, dtype) -> Tensor:
    """He et al. (2015) for ReLU: U(-a, a), a = sqrt(6 / fan_in)."""
    return uniform(shape, math.sqrt(6.0 / fan_in), generator, dtype)
