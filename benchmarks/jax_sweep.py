"""The sweep of benchmarks/sweep_throughput.py in JAX + optax: the same trials, starts and minibatches.

What a competent JAX user writes for a hyperparameter sweep: per optimizer, one ``jax.vmap`` over the
runs of a whole training run, jitted (``lax.scan`` over the steps between evaluation points, the
evaluation at the engine's points), with optax's own transformations. Every run starts from the
parameters optarena's problem draws for its seed and sees the minibatches of its seed's stream, so
the runs are the engine's. Optimizers, with torch.optim's defaults where optax has the same formula:
``sgd``, ``momentum`` (optax.sgd with momentum 0.9), ``adam``, ``adamw`` (weight decay 0.01) compute
what torch.optim computes; ``adagrad``, ``rmsprop``, ``adadelta``, ``nadam`` are optax's forms (eps
inside the root, no momentum schedule for nadam): the same work per step, different numbers, so the
final-loss comparison below covers the first four only.

Needs ``pip install -e '.[jax]'`` (jax, optax); `available` says whether they import. With one thread
(``threads=1``) XLA's CPU backend is limited to one thread by ``XLA_FLAGS`` before jax is imported.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from optarena import engine
from optarena.problems.base import seed_generator
from optarena.trial import Trial

SAME_FORMULA = ("sgd", "momentum", "adam", "adamw")


def available() -> bool:
    try:
        import jax  # noqa: F401
        import optax  # noqa: F401
    except ImportError:
        return False
    return True


def limit_threads(threads: int) -> None:
    """One XLA thread when `threads` is 1 (must run before jax is first imported).

    XLA's CPU client sizes its thread pool by the CPUs the process may run on when the client is
    made, and runs its products (YNNPACK) on that pool whatever ``XLA_FLAGS`` says: with
    ``--xla_cpu_multi_thread_eigen=false`` alone, a 1,400x64 @ 64x3,200 product used 1.78 CPUs
    (process time / wall time, measured on the 2-vCPU CI machine). So the client is made while the
    process may run on one CPU only, and the process's CPUs are given back afterwards: XLA's pool
    then has one thread (measured: 1.00 CPU), torch's and everything else's are as before."""
    if threads != 1:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    if not available() or not hasattr(os, "sched_setaffinity"):
        return
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        import jax
        jax.devices()  # makes the CPU client and its thread pool
    finally:
        os.sched_setaffinity(0, cpus)


@dataclass
class Outcome:
    runs_per_second: float
    compile_seconds: float
    final_train_loss: dict[str, float]  # run_key -> final train loss


def _transformation(optax, name: str, lr):
    return {
        "sgd": lambda: optax.sgd(lr),
        "momentum": lambda: optax.sgd(lr, momentum=0.9),
        "adagrad": lambda: optax.adagrad(lr, initial_accumulator_value=0.0, eps=1e-10),
        "rmsprop": lambda: optax.rmsprop(lr, decay=0.99, eps=1e-8, eps_in_sqrt=False),
        "adam": lambda: optax.adam(lr),
        "adadelta": lambda: optax.adadelta(lr, rho=0.9, eps=1e-6),
        "nadam": lambda: optax.nadam(lr),
        "adamw": lambda: optax.adamw(lr, weight_decay=0.01),
    }[name]()


def _model(jnp, jax, problem_name: str):
    """(logits(params, x), loss(params, x, y), metrics(params, x_train, y_train, x_val, y_val))."""
    if problem_name == "breast_cancer_logreg":
        def logits(p, x):
            return x @ p["w"]

        def example_losses(z, y):
            return jnp.logaddexp(0.0, z) - y * z

        def correct(z, y):
            return ((z > 0) == (y > 0.5)).mean()
    elif problem_name == "digits_mlp":
        def logits(p, x):
            return jnp.tanh(x @ p["w1"].T + p["b1"]) @ p["w2"].T + p["b2"]

        def example_losses(z, y):
            return -jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], 1)[:, 0]

        def correct(z, y):
            return (z.argmax(-1) == y).mean()
    else:
        raise ValueError(f"no JAX model for {problem_name!r}")

    def loss(p, x, y):
        return example_losses(logits(p, x), y).mean()

    def metrics(p, x_train, y_train, x_val, y_val):
        z_val = logits(p, x_val)
        return jnp.stack([example_losses(logits(p, x_train), y_train).mean(), example_losses(z_val, y_val).mean(),
                          correct(z_val, y_val)])

    return loss, metrics


def run(problem, trials: list[Trial], repeats: int = 1) -> Outcome:
    """Train `trials` (one problem, one length, pytorch convention) with JAX + optax; runs/s of the
    best of `repeats` timed runs after a first, compiling one."""
    import jax
    import jax.numpy as jnp
    import optax

    steps = trials[0].steps
    points = engine.eval_points(steps)
    segments = [b - a for a, b in zip(points, points[1:])]
    loss, metrics = _model(jnp, jax, problem.name)
    data = [jnp.asarray(t.cpu().numpy()) for t in (problem.x_train, problem.y_train, problem.x_val, problem.y_val)]
    x_train, y_train = data[0], data[1]
    seeds = sorted({t.seed for t in trials})
    rows = np.stack([np.stack([problem.batch(s, g)[0].numpy() for s in range(steps)])
                     for g in (seed_generator(u, "batches") for u in seeds)], 1)  # (steps, seeds, B)
    rows = jnp.asarray(rows)

    def sweep(name):
        def one_run(params, lr, slot):
            tx = _transformation(optax, name, lr)

            def step(carry, i):
                p, s = carry
                r = rows[i, slot]
                g = jax.grad(loss)(p, x_train[r], y_train[r])
                u, s = tx.update(g, s, p)
                return (optax.apply_updates(p, u), s), None

            carry, curve, start = (params, tx.init(params)), [metrics(params, *data)], 0
            for length in segments:
                carry, _ = jax.lax.scan(step, carry, start + jnp.arange(length))
                start += length
                curve.append(metrics(carry[0], *data))
            return jnp.stack(curve)

        return jax.jit(jax.vmap(one_run))

    groups: dict[str, list[int]] = {}
    for i, t in enumerate(trials):
        groups.setdefault(t.optimizer, []).append(i)
    inputs, functions = {}, {}
    for name, indices in groups.items():
        chosen = [trials[i] for i in indices]
        start = problem.init_params(torch.tensor([t.seed for t in chosen]))
        params = {k: jnp.asarray(v.cpu().numpy()) for k, v in start.items()}
        lrs = jnp.asarray([t.hparams["lr"] for t in chosen], dtype=jnp.float32)
        inputs[name] = (params, lrs, jnp.asarray([seeds.index(t.seed) for t in chosen]))
        functions[name] = sweep(name)

    started = time.perf_counter()
    for name in groups:
        jax.block_until_ready(functions[name](*inputs[name]))
    compile_seconds = time.perf_counter() - started
    best, curves = float("inf"), {}
    for _ in range(repeats):
        started = time.perf_counter()
        curves = {name: jax.block_until_ready(functions[name](*inputs[name])) for name in groups}
        best = min(best, time.perf_counter() - started)
    final = {trials[i].run_key: float(curves[name][j, -1, 0])
             for name, indices in groups.items() for j, i in enumerate(indices)}
    return Outcome(len(trials) / best, compile_seconds - best, final)
