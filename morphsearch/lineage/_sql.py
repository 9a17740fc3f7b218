"""Small SQL helpers shared by the writes and the queries (backend differences live here)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, overload

from sqlalchemy import select
from sqlalchemy.orm import Session

from morphsearch.errors import NotFound
from morphsearch.lineage.models import ArchitectureRow, SearchRow

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
    values: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    keys: list[str],
    update: list[str] | None = None,
) -> None:
    """``INSERT`` that ignores (or, with ``update``, overwrites) rows clashing on ``keys``.

    The database decides, not a prior ``SELECT``: two writers recording the same
    trial at once cannot both insert it, on SQLite or PostgreSQL. ``values`` is one row
    or a list of rows (sent as one executemany).
    """
    rows = [dict(values)] if isinstance(values, Mapping) else [dict(v) for v in values]
    if rows:
        statement = _upsert(
            session.get_bind().dialect.name, table, tuple(keys), tuple(update or ())
        )
        session.execute(statement, rows)


@functools.lru_cache(maxsize=64)
def _upsert(dialect: str, table: Any, keys: tuple[str, ...], update: tuple[str, ...]) -> Any:
    """The upsert statement, built once per table and conflict rule (building the
    ``excluded`` column proxies costs more than a small insert itself)."""
    # dialect modules imported here: read-only CLI queries never pay for them
    statement: Any
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        statement = postgresql.insert(table)
    else:
        from sqlalchemy.dialects import sqlite

        statement = sqlite.insert(table)
    if update:
        return statement.on_conflict_do_update(
            index_elements=list(keys), set_={name: statement.excluded[name] for name in update}
        )
    return statement.on_conflict_do_nothing(index_elements=list(keys))


def search_pk(session: Session, name: str) -> int:
    """The key of search ``name``.

    Raises:
        NotFound: no such search (the message lists some that exist).
    """
    pk = session.scalar(select(SearchRow.id).where(SearchRow.name == name))
    if pk is None:
        known = session.scalars(select(SearchRow.name).order_by(SearchRow.id.desc()).limit(5)).all()
        hint = f"known searches: {', '.join(known)}" if known else "the database has no searches"
        raise NotFound(f"no search named {name!r} in the lineage database ({hint})")
    return pk


def arch_pk(session: Session, arch_id: str) -> int:
    """The key of architecture ``arch_id``.

    Raises:
        NotFound: no such architecture.
    """
    pk = session.scalar(select(ArchitectureRow.id).where(ArchitectureRow.arch_id == arch_id))
    if pk is None:
        raise NotFound(
            f"no architecture {arch_id!r} in the lineage database "
            "(list them with: morphsearch lineage tree --search NAME)"
        )
    return pk
