"""Lineage database: who came from whom, by which morphisms, and how well it did.

Open a :class:`LineageStore` on a SQLite file (default ``sqlite:///morphsearch.db``)
or PostgreSQL (``postgresql+psycopg://...``); write with ``write=True`` from the
driver (a Ray Tune callback), query from anywhere. This package never imports
torch, ray or :mod:`morphsearch.arch`: architectures come in as plain values
(:class:`ArchitectureIn`) and records go out as frozen dataclasses.
"""

from __future__ import annotations

from morphsearch.lineage import schema
from morphsearch.lineage.database import DEFAULT_URL, ENV_VAR, Database, resolve_url, safe_url
from morphsearch.lineage.records import (
    ArchitectureIn,
    ArchitectureRecord,
    ArchNode,
    BestResult,
    EdgeStep,
    GrowthEventRecord,
    GrowthIn,
    LineageDiff,
    MetricRecord,
    ParetoPoint,
    SearchRecord,
    SearchSummary,
    TrialRecord,
)
from morphsearch.lineage.schema import HEAD_REVISION
from morphsearch.lineage.store import LineageStore

__all__ = [
    "DEFAULT_URL",
    "ENV_VAR",
    "HEAD_REVISION",
    "ArchNode",
    "ArchitectureIn",
    "ArchitectureRecord",
    "BestResult",
    "EdgeStep",
    "GrowthEventRecord",
    "GrowthIn",
    "LineageDiff",
    "LineageStore",
    "MetricRecord",
    "ParetoPoint",
    "SearchRecord",
    "SearchSummary",
    "TrialRecord",
    "open_store",
    "resolve_url",
    "safe_url",
    "upgrade",
]


def open_store(url: str | None = None, *, write: bool = False) -> LineageStore:
    """Open the lineage store at ``url`` (see :class:`LineageStore`)."""
    return LineageStore(url, write=write)


def upgrade(url: str | None = None) -> str:
    """Create or upgrade the schema of the database at ``url`` to this code's version.

    Returns:
        The schema revision afterwards.

    Raises:
        DatabaseUnreachable: the URL is malformed or the server cannot be reached.
        DatabaseError: the database is newer than the code or not a lineage database.
    """
    db = Database(resolve_url(url), write=True)
    try:
        return schema.upgrade(db)
    finally:
        db.dispose()
