"""Per-step cost of each optimizer in the engine relative to Adam: 8 runs of digits_mlp (pytorch
convention where it exists, else article), 50 steps, the engine's own per-run step timings
(``RunResult.step_time``: model and update seconds per step, timed in the batch).

    python benchmarks/contender_cost.py [--runs 8] [--steps 50] [--problem digits_mlp]
"""

from __future__ import annotations

import argparse

import torch

from optarena import engine, problems, rules
from optarena.trial import Trial


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--problem", default="digits_mlp")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    p = problems.get(args.problem)
    cost = {}
    for o in rules.names(("article", "contender")):
        conv = "pytorch" if rules.has_convention(o, "pytorch") else "article"
        trials = [Trial(args.problem, o, conv, {}, s, args.steps) for s in range(args.runs)]
        engine.run(p, trials[:1])  # warm-up
        results = engine.run(p, trials)
        per_step = [sum(r.step_time.get(k, 0.0) for k in ("model", "update")) for r in results]
        cost[o] = (conv, sum(per_step) / len(per_step), sum(r.step_time.get("update", 0.0) for r in results) / len(results))
    adam = cost["adam"][1]
    print(f"{args.problem}, {args.runs} runs x {args.steps} steps, 1 thread; ms per run-step (model + update), "
          "update alone, and total relative to Adam")
    for o, (conv, total, update) in cost.items():
        print(f"{o:20s} {conv:8s} {1e3 * total:8.3f} ms  update {1e3 * update:8.3f} ms  {total / adam:6.2f}x Adam")


if __name__ == "__main__":
    main()
