"""The benchmark suite: every problem written batched over a leading run dimension R.

`get(name, **options)` builds a problem, `names()` lists them, `PROBLEMS` maps name -> class.
See `optarena.problems.base` for the interface every problem offers.
"""

from __future__ import annotations

import inspect

from optarena.problems.base import Batch, Params, Problem, seed_generator
from optarena.problems.deep import DeepMLP, ResidualMLP
from optarena.problems.functions import (
    Beale,
    NarrowValley,
    NoisyQuadratic,
    QuadraticDeepOBS,
    Rosenbrock,
    ScaleShiftQuadratic,
)
from optarena.problems.sparse import SparseCTR, SparseZipf
from optarena.problems.vision import BreastCancerLogreg, DigitsMLP, MnistCNN, MnistMLP

PROBLEMS: dict[str, type] = {
    cls.name: cls
    for cls in (
        Rosenbrock,
        NarrowValley,
        Beale,
        QuadraticDeepOBS,
        NoisyQuadratic,
        ScaleShiftQuadratic,
        SparseZipf,
        SparseCTR,
        DigitsMLP,
        BreastCancerLogreg,
        MnistMLP,
        MnistCNN,
        DeepMLP,
        ResidualMLP,
    )
}


def names() -> list[str]:
    """The registered problem names, in suite order."""
    return list(PROBLEMS)


def get(name: str, **options) -> Problem:
    """Build the problem `name` with its constructor `options` (e.g. dtype, device, batch_size)."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; valid names: {', '.join(names())}")
    cls = PROBLEMS[name]
    accepted = list(inspect.signature(cls).parameters)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"problem {name!r} takes no option(s) {unknown}; its options are {sorted(accepted)}")
    return cls(**options)


__all__ = ["PROBLEMS", "Batch", "Params", "Problem", "get", "names", "seed_generator"]
