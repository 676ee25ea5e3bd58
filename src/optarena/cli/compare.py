"""`optarena compare FILE.py`: the fair comparison of the optimizers on a user's own model."""

from __future__ import annotations

import argparse

from optarena import console


def add_parser(sub) -> None:
    from optarena import comparison

    p = sub.add_parser("compare", help="tuned, equal-budget comparison of optimizers on your own model")
    comparison.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from optarena import comparison

    return comparison.main(args)
