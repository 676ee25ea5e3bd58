"""Helpers for the oracle tests (not tests themselves).

One small real model, a 5-8-3 MLP with tanh on a fixed regression data set, is trained by
whatever optimizer a test supplies; its final parameters are compared with those an independent
oracle (torch.optim, Keras 3, or a NumPy transcription of the paper written in the test) reaches
from the same start on the same batches. The batches cycle through four fixed chunks of the data,
so the gradient changes from step to step (which moving averages, AMSGrad's max and momentum
need to be exercised).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from optarena import optim

IN, HIDDEN, OUT = 5, 8, 3
N_SAMPLES, BATCH = 32, 8
SEED = 20240611

# cell "optimizer|convention|oracle" -> {"max_abs", "max_rel", "n"}; written out by conftest.py
DIFFS: dict[str, dict[str, float]] = {}


def _data() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(N_SAMPLES, IN, generator=g, dtype=torch.float64)
    y = torch.randn(N_SAMPLES, OUT, generator=g, dtype=torch.float64)
    params = [
        torch.randn(HIDDEN, IN, generator=g, dtype=torch.float64) / IN**0.5,
        0.1 * torch.randn(HIDDEN, generator=g, dtype=torch.float64),
        torch.randn(OUT, HIDDEN, generator=g, dtype=torch.float64) / HIDDEN**0.5,
        0.1 * torch.randn(OUT, generator=g, dtype=torch.float64),
    ]
    return x, y, params


_X, _Y, _P0 = _data()


def initial_params() -> list[np.ndarray]:
    """The model's starting parameters, float64 NumPy copies (W1, b1, W2, b2)."""
    return [p.numpy().copy() for p in _P0]


def loss(params: Sequence[torch.Tensor], step: int) -> torch.Tensor:
    """Half the mean squared error of the MLP on batch `step % 4`, in the params' dtype."""
    w1, b1, w2, b2 = params
    lo = (step % (N_SAMPLES // BATCH)) * BATCH
    x = _X[lo : lo + BATCH].to(w1.dtype)
    y = _Y[lo : lo + BATCH].to(w1.dtype)
    out = torch.tanh(x @ w1.T + b1) @ w2.T + b2
    return 0.5 * ((out - y) ** 2).sum(dim=1).mean()


def gradients(params: Sequence[np.ndarray], step: int) -> list[np.ndarray]:
    """Gradient of `loss` at NumPy parameters (autograd only differentiates; it updates nothing)."""
    ts = [torch.tensor(p, requires_grad=True) for p in params]
    loss(ts, step).backward()
    return [t.grad.numpy().copy() for t in ts]


def run_torch(
    make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    steps: int,
    dtype: torch.dtype = torch.float64,
    init: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Train the MLP for `steps` steps with the optimizer built by `make_optimizer(params)`."""
    init = initial_params() if init is None else init
    params = [torch.tensor(a, dtype=dtype, requires_grad=True) for a in init]
    opt = make_optimizer(params)
    for step in range(steps):
        opt.zero_grad()
        loss(params, step).backward()
        opt.step()
    return [p.detach().numpy().copy() for p in params]


def run_numpy(
    update: Callable[[int, int, np.ndarray, np.ndarray, dict], np.ndarray],
    steps: int,
    init: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Train the MLP with a NumPy transcription: `update(t, i, w, g, state) -> new w`, where t
    counts steps from 1, i is the parameter's index, and `state` is that parameter's dict,
    empty on the first call."""
    w = [a.copy() for a in (initial_params() if init is None else init)]
    states: list[dict] = [{} for _ in w]
    for step in range(steps):
        g = gradients(w, step)
        w = [update(step + 1, i, w[i], g[i], states[i]) for i in range(len(w))]
    return w


def run_keras(keras_optimizer, steps: int) -> list[np.ndarray]:
    """Train the MLP in float32 with a Keras 3 optimizer: keras.Variables built from the same
    initial arrays, gradients of the same loss taken on the variables' current values."""
    import keras

    assert keras.backend.backend() == "torch"
    variables = [keras.Variable(a.astype(np.float32)) for a in initial_params()]
    for step in range(steps):
        # with the torch backend a keras.Variable's value is a torch Parameter
        values = [v.value.detach().clone().requires_grad_() for v in variables]
        loss(values, step).backward()
        keras_optimizer.apply_gradients(zip([t.grad for t in values], variables))
    return [v.value.detach().numpy().copy() for v in variables]


def record(cell: str, actual: Sequence[np.ndarray], expected: Sequence[np.ndarray], atol: float):
    """Note the largest absolute and relative difference for the cell; relative differences are
    taken against max(|expected|, atol) so that entries near zero do not blow them up."""
    a = np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in actual])
    e = np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in expected])
    with np.errstate(invalid="ignore"):
        diff = np.abs(a - e)
        max_abs = float(np.max(diff)) if diff.size else 0.0
        max_rel = float(np.max(diff / np.maximum(np.abs(e), atol))) if diff.size else 0.0
    if not np.isfinite(max_abs):
        max_abs = max_rel = float("inf")
    old = DIFFS.get(cell, {"max_abs": 0.0, "max_rel": 0.0, "n": 0})
    DIFFS[cell] = {
        "max_abs": max(old["max_abs"], max_abs),
        "max_rel": max(old["max_rel"], max_rel),
        "n": old["n"] + 1,
    }


def assert_close(
    actual: Sequence[np.ndarray],
    expected: Sequence[np.ndarray],
    *,
    rtol: float,
    atol: float,
    cell: str,
) -> None:
    """Record the differences, then assert every parameter is within rtol/atol of the oracle."""
    assert len(actual) == len(expected)
    record(cell, actual, expected, atol)
    for k, (a, e) in enumerate(zip(actual, expected)):
        np.testing.assert_allclose(
            a, e, rtol=rtol, atol=atol, err_msg=f"{cell}: parameter {k} differs from the oracle"
        )


# Float tolerances used by every file, in one place.
TORCH_RTOL, TORCH_ATOL = 1e-10, 1e-12  # float64, same formula, only rounding order may differ
ARTICLE_RTOL, ARTICLE_ATOL = 1e-10, 1e-12  # float64 NumPy transcription
# Keras runs in float32: each step may round differently from ours (different operation order,
# Keras casts hyperparameters to float32 at other points), i.e. ~6e-8 relative per operation;
# over 50 steps of a smooth contraction that stays far below 1e-5 relative, while any formula
# difference (eps placement, bias-correction form, momentum form) is >1e-3 relative after 50 steps.
KERAS_RTOL, KERAS_ATOL = 1e-5, 1e-6
TORCH_STEPS, KERAS_STEPS, ARTICLE_STEPS = 200, 50, 50


def make_keras(name: str, **kwargs):
    """A Keras 3 optimizer by class name (imported late so KERAS_BACKEND is already set)."""
    import keras

    return getattr(keras.optimizers, name)(**kwargs)


# Our public classes by rule name, and the conventions each one has.
CLASS_NAMES = {name: cls.__name__ for name, cls in optim.OPTIMIZERS.items()}
CONVENTIONS = ("article", "pytorch", "keras")


def conventions_of(name: str) -> tuple[str, ...]:
    """The conventions the registry gives `name` (FTRL has no torch.optim original, so no pytorch
    convention; the contenders have no keras one)."""
    from optarena import rules

    return tuple(c for c in CONVENTIONS if rules.has_convention(name, c))


def optimizer_class(name: str):
    from optarena import optim

    return getattr(optim, CLASS_NAMES[name])
