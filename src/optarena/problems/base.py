"""The Problem protocol: a training problem written batched over a leading run dimension R.

Every built-in problem (and the wrapper around a user's nn.Module) offers the same small interface,
so one engine loop serves them all:

- ``name``: registry name; ``tags``: e.g. {"2d", "convex", "sparse", "deep", "noisy", ...}.
- ``init_params(seeds) -> dict[str, Tensor[R, ...]]``: initial parameters, run r drawn from a
  ``torch.Generator`` seeded with ``seeds[r]`` (so a run's start does not depend on its batch-mates).
- ``batch(step, generator) -> tuple[Tensor, ...] | None``: the minibatch of one seed for ``step``
  (0-based), drawn only from ``generator``; leading dimension is the batch size. ``None`` for
  deterministic problems. The engine stacks one batch per run along a new leading dimension R
  (runs that share a seed share their minibatch) before calling ``loss``.
- ``loss(params, batch) -> Tensor[R]``: mean training loss of each run on its minibatch; ``batch``
  is the stacked tuple (each tensor (R, B, ...)) or None. A problem that sets
  ``accepts_grouped_batches = True`` is instead called as ``loss(params, batch, slot=slot)`` with one
  minibatch per distinct seed (each tensor (U, B, ...)) and ``slot`` (R,), each run's row of it, so
  runs that share a seed can share work (e.g. one matrix product for all of them).
  Batch tensors are made on the CPU; ``loss`` moves them to the problem's device.
- ``evaluate(params) -> dict[str, Tensor[R]]``: at least "train_loss" and "val_loss" (the training
  split, or a fixed subset of it, and the whole held-out split); "val_accuracy" where it applies.
- optionally ``init_buffers(seeds) -> dict[str, Tensor[R, ...]]``: per-run state that is not
  optimised but changes during training (BatchNorm running statistics). The engine holds it beside
  the parameters and passes it as ``loss(..., buffers=buffers)`` (which may update it in place) and
  ``evaluate(params, buffers=buffers)``; problems without it are called without the keyword.
- optionally ``restrict(batch) -> (columns, batch')``: for sparse features, per parameter the
  columns (last dimension, sorted) that the minibatch reaches, and the minibatch for the parameters
  restricted to them: ``loss(restricted params, batch')`` equals ``loss(params, batch)`` and the
  gradient is zero outside those columns. The engine then never builds the dense gradient.
- ``loss_bound``: a loss above this (or non-finite) marks a run diverged.
- ``default_steps``, ``batch_size``: sensible defaults for studies.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

Params = dict[str, Tensor]
Batch = tuple[Tensor, ...] | None


@runtime_checkable
class Problem(Protocol):
    name: str
    tags: frozenset[str]
    loss_bound: float
    default_steps: int
    batch_size: int | None

    def init_params(self, seeds: Tensor) -> Params: ...

    def batch(self, step: int, generator: torch.Generator) -> Batch: ...

    def loss(self, params: Params, batch: Batch) -> Tensor: ...

    def evaluate(self, params: Params) -> dict[str, Tensor]: ...


def seed_generator(seed: int, stream: str = "init") -> torch.Generator:
    """A CPU generator for one seed and one named stream ("init", "batches", "data", ...).

    Separate streams keep e.g. the initialisation of run r independent of how many batches were drawn.
    """
    offsets = {"init": 0, "batches": 1, "data": 2, "noise": 3}
    if stream not in offsets:
        raise ValueError(f"stream must be one of {sorted(offsets)}, got {stream!r}")
    g = torch.Generator()
    g.manual_seed(int(seed) * 4 + offsets[stream] + 1_000_003)
    return g
