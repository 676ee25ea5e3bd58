"""Step speed per problem: parameters per run and the wall time of one 300-step run, engine and loop.

For every problem in ``optarena.problems.names()``: one trial (Adam, article defaults, seed 0),
``engine.run`` on it alone and ``engine.run_sequential`` (the plain optarena.optim loop) on it, in this
process, one after the other, after a 2-step warm-up of each. Times include the problem's 21
evaluations over its training and held-out splits. Prints a Markdown table.

    python benchmarks/step_speed.py [--steps 300] [--threads 1] [--problems a,b,...]
"""

from __future__ import annotations

import argparse
import time

import torch

from optarena import engine, problems
from optarena.trial import Trial


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--problems", default=",".join(problems.names()))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); Adam (article defaults), seed 0, {args.steps} steps")
    print("| problem | parameters per run | batch | engine.run, 1 trial (s) | loop (s) | status |")
    print("|---|---:|---:|---:|---:|---|")
    for name in args.problems.split(","):
        problem = problems.get(name)
        size = sum(v[0].numel() for v in problem.init_params(torch.tensor([0])).values())
        trial = Trial(name, "adam", "article", {}, 0, args.steps)
        warm = Trial(name, "adam", "article", {}, 0, 2)
        engine.run(problem, [warm])
        engine.run_sequential(problem, [warm])
        started = time.perf_counter()
        result = engine.run(problem, [trial])[0]
        batched = time.perf_counter() - started
        started = time.perf_counter()
        engine.run_sequential(problem, [trial])
        loop = time.perf_counter() - started
        print(f"| {name} | {size:,} | {problem.batch_size or '-'} | {batched:.2f} | {loop:.2f} | {result.status} |", flush=True)


if __name__ == "__main__":
    main()
