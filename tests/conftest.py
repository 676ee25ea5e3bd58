"""Shared fixtures."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def device() -> str:
    """The device engine tests run on: $OPTARENA_TEST_DEVICE (default "cpu"; e.g. "cuda" in
    benchmarks/gpu_check.sh)."""
    return os.environ.get("OPTARENA_TEST_DEVICE", "cpu")
