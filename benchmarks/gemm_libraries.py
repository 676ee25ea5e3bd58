"""The digits_mlp sweep's matrix products in every GEMM library this machine offers, GFLOP/s side by side.

Why it exists: on this project's CI machine (an AMD EPYC, Zen 3) JAX + optax runs the MLP sweep of
benchmarks/sweep_throughput.py faster than the engine, whose matrix products (MKL, through
``torch.bmm``) take about half of its time. Is a faster GEMM within reach, in torch or beside it?
This script measures the products alone, one thread, in the shapes the engine runs them:

- ``torch``: ``torch.mm`` / ``torch.bmm`` (MKL in the torch wheels for x86 Linux);
- ``numpy``: ``np.matmul`` into a preallocated output (OpenBLAS in the numpy wheels; its threads
  limited with threadpoolctl);
- ``oneDNN``: ``torch.ops.mkldnn._linear_pointwise`` (oneDNN's f32 matmul, as inductor's
  mkldnn path calls it), for the unbatched shapes only: torch reaches oneDNN's batched f32 matmul
  through no public operation;
- ``jax``: ``jnp.matmul`` under ``jax.jit``, where jax is installed (``pip install -e '.[jax]'``),
  up to 10 products in one ``lax.scan``, each scaled operand multiplied and its product reduced with
  ``max`` (an unused product, or one only sliced or summed, XLA removes or rewrites): a pass over
  the output that the other columns do not make, so the figure is a lower bound on XLA's GEMM.
  The column header says whether XLA ran the product with YNNPACK (``ynn_fusion`` in its
  compiled program) or its own emitter.

Each cell is the best of ``--repeats`` timings of a batch of calls, the columns interleaved within
each repeat so that the machine's drift hits them alike.

    python benchmarks/gemm_libraries.py [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

SHAPES = [
    ("evaluation, first layer: 1,400 examples x 50 runs' weights (1,400x64 @ 64x3,200)", 1, 1400, 64, 3200),
    ("training, first layer: 40 blocks of 10 runs on a minibatch of 64 (640x64 @ 64x64)", 40, 640, 64, 64),
    ("training, second layer: 400 runs (10x64 @ 64x64)", 400, 10, 64, 64),
    ("evaluation, second layer: 23 runs (10x64 @ 64x1,408)", 23, 10, 64, 1408),
    ("the sweep's peak measure (2,048x2,048 @ 2,048x2,048)", 1, 2048, 2048, 2048),
]
"""(what, batch, M, K, N): the products of digits_mlp (64-64-10) in benchmarks/sweep_throughput.py's
sweep, as the engine (`optarena.problems._mlp`) shapes them, and the square product whose speed
the sweep reports as the peak."""


def _calls(batch: int, m: int, k: int, n: int) -> int:
    """Calls per timing: about 0.2 GFLOP of work, and at least 2."""
    return max(2, int(2e8 // (2 * batch * m * k * n)))


def _best(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def _torch(batch, m, k, n):
    a, b = torch.randn(batch, m, k), torch.randn(batch, k, n)
    if batch == 1:
        a2, b2 = a[0], b[0]
        return lambda: torch.mm(a2, b2)
    return lambda: torch.bmm(a, b)


def _numpy(batch, m, k, n):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((batch, m, k), np.float32), rng.standard_normal((batch, k, n), np.float32)
    out = np.empty((batch, m, n), np.float32)
    return lambda: np.matmul(a, b, out=out)


def _onednn(batch, m, k, n):
    if batch != 1:
        return None
    x, w = torch.randn(m, k), torch.randn(n, k)  # x @ w^T, as a linear layer computes it
    return lambda: torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")


def _jax(batch, m, k, n):
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((batch, m, k), np.float32))
    b = jnp.asarray(rng.standard_normal((batch, k, n), np.float32))
    reps = max(1, min(10, int(2e8 // (2 * batch * m * k * n))))  # products per call

    def products(a, b):
        def body(c, i):
            return c + jnp.matmul(a, b * (1 + 1e-3 * i)).max(), None
        return jax.lax.scan(body, jnp.float32(0), jnp.arange(reps, dtype=jnp.float32))[0]

    fn = jax.jit(products)
    uses_ynn = "ynn" in fn.lower(a, b).compile().as_text()
    jax.block_until_ready(fn(a, b))
    return (lambda: jax.block_until_ready(fn(a, b))), reps, uses_ynn


def measure(columns: list[str], repeats: int) -> dict[str, list[float | None]]:
    """GFLOP/s of each column on each of `SHAPES` (None where the column has no such operation)."""
    makers = {"torch": _torch, "numpy": _numpy, "oneDNN": _onednn}
    out: dict[str, list[float | None]] = {c: [] for c in columns}
    for _what, batch, m, k, n in SHAPES:
        flop = 2.0 * batch * m * k * n
        calls = _calls(batch, m, k, n)
        fns = {}
        for c in columns:
            if c.startswith("jax"):
                fn, per_call, _ = _jax(batch, m, k, n)
                fns[c] = (fn, max(1, calls // per_call), per_call)
            else:
                fn = makers[c](batch, m, k, n)
                fns[c] = None if fn is None else (fn, calls, 1)
        for f in fns.values():
            if f is not None:
                f[0]()  # warm-up: first-call costs, allocations
        best = {c: float("inf") for c in columns}
        for _ in range(repeats):
            for c, f in fns.items():
                if f is not None:
                    fn, times, per_call = f
                    best[c] = min(best[c], _best(fn, times) / per_call)
        for c in columns:
            out[c].append(None if fns[c] is None else flop / best[c] / 1e9)
    return out


def _limit_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except ImportError:
        pass


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import jax_sweep

    jax_sweep.limit_threads(args.threads)  # before jax makes its CPU client
    _limit_threads(args.threads)
    columns = ["torch", "numpy", "oneDNN"]
    header = ["torch (MKL)", "numpy (OpenBLAS)", "oneDNN"]
    if jax_sweep.available():
        _, _, ynn = _jax(1, 64, 64, 64)
        columns.append("jax")
        header.append("jax (XLA, YNNPACK)" if ynn else "jax (XLA)")
    else:
        print("jax not installed (pip install -e '.[jax]'): no jax column")
    print(f"torch {torch.__version__}, numpy {np.__version__}, {args.threads} thread(s), GFLOP/s (float32), "
          f"best of {args.repeats}")
    results = measure(columns, args.repeats)
    print()
    print("| product | " + " | ".join(header) + " |")
    print("|---|" + "---:|" * len(header))
    for i, (what, *_shape) in enumerate(SHAPES):
        print(f"| {what} | " + " | ".join(_cell(results[c][i]) for c in results) + " |")


if __name__ == "__main__":
    main()
