"""The plain loop users write: one trial after another with ``optarena.optim`` (the reference).

`run_sequential` is what the batched engine (`optarena.engine.run`) must reproduce run by run
(tests/test_engine.py, to float tolerance, bitwise for a run alone), and a baseline of
benchmarks/sweep_throughput.py. It lives apart from the engine because it never produces the
stored results: the code fingerprint that keys them (`optarena.trial.RESULT_CODE`) covers the
engine, the rules, the problems and the schedules, so a change here does not invalidate a store.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Callable, Sequence

import torch
from torch import Tensor

from optarena import optim, schedules
from optarena.engine import _final_for_diverged, eval_points
from optarena.problems.base import Problem, seed_generator
from optarena.trial import RunResult, Trial


def run_sequential(problem: Problem, trials: Sequence[Trial], device: str | torch.device = "cpu",
                   make_optimizer: Callable[[Trial, list[Tensor]], torch.optim.Optimizer] | None = None,
                   check_every_step: bool = True) -> list[RunResult]:
    """The plain loop users write: one trial after another with ``optarena.optim`` (and
    ``LambdaLR`` for a schedule, ``clip_grad_norm_`` for clipping).

    The reference the engine is tested against, and a baseline of benchmarks/sweep_throughput.py.
    ``make_optimizer(trial, params)`` replaces ``optarena.optim`` (e.g. by torch.optim's fastest
    implementation); ``check_every_step=False`` drops the per-step host sync of the divergence
    check (``loss.item()``): divergence is then detected at the evaluation points only, as a
    competent user's loop would, and such a run stops there.
    """
    results = []
    for t in trials:
        started = time.perf_counter()
        seed = torch.tensor([t.seed])
        # The optimizer sees each parameter in its own shape (as in a user's model: Muon and SOAP act
        # on the matrix shape); the problem gets them with a run dimension of 1.
        leaves = {k: v[0].to(device).detach().requires_grad_(True) for k, v in problem.init_params(seed).items()}
        extra = {"buffers": problem.init_buffers(seed)} if hasattr(problem, "init_buffers") else {}
        opt = (optim.create(t.optimizer, leaves.values(), t.convention, **t.hparams) if make_optimizer is None
               else make_optimizer(t, list(leaves.values())))

        def as_runs() -> dict[str, torch.Tensor]:
            return {k: v.unsqueeze(0) for k, v in leaves.items()}
        scheduler = (None if t.schedule == "constant"
                     else torch.optim.lr_scheduler.LambdaLR(opt, schedules.lambda_lr(t.schedule, t.steps, t.warmup)))
        generator = seed_generator(t.seed, "batches")
        points = set(eval_points(t.steps))
        curve: dict[str, list[float]] = defaultdict(list)

        def evaluate(step):
            with torch.no_grad():
                if hasattr(opt, "eval"):
                    opt.eval()  # a no-op but for rules with an evaluation point (Schedule-Free)
                curve["step"].append(float(step))
                for k, v in problem.evaluate(as_runs(), **extra).items():
                    curve[k].append(float(v[0]))
                if hasattr(opt, "train"):
                    opt.train()

        def bad(value: float) -> bool:
            return not (math.isfinite(value) and value <= problem.loss_bound)

        evaluate(0)
        status, diverged = "done", None
        for step in range(t.steps):
            batch = problem.batch(step, generator)
            if batch is not None:
                batch = tuple(b.to(device).unsqueeze(0) for b in batch)
            opt.zero_grad()
            loss = problem.loss(as_runs(), batch, **extra).sum()
            if check_every_step and bad(loss.item()):
                status, diverged = "diverged", step + 1
                break
            loss.backward()
            if t.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(list(leaves.values()), t.clip_grad_norm)
            opt.step()
            if scheduler is not None:
                scheduler.step()
            if step + 1 in points:
                evaluate(step + 1)
                if not check_every_step and any(bad(v[-1]) for k, v in curve.items() if "loss" in k):
                    status, diverged = "diverged", step + 1
                    break
        final = {k: v[-1] for k, v in curve.items() if k != "step"}
        if status == "diverged":
            final = _final_for_diverged(final)
        results.append(RunResult(t, status, dict(curve), final, time.perf_counter() - started, diverged))
    return results
