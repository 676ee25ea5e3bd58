"""Fixtures shared by the problem tests: problems are built once per session (data loading is the slow part)."""

from __future__ import annotations

import pytest
import torch

from optarena import problems
from optarena.problems.base import seed_generator


@pytest.fixture(scope="session")
def build():
    cache: dict = {}

    def build(name: str, **options):
        key = (name, tuple(sorted(options.items(), key=lambda kv: kv[0])))
        if key not in cache:
            cache[key] = problems.get(name, **options)
        return cache[key]

    return build


def _stacked_batch(problem, step: int, seeds):
    """What the engine passes to `loss`: run r's batch drawn from seed r's "batches" generator, stacked."""
    per_run = [problem.batch(step, seed_generator(int(s), "batches")) for s in seeds]
    if per_run[0] is None:
        return None
    return tuple(torch.stack(parts) for parts in zip(*per_run))


@pytest.fixture(scope="session")
def stacked_batch():
    return _stacked_batch
