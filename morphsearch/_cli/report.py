"""``morphsearch report``: one self-contained HTML page about a search."""

from __future__ import annotations

import argparse
from typing import Any

from morphsearch._cli.db import DB_HELP


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write an HTML report of a search (tree, Pareto front, best architectures)",
        description="Write one self-contained HTML page (pictures embedded) about a search.",
    )
    parser.add_argument("--db", default=None, metavar="URL", help=DB_HELP)
    parser.add_argument("--search", metavar="NAME", help="search name (default: the only one)")
    parser.add_argument("--metric", help="rank by this metric (default: the config's)")
    parser.add_argument("--mode", choices=("max", "min"), default=None)
    parser.add_argument("--top", type=int, default=5, metavar="K", help="best architectures listed")
    parser.add_argument("--out", default="report.html", metavar="FILE", help="the .html to write")
    parser.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from morphsearch.report import write_report  # deferred: CLI start-up (sqlalchemy, matplotlib)

    path = write_report(
        args.out, db=args.db, search=args.search, metric=args.metric, mode=args.mode, top=args.top
    )
    print(f"wrote {path}")
    return 0
