"""Schema versions: check them on open, create or upgrade them with Alembic.

The version check reads the ``alembic_version`` table directly and compares it to
:data:`REVISIONS`, so read-only queries never import Alembic. A test keeps
:data:`REVISIONS` equal to the migration scripts' history.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from morphsearch.errors import DatabaseError, SchemaOutdated
from morphsearch.lineage.database import Database

if TYPE_CHECKING:  # pragma: no cover
    from alembic.config import Config

__all__ = [
    "HEAD_REVISION",
    "MIGRATIONS_DIR",
    "REVISIONS",
    "alembic_config",
    "check_schema",
    "refuse",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# oldest first; the last one is what this code reads and writes
REVISIONS = ("0001_initial", "0002_growth_events", "0003_metrics_evaluation")
HEAD_REVISION = REVISIONS[-1]
# arbitrary constant: PostgreSQL advisory lock serialising concurrent first opens
_PG_MIGRATION_LOCK = 0x6D6F7270  # "morp"

EMPTY = "<empty>"


def upgrade_command(db: Database) -> str:
    """The exact command that brings ``db`` to the current schema (no password)."""
    return f"morphsearch db upgrade --db {db.display_url}"


def read_revision(connection: Connection) -> str | None:
    """The stored schema revision, :data:`EMPTY` for a database with no tables.

    Returns ``None`` for a database that has tables but no Alembic version (not ours).
    """
    tables = set(inspect(connection).get_table_names())
    if not tables:
        return EMPTY
    if "alembic_version" not in tables:
        return None
    row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
    return EMPTY if row is None else str(row[0])


def check_schema(db: Database) -> None:
    """Make sure ``db`` holds the current schema; create it if empty and writable.

    Raises:
        SchemaOutdated: the schema is older than the code, or missing on a read-only
            open (the message gives the ``morphsearch db upgrade`` command).
        DatabaseError: the schema is newer than the code, or the database is not a
            morphsearch lineage database.
    """
    try:
        connection = db.engine.connect()
    except SQLAlchemyError as exc:
        raise db.translate(exc, connecting=True) from exc
    with connection:
        revision = read_revision(connection)
        connection.rollback()
    if revision == HEAD_REVISION:
        return
    if revision == EMPTY:
        if db.write:
            upgrade(db)
            return
        raise SchemaOutdated(
            f"lineage database {db.display_url} has no morphsearch schema yet; "
            f"create it with: {upgrade_command(db)}"
        )
    refuse(db, revision)


def refuse(db: Database, revision: str | None) -> None:
    if revision is None:
        raise DatabaseError(
            f"{db.display_url} has tables but is not a morphsearch lineage database "
            "(no alembic_version table); point --db at another database"
        )
    if revision in REVISIONS:
        raise SchemaOutdated(
            f"lineage database {db.display_url} has schema {revision}, older than this "
            f"morphsearch ({HEAD_REVISION}); upgrade it with: {upgrade_command(db)}"
        )
    raise DatabaseError(
        f"lineage database {db.display_url} has schema {revision}, newer than this "
        f"morphsearch ({HEAD_REVISION}); upgrade morphsearch"
    )


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing inside the installed package (no alembic.ini needed).

    Args:
        connection: run migrations on this connection, inside its transaction.
    """
    from alembic.config import Config  # Alembic only when migrating

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def upgrade(db: Database, revision: str = "head") -> str:
    """Upgrade ``db`` to ``revision`` in one transaction; safe to run concurrently.

    Concurrent first opens are serialised (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL:
    an advisory transaction lock), and a second upgrade to the same revision is a
    no-op, so eight workers opening an empty database create the schema once.

    Returns:
        The revision the database is at afterwards.

    Raises:
        DatabaseError: the migration failed; nothing was changed.
    """
    from alembic import command

    if not db.write:
        raise DatabaseError("internal: upgrade needs a database opened for writing")
    try:
        with db.engine.begin() as connection:
            if db.backend == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
            _refuse_foreign(db, connection)
            command.upgrade(alembic_config(connection), revision)
            return str(read_revision(connection))
    except DatabaseError:
        raise
    except SQLAlchemyError as exc:
        raise db.translate(exc) from exc


def _refuse_foreign(db: Database, connection: Connection) -> None:
    revision = read_revision(connection)
    if revision is None or (revision != EMPTY and revision not in REVISIONS):
        refuse(db, revision)
