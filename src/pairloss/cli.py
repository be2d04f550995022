"""The ``pairloss`` command."""

from __future__ import annotations

import argparse
import sys

from .catalogue import LOSSES


def _losses(args: argparse.Namespace) -> int:
    rows = [(e.name, e.family, e.formula, e.paper) for e in LOSSES]
    if args.family:
        rows = [r for r in rows if args.family in r[1]]
    widths = [
        max(len(r[i]) for r in rows + [("name", "family", "formula", "paper")]) for i in range(3)
    ]
    header = ("name", "family", "formula", "paper")
    for row in [header, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(row[:3], widths)) + "  " + row[3])
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pairloss`` command."""
    parser = argparse.ArgumentParser(prog="pairloss", description="Pair-based losses.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("losses", help="list the losses with family, formula and paper")
    p.add_argument("--family", default=None, help="only losses whose family contains this")
    p.set_defaults(func=_losses)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pairloss`` command."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
