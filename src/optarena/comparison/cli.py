"""``optarena compare FILE.py``: its options, and the run that prints where the report is."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from pathlib import Path

from optarena import console, tuning
from optarena.comparison.api import OPTIMIZERS, check_settings, check_tune, make_setup, problem_from_file, resolve_optimizers, run_comparison
from optarena.comparison.problem_file import load_problem_file
from optarena.comparison.result import hparams_text
from optarena.problems.user import UserCodeError, user_traceback
from optarena.rules import CONVENTIONS
from optarena.store import Store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `optarena compare FILE.py`."""
    parser.add_argument("file", metavar="FILE.py", help="problem file defining model(), data() and optionally loss(), batch_size, steps")
    parser.add_argument("--optimizers", default="all", help=f"comma-separated names, 'article' (the article's eight), 'contenders' or 'all' (both; default); valid: {', '.join(OPTIMIZERS)}")
    parser.add_argument("--budget", type=int, default=8, help="tuning runs per optimizer (default 8)")
    parser.add_argument("--seeds", type=int, default=3, help="reruns of the chosen setting and the defaults (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default: the file's steps, else 500)")
    parser.add_argument("--convention", choices=CONVENTIONS, default="article", help="the optimizers' formulas and defaults")
    parser.add_argument("--method", choices=tuning.METHODS, default="tpe", help="tuning search (default tpe)")
    parser.add_argument("--tune", default="", help="hyperparameters tuned besides lr in the same budget, e.g. "
                        "weight_decay,momentum or weight_decay,betas (each optimizer tunes those it has)")
    parser.add_argument("--schedule", default="constant", choices=("constant", "warmup-linear", "warmup-cosine"),
                        help="learning-rate schedule for every optimizer (default constant)")
    parser.add_argument("--warmup", type=float, default=None, help="warmup fraction of the steps (default 0.05 with a schedule)")
    parser.add_argument("--clip-grad-norm", type=float, default=None, help="clip each run's gradient norm to this")
    parser.add_argument("--optuna-storage", default=None,
                        help="Optuna storage URL for TPE (e.g. sqlite:///tpe.db) so several drivers share one study")
    parser.add_argument("--store", default=None, help="results database, resumed if present (default OUT/optarena.sqlite)")
    parser.add_argument("--out", default=None, help="output folder (default results/compare-<file name>)")
    console.add_execution_arguments(parser, threads_default="auto")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    """Run `optarena compare`; 0 on success, 2 on bad input (one message on stderr, nothing written)."""
    file = str(args.file)
    try:
        names = resolve_optimizers(args.optimizers, args.convention)
        check_settings(args.budget, args.seeds, args.steps, args.method)
        threads = _parse_threads(args.threads)
        setup = make_setup(args.steps, args.schedule, args.warmup, args.clip_grad_norm)
        tune = check_tune(args.tune, names)
    except ValueError as e:
        return _fail(str(e))
    backend = console.backend_from(args)
    try:
        spec = load_problem_file(file)
        problem = problem_from_file(file, args.steps, args.device)
    except UserCodeError as e:
        return _fail(f"{file}: {e.message}", e.__cause__)
    out = Path(args.out) if args.out else Path("results") / f"compare-{spec.name}"
    store_path = Path(args.store) if args.store else out / "optarena.sqlite"
    factory = functools.partial(problem_from_file, str(Path(file).resolve()), args.steps, args.device)
    from optarena.files import check_writable_dir

    check_writable_dir(out.parent if not out.exists() else out)  # before any training
    if not store_path.parent.exists() or store_path.parent != out:
        check_writable_dir(store_path.parent, "--store")
    try:
        with Store(store_path) as store:
            steps = args.steps or spec.steps
            comparison = run_comparison(problem, names, args.budget, args.seeds, steps,
                                        args.convention, args.method, store, args.device, args.progress, threads,
                                        backend=backend, factory=factory, tune=tune,
                                        setup=dataclasses.replace(setup, steps=steps),
                                        optuna_storage=args.optuna_storage)
    finally:
        if hasattr(backend, "close"):
            backend.close()
    report = comparison.report(out)
    rec = comparison.recommendation
    print(f"recommendation: {rec if rec is None or isinstance(rec, str) else ', '.join(rec)}")
    print(comparison.reason)
    print(f"report: {report}")
    print(f"data:   {out / 'comparison.json'}")
    print(f"store:  {store_path}")
    failed = comparison.failed_runs()
    runs = sum(row["runs"] for row in comparison.table())
    if runs and len(failed) == runs:
        # Nothing trained: the report says so, and so does the exit code (1), with the first error.
        raise console.RunFailed(f"every one of the {runs} runs failed; the first error: {failed[0]['error']} "
                                f"({failed[0]['optimizer']} {compare_hparams(failed[0]['hparams'])}, seed "
                                f"{failed[0]['seed']}); the report has the traceback")
    return 0


def compare_hparams(h: dict[str, float]) -> str:
    return hparams_text(h) if h else "defaults"


def _parse_threads(value: str | int | None) -> int | str | None:
    if value is None or value == "auto" or isinstance(value, int):
        return value
    if str(value).isdigit() and int(value) >= 1:
        return int(value)
    raise ValueError(f"--threads must be 'auto' or an integer >= 1, got {value!r}")


def _fail(message: str, cause: BaseException | None = None) -> int:
    print(f"optarena compare: error: {message}", file=sys.stderr)
    trace = user_traceback(cause) if cause is not None else ""
    if trace:
        print("\n" + trace.rstrip(), file=sys.stderr)
    return 2
