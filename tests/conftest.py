"""Shared fixtures."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def device() -> str:
    """The device engine tests run on: $OPTARENA_TEST_DEVICE (default "cpu"; e.g. "cuda" in
    benchmarks/gpu_check.sh)."""
    return os.environ.get("OPTARENA_TEST_DEVICE", "cpu")


@pytest.fixture(scope="module")
def one_thread():
    """One torch intra-op thread for a module of small-op tests (on a busy 2-core machine a second
    thread only adds synchronisation); restored after. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
