"""The `optarena` command: optimizers | claims | report | trajectories | compare.

Errors go to stderr with exit 2 (usage, input) or 1 (a run failed); Ctrl-C exits 130 with one
line (see ``optarena.console``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.table import Table

from optarena import console
from optarena.cli import claims as claims_command
from optarena.cli import compare as compare_command


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
    console.stdout.print(table)
    for convention, source in rules.SOURCES.items():
        console.stdout.print(f"[bold]{convention}[/]: {source}")
    console.stdout.print("Every optimizer also takes decoupled_weight_decay (default 0): w -= lr*wd*w before its update.")
    return 0


def _trajectories(args: argparse.Namespace) -> int:
    """The 2-D paths of every optimizer on Rosenbrock and the narrow valley, as PNG files."""
    from optarena.claims import trajectories
    from optarena.report import render
    from optarena.store import Store
    from optarena.study import execute

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with console.threads(args.threads), Store(Path(args.store) if args.store else out / "optarena.sqlite") as store:
        for study in trajectories.design(quick=True):
            path = out / f"trajectories-{study.problem}.png"
            path.write_bytes(render(trajectories.plot(execute(study, store))))
            console.stdout.print(f"{study.problem}: {path.resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = console.Parser(prog="optarena", description="The article's optimizers, exactly, and the experiments that test its claims.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("optimizers", help="table of optimizers x conventions with defaults, update rules and search spaces")
    p.set_defaults(func=_optimizers)
    claims_command.add_parsers(sub)
    p = sub.add_parser("trajectories", help="2-D paths of every optimizer on Rosenbrock and the narrow valley (PNG)")
    p.add_argument("--out", default="results", help="directory for the PNG files")
    p.add_argument("--store", default=None, help="results database (default OUT/optarena.sqlite)")
    p.add_argument("--threads", type=console.threads_option, default=1, help="torch CPU threads")
    p.set_defaults(func=_trajectories)
    compare_command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return console.run_command(args.command, lambda: args.func(args), getattr(args, "on_interrupt", None))


if __name__ == "__main__":
    sys.exit(main())
