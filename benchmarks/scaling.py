"""How the engine's cost grows: runs/s and peak memory as the runs per call grow, and step time as
the model grows (issue 14, item 5).

Every measurement runs in a fresh Python process (so that its peak resident memory is its own):
``engine.run`` on R trials of one problem, one torch thread. Printed per row:

- runs/s: R / wall time of ``engine.run`` (training and the 21 evaluations of every run);
- per run: the wall time divided by R and by the steps (µs per run-step, evaluation included);
- peak RSS: the process's maximum resident set (``ru_maxrss``), and how much of it came during
  ``engine.run`` (above what the process held with the problem built);
- stacks: how many parts ``engine.runs_per_stack`` split the R runs into (the engine's own memory
  bound, `engine.MEMORY_BUDGET`).

Workloads:
- ``digits_mlp`` (4,810 weights per run), Adam (article), learning rates spread over 10^[-3.5,-1.5],
  seeds 0-4;
- ``sparse_ctr`` (1,048,577 weights per run), AdaGrad (article: only the columns a minibatch
  reaches are updated) and Adam (article: a dense update of every weight, a block of runs at a
  time);
- model size: digits_mlp with hidden 64 ... 4,096 at R = 64, 20 steps: the time of one training step
  of the stack (loss, gradient, update; the engine's own per-step clock, `RunResult.step_time`).

    python benchmarks/scaling.py                 # the tables of benchmarks/README.md (~15 min)
    python benchmarks/scaling.py --quick         # R = 1 and 8, fewer steps: the smoke test (~20 s)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _child(spec: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from optarena import engine, problems
    from optarena.trial import Trial

    problem = problems.get(spec["problem"], **spec.get("options", {}))
    R, steps = spec["runs"], spec["steps"]
    low, high = spec["lr"]
    trials = [Trial(spec["problem"], spec["optimizer"], "article",
                    {"lr": low * (high / low) ** (i / max(1, R - 1))}, i % 5, steps) for i in range(R)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    results = engine.run(problem, trials)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    done = sum(r.status == "done" for r in results)
    # the engine's own clock of a training step (loss, gradient, update; evaluation excluded), per run-step
    times = [r.step_time for r in results if r.step_time]
    step = sum(t["model"] + t["update"] for t in times) / len(times) * R * 1e3 if times else None
    return {"wall": wall, "peak_mb": peak / 1024, "added_mb": (peak - before) / 1024, "done": done,
            "stacks": -(-R // engine.runs_per_stack(problem)), "step_ms": step,
            "weights": sum(v[0].numel() for v in problem.init_params(torch.tensor([0])).values())}


def _measure(spec: dict, timeout: float) -> dict:
    try:
        done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _runs_table(title: str, base: dict, runs: list[int], timeout: float) -> None:
    print(f"\n{title}\n")
    print("| runs R | stacks | runs/s | µs per run-step | peak RSS (MB) | added in engine.run (MB) | done |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for R in runs:
        m = _measure({**base, "runs": R}, timeout)
        if "error" in m:
            print(f"| {R} | | | | | | {m['error']} |", flush=True)
            continue
        per = m["wall"] / (R * base["steps"]) * 1e6
        print(f"| {R:,} | {m['stacks']} | {R / m['wall']:.2f} | {per:.0f} | {m['peak_mb']:,.0f} | "
              f"{m['added_mb']:,.0f} | {m['done']}/{R} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="R = 1 and 8, fewer steps (a smoke run)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    parser.add_argument("--tables", choices=("all", "runs", "sizes"), default="all",
                        help="the tables over runs, the model-size table, or both")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    runs = [1, 8] if args.quick else [1, 8, 64, 400, 2000]
    mlp_steps, ctr_steps = (20, 10) if args.quick else (200, 100)
    print("torch threads 1; one process per row; engine.MEMORY_BUDGET 4 GiB")
    if args.tables in ("all", "runs"):
        _runs_tables(runs, mlp_steps, ctr_steps, args)
    if args.tables in ("all", "sizes"):
        _sizes_table(args)


def _runs_tables(runs: list[int], mlp_steps: int, ctr_steps: int, args) -> None:
    print(f"steps: digits_mlp {mlp_steps}, sparse_ctr {ctr_steps} (21 evaluations each)")
    _runs_table(f"digits_mlp, Adam, {mlp_steps} steps",
                {"problem": "digits_mlp", "optimizer": "adam", "lr": [3e-4, 3e-2], "steps": mlp_steps}, runs, args.timeout)
    _runs_table(f"sparse_ctr, AdaGrad (only the columns a minibatch reaches are updated), {ctr_steps} steps",
                {"problem": "sparse_ctr", "optimizer": "adagrad", "lr": [0.03, 1.0], "steps": ctr_steps}, runs, args.timeout)
    _runs_table(f"sparse_ctr, Adam (every weight updated every step), {ctr_steps} steps",
                {"problem": "sparse_ctr", "optimizer": "adam", "lr": [1e-3, 1e-1], "steps": ctr_steps},
                runs[:3], args.timeout)


def _sizes_table(args) -> None:
    print("\ndigits_mlp, model size at R = 64 (one training step of the stack: loss, gradient, Adam update)\n")
    print("| hidden | weights per run | ms per step (64 runs) | µs per run-step |")
    print("|---:|---:|---:|---:|")
    for hidden in ([64] if args.quick else [64, 256, 1024, 4096]):
        m = _measure({"problem": "digits_mlp", "options": {"hidden": hidden}, "optimizer": "adam", "lr": [1e-3, 1e-3],
                      "steps": 20, "runs": 64}, args.timeout)
        if "error" in m:
            print(f"| {hidden} | | | {m['error']} |", flush=True)
            continue
        print(f"| {hidden:,} | {m['weights']:,} | {m['step_ms']:.2f} | {m['step_ms'] / 64 * 1e3:.0f} |", flush=True)


if __name__ == "__main__":
    main()
