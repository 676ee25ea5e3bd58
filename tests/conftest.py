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


class _WithoutHandGradient:
    """A problem seen without its hand-written gradient (``loss_and_grad``): the engine then
    differentiates it with autograd, as the loop does."""

    def __init__(self, problem):
        self._problem = problem

    def __getattr__(self, name):
        if name == "loss_and_grad":
            raise AttributeError(name)
        return getattr(self._problem, name)


@pytest.fixture(scope="session")
def without_hand_gradient():
    """``without_hand_gradient(problem)``: the problem, its engine runs differentiated by autograd."""
    return _WithoutHandGradient
