"""An embedding model for the sparse-gradient tests (helpers, not tests).

Rows 0..USED-1 of a ROWS x DIM table appear in the batches (with duplicates inside one batch, so
the sparse gradient arrives uncoalesced); the other rows never do. The prediction is the sum of the
looked-up rows dotted with a fixed head, and the loss is the squared error.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ROWS, DIM, USED, BATCH, PER_EXAMPLE = 20, 4, 12, 6, 3


def _batches(steps: int):
    g = torch.Generator().manual_seed(7)
    idx = torch.randint(0, USED, (steps, BATCH, PER_EXAMPLE), generator=g)
    y = torch.randn(steps, BATCH, generator=g, dtype=torch.float64)
    head = torch.randn(DIM, generator=g, dtype=torch.float64)
    return idx, y, head


def initial_table(kind: str = "random") -> torch.Tensor:
    if kind == "zeros":
        return torch.zeros(ROWS, DIM, dtype=torch.float64)
    g = torch.Generator().manual_seed(11)
    return 0.5 * torch.randn(ROWS, DIM, generator=g, dtype=torch.float64)


def train(
    make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    *,
    sparse: bool,
    steps: int,
    init: torch.Tensor,
    indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """Train the table; `indices` (BATCH x PER_EXAMPLE) replaces the batches for every step."""
    idx, y, head = _batches(steps)
    emb = torch.nn.Embedding(ROWS, DIM, sparse=sparse, dtype=torch.float64)
    with torch.no_grad():
        emb.weight.copy_(init)
    opt = make_optimizer([emb.weight])
    for step in range(steps):
        opt.zero_grad()
        batch_idx = idx[step] if indices is None else indices
        pred = emb(batch_idx).sum(dim=1) @ head
        ((pred - y[step]) ** 2).mean().backward()
        assert emb.weight.grad.is_sparse == sparse
        opt.step()
    return emb.weight.detach().clone()
