"""Sweep throughput: the same trials as a plain sequential loop and through the batched engine.

Two workloads (issue 6), each 8 optimizers x 10 learning rates x 5 seeds = 400 trials, 300 steps,
minibatches of 64, article convention:

- ``logreg``: breast_cancer_logreg (31 weights). Per-step Python overhead dominates the loop.
- ``mlp``: digits_mlp 64-64-10 (4,810 weights). Compute matters.

Optimizers: sgd, momentum, adagrad, rmsprop, adam, adadelta, nadam, adamw (ftrl is left out: it is
the sparse-feature optimizer and its article form assumes a zero start, which the MLP does not have).
Learning rates: each optimizer's pytorch-convention default x 10^k for 10 k evenly spaced in
[-2.5, 0], the range where these problems train stably. (Above it the adaptive methods are chaotic
on the MLP: a 1-ulp change in one step, e.g. a per-run tensor learning rate instead of a Python
float, grows to a difference of 0.1 in final loss, so a final-loss comparison there measures chaos,
not the engine; measured: RMSprop at 10^0.5 x its default, lr 0.032, differed by 0.045 between
the engine and the optarena.optim loop, every other trial of the sample by <= 2.4e-7.)

Every trial uses convention="pytorch" (torch.optim's formulas), so that the loops below are
the ones a competent torch user writes:

(a) the loop: one trial after another (``loop.run_sequential``, the problem's own loss at one
    run, evaluated at the same points) with **torch.optim at its fastest** (``fused=True`` where
    torch has a fused kernel: SGD, Adagrad, Adam, AdamW; else ``foreach=True``) and no per-step
    host sync (divergence checked at the evaluation points only). Its runs/s are the last lines'.
(b) the same loop with ``optarena.optim`` and a divergence check every step (``loss.item()``):
    the reference the engine is tested against, printed as a second line.
(c) the engine: ``engine.run`` on all trials at once.

``--loop-sample K`` times the loops on K trials drawn at random (seeded) and extrapolates runs/s;
the final-loss difference (engine against loop (a), runs that finished in both) covers those K.

Both run in this process, one after the other, with the same torch thread count (``--threads``,
default 1: on a small shared machine more threads slow small ops down, the loop's most). The engine
is timed twice, before and after the loop, and the mean is used, so slow drifts in machine load
affect both sides alike. For mlp the engine's matrix-multiply FLOPs (forward and backward of every
training step, forward of every evaluation over both splits) per second are reported as a fraction
of the float32 peak of a 2048 x 2048 ``torch.mm`` timed in the same run.

The engine runs with ``compile=True`` (each group's update one compiled kernel where the group is
large enough for that to be faster: the MLP's groups, not the logistic regression's; the problems'
compiled elementwise kernels are used at this size anyway): its first run, which compiles, is
timed apart and reported as such, then the two timed runs above. Where jax and optax are installed
(``pip install -e '.[jax]'``), the same trials also run in JAX + optax (benchmarks/jax_sweep.py:
vmap per optimizer, the whole run jitted, same starts and minibatches), compile time apart, and the
ratio engine / JAX is printed with the final-loss difference on the optimizers whose formulas agree.

The last two lines are exactly:
    sweep speedup logreg: <ratio>x (engine <a> runs/s, loop <b> runs/s, max final-loss diff <d>)
    sweep speedup mlp: <ratio>x (engine <a> runs/s, loop <b> runs/s, max final-loss diff <d>, <f>% of matmul peak)
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from optarena import engine, loop, problems, rules, torch_kernels
from optarena.trial import RunResult, Trial

OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adadelta", "nadam", "adamw")
LR_EXPONENTS = np.linspace(-2.5, 0.0, 10)
SEEDS = 5
WORKLOADS = {"logreg": "breast_cancer_logreg", "mlp": "digits_mlp"}
FINAL_LOSSES = ("train_loss", "val_loss")


CONVENTION = "pytorch"


def sweep_trials(problem: str, steps: int, n: int | None = None) -> list[Trial]:
    """The 400 trials of a workload (optimizer x learning rate x seed), or `n` of them spread evenly."""
    trials = []
    for optimizer in OPTIMIZERS:
        default_lr = rules.defaults(optimizer, CONVENTION)["lr"]
        for k in LR_EXPONENTS:
            for seed in range(SEEDS):
                trials.append(Trial(problem, optimizer, CONVENTION, {"lr": float(default_lr * 10.0**k)}, seed, steps))
    if n is not None and n < len(trials):
        trials = [trials[i * len(trials) // n] for i in range(n)]
    return trials


def matmul_peak_gflops(device: str = "cpu", size: int = 2048, reps: int = 5) -> float:
    """float32 GFLOP/s of a large square torch.mm on `device`: best of `reps`, after a warm-up."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    torch.mm(a, b)
    _sync(device)
    best = math.inf
    for _ in range(reps):
        started = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def mlp_matmul_flops(problem, trials: list[Trial]) -> float:
    """Matrix-multiply FLOPs the engine does for these digits_mlp trials.

    Per training example: forward 2(in*h + h*C); backward dW1 2*in*h, dW2 2*h*C, dh 2*h*C (no
    gradient for the input). Per evaluated example (both splits): forward, at every evaluation point
    after the start for every run, and at the start once per distinct seed (the engine evaluates
    each distinct start once: runs of one seed start from the same parameters), so that only work
    done is counted.
    """
    n_in, h, n_out = problem.n_inputs, problem.hidden, problem.n_classes
    forward = 2 * (n_in * h + h * n_out)
    train = forward + 2 * n_in * h + 4 * h * n_out
    examples = problem.n_train + problem.n_val
    total = len({t.seed for t in trials}) * examples * forward
    for t in trials:
        evaluations = len(engine.eval_points(t.steps)) - 1
        total += t.steps * problem.batch_size * train + evaluations * examples * forward
    return total


def torch_fastest(trial: Trial, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """torch.optim's own optimizer for a pytorch-convention trial, at its fastest on this machine:
    ``fused=True`` where torch has a fused kernel, else ``foreach=True``."""
    h = rules.resolve(trial.optimizer, trial.convention, **trial.hparams)
    h.pop(rules.registry.DECOUPLED, None)
    if "beta1" in h:
        h["betas"] = (h.pop("beta1"), h.pop("beta2"))
    fastest = {"fused": True} if trial.optimizer in torch_kernels.FUSED else {"foreach": True}
    return getattr(torch.optim, torch_kernels.CLASS_NAMES[trial.optimizer])(params, **h, **fastest)


def final_loss_diff(loop: list[RunResult], batched: list[RunResult]) -> float:
    """Largest |loop - engine| over the final train and held-out losses of the runs that finished
    in both; inf if a run finished in one and diverged in the other (the step at which a divergence
    is seen may differ: the fastest loop looks only at its evaluation points)."""
    worst = 0.0
    for a, b in zip(loop, batched):
        assert a.trial == b.trial
        if a.status != b.status:
            return math.inf
        if a.status == "done":
            worst = max(worst, *(abs(a.final[k] - b.final[k]) for k in FINAL_LOSSES))
    return worst


@dataclass
class Outcome:
    engine_rps: float
    loop_rps: float  # torch.optim at its fastest
    diff: float
    statuses: dict[str, int]
    optarena_loop_rps: float
    optarena_diff: float
    batched: list | None = None

    @property
    def speedup(self) -> float:
        return self.engine_rps / self.loop_rps


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(problem_name: str, n_trials: int | None, steps: int, loop_sample: int | None, rng: random.Random,
            device: str = "cpu", compile: bool = True) -> tuple[Outcome, list[Trial], object, float]:
    problem = problems.get(problem_name, batch_size=64, device=device)
    trials = sweep_trials(problem_name, steps, n_trials)
    sample = trials if loop_sample is None or loop_sample >= len(trials) else rng.sample(trials, loop_sample)
    index = {t.run_key: i for i, t in enumerate(trials)}

    compiling = time.perf_counter()  # the first run compiles the kernels: timed apart
    engine.run(problem, trials, device=device, compile=compile)
    compiling = time.perf_counter() - compiling
    loop.run_sequential(problem, trials[:1], device=device)  # warm-up (allocator, lazy initialisation)
    loop.run_sequential(problem, trials[:1], device=device, make_optimizer=torch_fastest, check_every_step=False)

    def timed(fn):
        _sync(device)
        started = time.perf_counter()
        out = fn()
        _sync(device)
        return out, time.perf_counter() - started

    batched, first = timed(lambda: engine.run(problem, trials, device=device, compile=compile))
    fastest, loop_seconds = timed(lambda: loop.run_sequential(problem, sample, device=device,
                                                              make_optimizer=torch_fastest, check_every_step=False))
    ours, ours_seconds = timed(lambda: loop.run_sequential(problem, sample, device=device))
    _, second = timed(lambda: engine.run(problem, trials, device=device, compile=compile))
    engine_seconds = [first, second]

    engine_time = sum(engine_seconds) / len(engine_seconds)
    statuses: dict[str, int] = {}
    for r in batched:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    matched = [batched[index[t.run_key]] for t in sample]
    outcome = Outcome(len(trials) / engine_time, len(sample) / loop_seconds, final_loss_diff(fastest, matched), statuses,
                      len(sample) / ours_seconds, final_loss_diff(ours, matched), batched)
    print(
        f"{problem_name}: {len(trials)} trials x {steps} steps; engine {engine_time:.2f} s "
        f"(runs {', '.join(f'{s:.2f}' for s in engine_seconds)} s; its first run, compiling, {compiling:.2f} s), "
        f"statuses {statuses}; on {len(sample)} trials"
        + (" (a seeded random sample; loop runs/s extrapolated from it)" if len(sample) < len(trials) else "")
        + f": torch.optim loop {loop_seconds:.2f} s, optarena.optim loop {ours_seconds:.2f} s"
    )
    return outcome, trials, problem, engine_time


def compare_with_jax(problem, trials: list[Trial], batched: list[RunResult], engine_rps: float, workload: str) -> None:
    """The same trials in JAX + optax (benchmarks/jax_sweep.py), if installed: runs/s and the ratio."""
    import jax_sweep

    if not jax_sweep.available():
        print(f"{workload}: jax + optax not installed (pip install -e '.[jax]'): no JAX comparison")
        return
    outcome = jax_sweep.run(problem, trials, repeats=2)
    same = [(r.final["train_loss"], outcome.final_train_loss[t.run_key]) for t, r in zip(trials, batched)
            if t.optimizer in jax_sweep.SAME_FORMULA and r.status == "done"]
    diff = max((abs(a - b) for a, b in same), default=float("nan"))
    print(f"{workload}: jax + optax {outcome.runs_per_second:.1f} runs/s (best of 2; compiling {outcome.compile_seconds:.1f} s "
          f"apart); engine / jax = {engine_rps / outcome.runs_per_second:.2f}x; max final train-loss diff on "
          f"{', '.join(jax_sweep.SAME_FORMULA)}: {diff:.1e}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=None, help="trials per workload (default: all 400)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--loop-sample", type=int, default=None, help="time the loop on K random trials")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both ways (default 1)")
    parser.add_argument("--tiny", action="store_true", help="8 trials x 10 steps: a smoke test in seconds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the loop sample")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: both sides run there (default cpu)")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="the engine's eager updates (no compiled kernels for them)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.trials, args.steps = 8, 10
    torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import jax_sweep

    jax_sweep.limit_threads(args.threads)
    rng = random.Random(args.seed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) both ways, device {args.device}"
          + (f" ({torch.cuda.get_device_name(args.device)})" if args.device.startswith("cuda") else ""))
    print(f"optimizers {', '.join(OPTIMIZERS)}; convention {CONVENTION}; lr = its default x 10^k, k in "
          f"[{LR_EXPONENTS[0]}, {LR_EXPONENTS[-1]}] (10 values); seeds 0..{SEEDS - 1}; batch 64")

    lines = []
    for workload, problem_name in WORKLOADS.items():
        outcome, trials, problem, engine_time = measure(problem_name, args.trials, args.steps, args.loop_sample, rng,
                                                        args.device, args.compile)
        line = (f"sweep speedup {workload}: {outcome.speedup:.1f}x (engine {outcome.engine_rps:.1f} runs/s, "
                f"loop {outcome.loop_rps:.2f} runs/s, max final-loss diff {outcome.diff:.1e}")
        if workload == "mlp":
            peak = matmul_peak_gflops(args.device)  # right after the engine runs it is compared with
            print(f"float32 matmul peak (2048 x 2048 torch.mm, best of 5): {peak:.1f} GFLOP/s")
            achieved = mlp_matmul_flops(problem, trials) / engine_time / 1e9
            print(f"mlp: engine matmul throughput {achieved:.1f} GFLOP/s = {100 * achieved / peak:.1f}% of peak")
            line += f", {100 * achieved / peak:.1f}% of matmul peak"
        lines.append(line + ")")
        if args.device == "cpu":
            compare_with_jax(problem, trials, outcome.batched, outcome.engine_rps, workload)
        print(f"{workload}: against the optarena.optim loop {outcome.engine_rps / outcome.optarena_loop_rps:.1f}x "
              f"(loop {outcome.optarena_loop_rps:.2f} runs/s, max final-loss diff {outcome.optarena_diff:.1e}); "
              f"the torch.optim loop is {outcome.loop_rps / outcome.optarena_loop_rps:.2f}x the optarena.optim loop")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
