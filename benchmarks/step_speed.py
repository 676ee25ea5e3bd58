"""Step speed per problem: parameters per run and the wall time of one 300-step run, engine and loop.

For every problem in ``optarena.problems.names()``: one trial (Adam, article defaults, seed 0),
``engine.run`` on it alone and ``loop.run_sequential`` (the plain optarena.optim loop) on it, in this
process, one after the other, after a 2-step warm-up of each. Times include the problem's 21
evaluations over its training and held-out splits. Prints a Markdown table.

    python benchmarks/step_speed.py [--steps 300] [--threads 1] [--problems a,b,...]

With ``--drop-ins``: the ms per ``opt.step()`` of the optarena.optim drop-ins against torch.optim's
for-loop, foreach and fused implementations of the same optimizer (pytorch convention; the others
measured against the same torch time), on three shapes (8M parameters in one tensor, 8M in 200,
50k in 100), float32, gradients fixed, median of ``--repeats`` steps after a 2-step warm-up;
``fused=True`` also with new gradient tensors before every step (as ``zero_grad()`` + backward give).
``--baseline FILE`` adds a column for another version of ``optim.py`` (e.g.
``git show HEAD~1:src/optarena/optim.py > /tmp/optim_before.py``), timed in the same run.

    python benchmarks/step_speed.py --drop-ins [--threads 1] [--optimizers adam,sgd] [--baseline FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import time

import torch

from optarena import engine, loop, optim, problems, rules
from optarena.trial import Trial

SHAPES = {"8M in one tensor": [8_000_000], "8M in 200 tensors": [40_000] * 200, "50k in 100 tensors": [500] * 100}
TORCH_CLASS = {"sgd": "SGD", "momentum": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam",
               "adamw": "AdamW", "adadelta": "Adadelta", "nadam": "NAdam"}
FUSED = ("SGD", "Adam", "AdamW", "Adagrad")


def _params(sizes: list[int]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = [(n // 100, 100) if n % 100 == 0 else (n,) for n in sizes]  # matrices, as Muon and SOAP need
    params = [torch.randn(s, generator=g).requires_grad_() for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-2
    return params


def _ms_per_step(makers: dict[str, tuple], sizes: list[int], repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms of ``opt.step()`` for each ``name: (make, new_grads)``, measured interleaved (one
    step of each in a shuffled order, `repeats` rounds), so that the machine's drift hits every column alike;
    and each one's first step in wall seconds (for fused=True: compiling, or loading the cache).
    The gradients stay the same tensors from step to step (as with ``zero_grad(set_to_none=False)``),
    or with `new_grads` are set to new tensors before each step, untimed (as backward after
    ``zero_grad()`` makes them: the flat storage of ``fused=True`` then copies them in)."""
    runs, first = {}, {}
    for name, (make, new_grads) in makers.items():
        params = _params(sizes)
        grads = [p.grad for p in params]
        opt = make(params)
        started = time.perf_counter()
        opt.step()
        first[name] = time.perf_counter() - started
        opt.step()
        runs[name] = (opt, params, grads, new_grads, [])
    order = list(runs.values())
    shuffle = random.Random(0).shuffle
    for _ in range(repeats):
        shuffle(order)  # a new order each round: no column always follows the same one (its cache footprint)
        for opt, params, grads, new_grads, times in order:
            if new_grads:
                for p, g in zip(params, grads):
                    p.grad = g
            started = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - started)
    return {name: 1e3 * statistics.median(r[4]) for name, r in runs.items()}, first


def drop_ins(args) -> None:
    baseline = None
    if args.baseline:
        spec = importlib.util.spec_from_file_location("optim_baseline", args.baseline)
        baseline = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(baseline)
    names = args.optimizers.split(",") if args.optimizers else list(optim.OPTIMIZERS)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); ms per step(), float32, "
          f"median of {args.repeats}")
    header = "| parameters | optimizer | convention | optarena |" + (" baseline |" if baseline else "")
    print(header + " optarena fused=True | its first step (s) | fused=True, new grads | torch for-loop | torch foreach |"
          " torch fused | optarena fused / torch's fastest | new grads / torch's fastest |")
    print("|---|---|---|---:|" + ("---:|" if baseline else "") + "---:|---:|---:|---:|---:|---:|---:|---:|")
    shapes = args.shapes.split(",") if args.shapes else list(SHAPES)
    for shape, sizes in ((k, SHAPES[k]) for k in shapes):
        for name in names:
            conventions = [c for c in ("pytorch", "article", "keras") if c in rules.entry(name).conventions]
            kwargs = {"momentum": 0.9} if name in ("sgd", "momentum") else {}  # torch's momentum is SGD's
            for convention in conventions:
                ours_kwargs = {k: v for k, v in kwargs.items() if k in rules.defaults(name, convention)}
                makers = {"ours": (lambda ps: optim.create(name, ps, convention, **ours_kwargs), False)}
                if baseline:
                    makers["baseline"] = (lambda ps: baseline.create(name, ps, convention, **ours_kwargs), False)
                elementwise = rules.entry(name).conventions[convention].rule.elementwise
                if elementwise:
                    fused = lambda ps: optim.create(name, ps, convention, fused=True, **ours_kwargs)  # noqa: E731
                    makers |= {"fused": (fused, False), "fresh": (fused, True)}
                if name in TORCH_CLASS:  # torch's paths beside ours, with the same options
                    klass = getattr(torch.optim, TORCH_CLASS[name])
                    paths = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}}
                    if TORCH_CLASS[name] in FUSED:
                        paths["fused"] = {"fused": True}
                    for path, flag in paths.items():
                        makers[f"torch {path}"] = (lambda ps, flag=flag: klass(ps, **flag, **ours_kwargs), False)
                try:
                    ms, first = _ms_per_step(makers, sizes, args.repeats)
                except ValueError as e:  # e.g. a matrix rule on a shape it refuses
                    print(f"| {shape} | {name} | {convention} | {e} |")
                    continue
                row = f"| {shape} | {name}{' m=0.9' if ours_kwargs else ''} | {convention} | {ms['ours']:.2f} |"
                if baseline:
                    row += f" {ms['baseline']:.2f} |"
                if elementwise:
                    fast, fresh = ms["fused"], ms["fresh"]
                    row += f" {fast:.2f} | {first['fused']:.1f} | {fresh:.2f} |"
                else:
                    fast = fresh = ms["ours"]
                    row += " - | - | - |"
                torch_times = {p: ms[f"torch {p}"] for p in ("for-loop", "foreach", "fused") if f"torch {p}" in ms}
                fastest = min(torch_times.values()) if torch_times else None
                cells = [f"{torch_times[p]:.2f}" if p in torch_times else "-" for p in ("for-loop", "foreach", "fused")]
                ratio = f"{fast / fastest:.2f}x" if fastest else "-"
                ratio_new = f"{fresh / fastest:.2f}x" if fastest else "-"
                print(row + " " + " | ".join(cells) + f" | {ratio} | {ratio_new} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--problems", default=",".join(problems.names()))
    parser.add_argument("--drop-ins", action="store_true", help="time optarena.optim against torch.optim per step")
    parser.add_argument("--optimizers", default="", help="with --drop-ins: a,b,... (default: all)")
    parser.add_argument("--shapes", default="", help=f"with --drop-ins: some of {', '.join(SHAPES)} (comma-separated)")
    parser.add_argument("--repeats", type=int, default=7, help="with --drop-ins: steps timed per cell")
    parser.add_argument("--baseline", default="", help="with --drop-ins: another optim.py to time alongside")
    args = parser.parse_args(argv)
    unknown = [k for k in args.shapes.split(",") if k and k not in SHAPES]
    if unknown:
        parser.error(f"unknown shape(s) {unknown}; choose from {list(SHAPES)}")
    torch.set_num_threads(args.threads)
    if args.drop_ins:
        drop_ins(args)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); Adam (article defaults), seed 0, {args.steps} steps")
    print("| problem | parameters per run | batch | engine.run, 1 trial (s) | loop (s) | status |")
    print("|---|---:|---:|---:|---:|---|")
    for name in args.problems.split(","):
        problem = problems.get(name)
        size = sum(v[0].numel() for v in problem.init_params(torch.tensor([0])).values())
        trial = Trial(name, "adam", "article", {}, 0, args.steps)
        warm = Trial(name, "adam", "article", {}, 0, 2)
        engine.run(problem, [warm])
        loop.run_sequential(problem, [warm])
        started = time.perf_counter()
        result = engine.run(problem, [trial])[0]
        batched = time.perf_counter() - started
        started = time.perf_counter()
        loop.run_sequential(problem, [trial])
        looped = time.perf_counter() - started
        print(f"| {name} | {size:,} | {problem.batch_size or '-'} | {batched:.2f} | {looped:.2f} | {result.status} |", flush=True)


if __name__ == "__main__":
    main()
