"""`optarena claims` (run what the claims need, then write the report) and `optarena report`
(render the report from the store alone; never trains)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from optarena import console

VERDICT_STYLE = {"supported": "green", "contradicted": "red", "inconclusive": "yellow"}


def add_parsers(sub) -> None:
    for name, helptext, train in (
        ("claims", "run the claims study (resumes from --store) and write the report", True),
        ("report", "rebuild the claims report from the store alone, without training", False),
    ):
        p = sub.add_parser(name, help=helptext)
        mode = p.add_mutually_exclusive_group()
        mode.add_argument("--quick", action="store_true", help="small budgets, minutes (default)")
        mode.add_argument("--full", action="store_true", help="the full protocol, about an hour on 2 cores")
        p.add_argument("--store", default=None, help="results database (default OUT/optarena.sqlite)")
        p.add_argument("--out", default="results", help="directory for report.html and verdicts.json")
        p.add_argument("--only", default=None, help="comma-separated claim ids, e.g. R1,M2")
        console.add_execution_arguments(
            p, threads_default="1")  # the studies' models are small: a second thread costs more than it gains
        p.set_defaults(func=lambda a, train=train: run(a, train))


def _print_verdicts(verdicts) -> None:
    # One line per claim at any width: the numbers keep their width, the claim text takes the rest.
    out = console.stdout
    rows = [
        (v.id, v.verdict, f"{v.effect:.3g}", f"[{v.ci95[0]:.3g}, {v.ci95[1]:.3g}]", v.claim_en) for v in verdicts
    ]
    widths = [max([len(header)] + [len(r[i]) for r in rows]) for i, header in enumerate(("id", "verdict", "effect", "95% CI"))]
    claim_width = max(10, out.width - sum(widths) - 3 * 5 - 1)
    table = Table(title="The article's claims, tested")
    for header, width in zip(("id", "verdict", "effect", "95% CI"), widths):
        table.add_column(header, no_wrap=True, min_width=width)
    table.add_column("claim", no_wrap=True, overflow="ellipsis", max_width=claim_width)
    for identifier, verdict, effect, ci, claim in rows:
        style = VERDICT_STYLE.get(verdict, "")
        table.add_row(identifier, f"[{style}]{verdict}[/]", effect, escape(ci), escape(claim))
    out.print(table)


def run(args: argparse.Namespace, train: bool = True) -> int:
    from optarena import claims
    from optarena.store import Store
    from optarena.study import MissingRuns
    from optarena.verdicts import plan, run_claims, write_outputs

    command = "claims" if train else "report"
    try:
        ids = claims.parse_ids(args.only)
    except ValueError as e:
        raise console.UsageError(str(e)) from None
    quick = not args.full
    out = Path(args.out)
    store_path = Path(args.store) if args.store else out / "optarena.sqlite"
    if not train and not store_path.exists():
        raise console.UsageError(f"no store at {store_path}; run `optarena claims` first")
    from optarena.files import check_writable_dir

    check_writable_dir(out)  # before any training: a bad --out costs nothing
    if store_path.parent != out:
        check_writable_dir(store_path.parent, "--store")
    backend = console.backend_from(args) if train else None
    store = Store(store_path)
    args.on_interrupt = lambda: f"interrupted; {len(store)} runs stored in {store_path}, rerun to resume"
    modules = claims.load(ids)
    studies, total = plan(modules, quick)
    console.stdout.print(f"optarena {command} ({'quick' if quick else 'full'} mode): {len(ids)} claims, about {total} runs; "
                         f"store {store_path}", soft_wrap=True)
    try:
        with console.threads(args.threads), console.progress(total if train else 0, "runs", enabled=train) as advance:
            verdicts, meta = run_claims(ids, quick, store, device=args.device, progress=advance,
                                        on_study=getattr(advance, "describe", None), backend=backend,
                                        stored_only=not train)
    except MissingRuns as e:  # only `report` (stored_only): it never trains
        mode = "" if quick else " --full"
        raise console.RunFailed(f"{e}; nothing was trained or written: run `optarena claims{mode} --store {store_path}` "
                                "to train what is missing") from None
    meta["store"] = str(store_path)
    path = write_outputs(verdicts, meta, out)
    _print_verdicts(verdicts)
    console.stdout.print(f"Report: {path.resolve()}")
    console.stdout.print(f"Verdicts: {(out / 'verdicts.json').resolve()}")
    return 0
