"""``morphsearch db upgrade --db URL``: create or upgrade the lineage schema."""

from __future__ import annotations

import argparse
from typing import Any

DB_HELP = "database URL (default: $MORPHSEARCH_DB, else sqlite:///morphsearch.db)"


def register(subparsers: Any) -> None:
    db = subparsers.add_parser("db", help="manage the lineage database")
    commands = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    upgrade = commands.add_parser(
        "upgrade", help="create the lineage schema, or upgrade it to this version of morphsearch"
    )
    upgrade.add_argument("--db", default=None, metavar="URL", help=DB_HELP)
    upgrade.set_defaults(func=_upgrade)


def _upgrade(args: argparse.Namespace) -> int:
    from morphsearch.lineage import (  # deferred: CLI start-up (sqlalchemy)
        resolve_url,
        safe_url,
        upgrade,
    )

    url = resolve_url(args.db)
    revision = upgrade(url)
    print(f"lineage database {safe_url(url)} is at schema {revision}")
    return 0
