"""Small SQL helpers shared by the writes and the queries (backend differences live here)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, overload

from sqlalchemy import select
from sqlalchemy.orm import Session

from morphsearch.errors import NotFound
from morphsearch.lineage.models import Architecture, Search

__all__ = ["arch_pk", "as_utc", "insert_on_conflict", "search_pk", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without a zone; they were written in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def insert_on_conflict(
    session: Session,
    table: Any,
    values: dict[str, Any],
    keys: list[str],
    update: list[str] | None = None,
) -> None:
    """``INSERT`` that ignores (or, with ``update``, overwrites) a row clashing on ``keys``.

    The database decides, not a prior ``SELECT``: two writers recording the same
    trial at once cannot both insert it, on SQLite or PostgreSQL.
    """
    # dialect modules imported here: read-only CLI queries never pay for them
    statement: Any
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        statement = postgresql.insert(table).values(**values)
    else:
        from sqlalchemy.dialects import sqlite

        statement = sqlite.insert(table).values(**values)
    if update:
        statement = statement.on_conflict_do_update(
            index_elements=keys, set_={name: statement.excluded[name] for name in update}
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=keys)
    session.execute(statement)


def search_pk(session: Session, name: str) -> int:
    """The key of search ``name``.

    Raises:
        NotFound: no such search (the message lists some that exist).
    """
    pk = session.scalar(select(Search.id).where(Search.name == name))
    if pk is None:
        known = session.scalars(select(Search.name).order_by(Search.id.desc()).limit(5)).all()
        hint = f"known searches: {', '.join(known)}" if known else "the database has no searches"
        raise NotFound(f"no search named {name!r} in the lineage database ({hint})")
    return pk


def arch_pk(session: Session, arch_id: str) -> int:
    """The key of architecture ``arch_id``.

    Raises:
        NotFound: no such architecture.
    """
    pk = session.scalar(select(Architecture.id).where(Architecture.arch_id == arch_id))
    if pk is None:
        raise NotFound(
            f"no architecture {arch_id!r} in the lineage database "
            "(list them with: morphsearch lineage tree --search NAME)"
        )
    return pk
