"""The `optarena` command: optimizers | claims | report | trajectories | compare."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console()

VERDICT_STYLE = {"supported": "green", "contradicted": "red", "inconclusive": "yellow"}


def _optimizers(args: argparse.Namespace) -> int:
    from optarena import rules

    table = Table(title="optarena optimizers: conventions, defaults, update rules and search spaces", show_lines=True)
    for column in ("optimizer", "convention", "defaults", "update rule", "tuned besides lr"):
        table.add_column(column, overflow="fold")
    for name, entry in rules.entries().items():
        space = ", ".join(f"{k} in [{d.low:g}, {d.high:g}]{' (log)' if d.log else ''}" for k, d in entry.search.items())
        for convention in rules.CONVENTIONS:
            if convention in entry.conventions:
                conv = entry.conventions[convention]
                defaults = ", ".join(f"{k}={v}" for k, v in conv.defaults.items())
                formula = conv.formula + (f"  [{conv.source}]" if conv.source else "")
            else:
                defaults, formula = f"none: {entry.absent.get(convention, 'not defined')}", ""
            table.add_row(f"{name} ({entry.family})", convention, defaults, formula, space or "-")
    console.print(table)
    for convention, source in rules.SOURCES.items():
        console.print(f"[bold]{convention}[/]: {source}")
    console.print("Every optimizer also takes decoupled_weight_decay (default 0): w -= lr*wd*w before its update.")
    return 0


def _check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but torch sees no CUDA device; use --device cpu")


def _set_threads(threads: int) -> None:
    import torch

    if threads < 1:
        raise SystemExit(f"error: --threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("runs"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


def _print_verdicts(verdicts) -> None:
    # One line per claim at any width: the numbers keep their width, the claim text takes the rest.
    rows = [
        (v.id, v.verdict, f"{v.effect:.3g}", f"[{v.ci95[0]:.3g}, {v.ci95[1]:.3g}]", v.claim_en) for v in verdicts
    ]
    widths = [max([len(header)] + [len(r[i]) for r in rows]) for i, header in enumerate(("id", "verdict", "effect", "95% CI"))]
    claim_width = max(10, console.width - sum(widths) - 3 * 5 - 1)
    table = Table(title="The article's claims, tested")
    for header, width in zip(("id", "verdict", "effect", "95% CI"), widths):
        table.add_column(header, no_wrap=True, min_width=width)
    table.add_column("claim", no_wrap=True, overflow="ellipsis", max_width=claim_width)
    for identifier, verdict, effect, ci, claim in rows:
        style = VERDICT_STYLE.get(verdict, "")
        table.add_row(identifier, f"[{style}]{verdict}[/]", effect, escape(ci), escape(claim))
    console.print(table)


def _claims(args: argparse.Namespace, train: bool = True) -> int:
    from optarena import claims
    from optarena.claims.runner import plan, run_claims, write_outputs
    from optarena.store import Store

    _check_device(args.device)
    _set_threads(args.threads)
    try:
        ids = claims.parse_ids(args.only)
    except ValueError as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    quick = not args.full
    out = Path(args.out)
    store_path = Path(args.store) if args.store else out / "optarena.sqlite"
    if not train and not store_path.exists():
        console.print(f"[red]error:[/] no store at {store_path}; run `optarena claims` first")
        return 2
    store = Store(store_path)
    modules = claims.load(ids)
    studies, total = plan(modules, quick)
    if not train:
        missing = sum(len(store.missing(list(s.fixed))) for s in studies if s.fixed)
        if missing:
            console.print(f"[red]error:[/] the store lacks {missing} runs of this study; run `optarena claims` to make them")
            return 2
    console.print(f"optarena claims ({'quick' if quick else 'full'} mode): {len(ids)} claims, about {total} runs; store {store_path}")
    with _progress() as progress:
        task = progress.add_task("runs", total=total or None)

        def advance(n: int) -> None:
            # A claim that runs its own experiments (R8) may make more runs than it declares.
            done = progress.tasks[task].completed + n
            progress.update(task, completed=done, total=max(done, progress.tasks[task].total or 0))

        verdicts, meta = run_claims(
            ids,
            quick,
            store,
            device=args.device,
            progress=advance,
            on_study=lambda name: progress.update(task, description=name),
        )
        progress.update(task, description="done")
    meta["store"] = str(store_path)
    path = write_outputs(verdicts, meta, out)
    _print_verdicts(verdicts)
    console.print(f"Report: {path.resolve()}")
    console.print(f"Verdicts: {(out / 'verdicts.json').resolve()}")
    return 0


def _trajectories(args: argparse.Namespace) -> int:
    """The 2-D paths of all eight optimizers on Rosenbrock and the narrow valley, as PNG files."""
    from optarena.claims import trajectories
    from optarena.report import render
    from optarena.store import Store
    from optarena.study import execute

    _set_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(Path(args.store) if args.store else out / "optarena.sqlite")
    for study in trajectories.design(quick=True):
        path = out / f"trajectories-{study.problem}.png"
        path.write_bytes(render(trajectories.plot(execute(study, store))))
        console.print(f"{study.problem}: {path.resolve()}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from optarena import comparison

    return comparison.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="optarena", description="The article's optimizers, exactly, and the experiments that test its claims.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("optimizers", help="table of optimizers x conventions with defaults and update rules")
    p.set_defaults(func=_optimizers)

    for name, helptext, train in (
        ("claims", "run the claims study (resumes from --store) and write the report", True),
        ("report", "rebuild the claims report from a complete store, without training", False),
    ):
        p = sub.add_parser(name, help=helptext)
        mode = p.add_mutually_exclusive_group()
        mode.add_argument("--quick", action="store_true", help="small budgets, minutes (default)")
        mode.add_argument("--full", action="store_true", help="the DeepOBS-sized protocol, about an hour on 2 cores")
        p.add_argument("--store", default=None, help="results database (default OUT/optarena.sqlite)")
        p.add_argument("--out", default="results", help="directory for report.html and verdicts.json")
        p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
        p.add_argument("--only", default=None, help="comma-separated claim ids, e.g. R1,M2")
        p.add_argument(
            "--threads", type=int, default=1,
            help="torch CPU threads (default 1: the studies' models are small, and a second thread "
            "costs more in synchronisation than it gains)",
        )
        p.set_defaults(func=lambda a, train=train: _claims(a, train))

    p = sub.add_parser("trajectories", help="2-D paths of all eight optimizers on Rosenbrock and the narrow valley (PNG)")
    p.add_argument("--out", default="results", help="directory for the PNG files")
    p.add_argument("--store", default=None, help="results database (default OUT/optarena.sqlite)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.set_defaults(func=_trajectories)

    p = sub.add_parser("compare", help="tuned, equal-budget comparison of optimizers on your own model")
    from optarena import comparison

    comparison.add_arguments(p)
    p.set_defaults(func=_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
