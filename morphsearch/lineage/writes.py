"""Writes of the lineage store, each a function of one open session (one transaction).

Every write is idempotent: rows are keyed by the caller's ids (search name,
architecture id, Ray trial id; metric by trial, evaluation and name), conflicts are
resolved by the database, and recording the same thing twice (e.g. after a Ray Tune
resume) leaves exactly the rows of recording it once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from morphsearch.errors import DatabaseError, NotFound
from morphsearch.lineage._sql import arch_pk, insert_on_conflict, search_pk, utcnow
from morphsearch.lineage.models import (
    ArchitectureRow,
    EdgeRow,
    GrowthEventRow,
    MetricRow,
    SearchRow,
    TrialRow,
)
from morphsearch.lineage.records import ArchitectureIn, GrowthIn

__all__ = [
    "add_architecture",
    "add_growth",
    "add_metrics",
    "add_search",
    "add_trial",
    "set_search_status",
    "set_trial_status",
    "trial_row",
]

JSON = dict[str, Any]


def add_search(session: Session, name: str, config: JSON, status: str) -> SearchRow:
    """Create search ``name`` unless it exists (then it is returned unchanged)."""
    values = {"name": name, "config": config, "status": status, "created": utcnow()}
    insert_on_conflict(session, SearchRow.__table__, values, ["name"])
    return session.scalars(select(SearchRow).where(SearchRow.name == name)).one()


def set_search_status(session: Session, name: str, status: str) -> SearchRow:
    row = session.get_one(SearchRow, search_pk(session, name))
    row.status = status
    return row


def add_architecture(
    session: Session,
    search: int,
    arch: ArchitectureIn,
    parent: int | None,
    edge: dict[str, Any] | None = None,
) -> int:
    """Insert ``arch`` (and its edge from ``parent``) unless already there; return its key.

    Args:
        edge: ``kind``, ``morphisms`` and ``trial_id`` of the edge from ``parent``.

    Raises:
        DatabaseError: ``arch.arch_id`` is already recorded with another structure
            hash or another parent (ids must be unique).
    """
    depth = 0
    if parent is not None:
        query = select(ArchitectureRow.depth).where(ArchitectureRow.id == parent)
        depth = 1 + session.scalars(query).one()
    values = {
        "arch_id": arch.arch_id,
        "search_id": search,
        "graph": arch.graph,
        "structure_hash": arch.structure_hash,
        "weights_hash": arch.weights_hash,
        "params": int(arch.params),
        "flops": int(arch.flops),
        "weights_uri": arch.weights_uri,
        "weights_sha256": arch.weights_sha256,
        "depth": depth,
        "created": utcnow(),
    }
    insert_on_conflict(session, ArchitectureRow.__table__, values, ["arch_id"])
    pk, stored_hash, stored_depth = session.execute(
        select(ArchitectureRow.id, ArchitectureRow.structure_hash, ArchitectureRow.depth).where(
            ArchitectureRow.arch_id == arch.arch_id
        )
    ).one()
    if stored_hash != arch.structure_hash:
        raise DatabaseError(
            f"architecture {arch.arch_id!r} is already recorded with structure hash "
            f"{stored_hash}, not {arch.structure_hash}: architecture ids must be unique"
        )
    if parent is not None and edge is not None:
        _add_edge(session, arch.arch_id, pk, parent, edge)
    elif stored_depth != depth:
        raise DatabaseError(
            f"architecture {arch.arch_id!r} is already recorded elsewhere in the lineage "
            f"(depth {stored_depth}, not {depth}): give the new one a new id"
        )
    return int(pk)


def _add_edge(
    session: Session, arch_id: str, child: int, parent: int, edge: dict[str, Any]
) -> None:
    values = {"parent_id": parent, "child_id": child, **edge}
    insert_on_conflict(session, EdgeRow.__table__, values, ["child_id"])
    stored_parent = session.scalars(
        select(EdgeRow.parent_id).where(EdgeRow.child_id == child)
    ).one()
    if stored_parent != parent:
        raise DatabaseError(
            f"architecture {arch_id!r} is already recorded with another parent: "
            "an architecture has one parent, so give the new one a new id"
        )


def trial_row(session: Session, trial_id: str) -> TrialRow:
    """The trial ``trial_id``.

    Raises:
        NotFound: no such trial.
    """
    row = session.scalars(select(TrialRow).where(TrialRow.trial_id == trial_id)).one_or_none()
    if row is None:
        raise NotFound(f"no trial {trial_id!r} in the lineage database")
    return row


def add_trial(
    session: Session,
    search: str,
    trial_id: str,
    parent_id: str | None,
    child: ArchitectureIn,
    morphisms: Sequence[Mapping[str, Any]],
    fields: dict[str, Any],
) -> TrialRow:
    """Record a trial, its child architecture and the parent -> child edge.

    ``fields`` holds node, status, config, error, started, ended. A trial recorded
    again updates these fields and adds no row.

    Raises:
        NotFound: the search or the parent architecture does not exist.
        DatabaseError: the trial was recorded before with another child.
    """
    search_key = search_pk(session, search)
    parent = arch_pk(session, parent_id) if parent_id is not None else None
    values = {"trial_id": trial_id, "search_id": search_key, "parent_id": parent, **fields}
    child_key = add_architecture(session, search_key, child, parent)
    values["child_id"] = child_key
    mutable = [
        name
        for name in ("node", "status", "config", "error", "started", "ended")
        if fields.get(name) is not None
    ]
    insert_on_conflict(session, TrialRow.__table__, values, ["trial_id"], update=mutable or None)
    row = trial_row(session, trial_id)
    session.refresh(row)
    if row.child_id != child_key or row.parent_id != parent:
        raise DatabaseError(
            f"trial {trial_id!r} is already recorded with another parent or child architecture"
        )
    if parent is not None:
        edge = {"kind": "trial", "morphisms": [dict(m) for m in morphisms], "trial_id": row.id}
        _add_edge(session, child.arch_id, child_key, parent, edge)
    return row


def set_trial_status(
    session: Session, trial_id: str, status: str, error: str | None, ended: datetime | None
) -> TrialRow:
    row = trial_row(session, trial_id)
    changes: dict[str, Any] = {"status": status}
    if error is not None:
        changes["error"] = error
    if ended is not None:
        changes["ended"] = ended
    session.execute(update(TrialRow).where(TrialRow.id == row.id).values(**changes))
    session.refresh(row)
    return row


def add_metrics(
    session: Session,
    trial_id: str,
    evaluation: int,
    values: Mapping[str, float],
    arch_id: str | None,
) -> int:
    """Upsert one row per finite metric value; NaN is skipped (it ranks nowhere).

    Returns:
        The number of values stored.
    """
    return add_metrics_many(session, trial_id, [(evaluation, values)], arch_id)


def add_metrics_many(
    session: Session,
    trial_id: str,
    reports: Sequence[tuple[int, Mapping[str, float]]],
    arch_id: str | None,
) -> int:
    """:func:`add_metrics` for several ``(evaluation, values)`` reports, in one statement.

    Returns:
        The number of values stored.
    """
    trial = trial_row(session, trial_id)
    arch = arch_pk(session, arch_id) if arch_id is not None else trial.child_id
    # one row per (evaluation, name), the last report winning: a retried or resumed trial
    # re-reports epochs, and one multi-row upsert may not touch a row twice (PostgreSQL)
    latest = {
        (int(evaluation), name): float(value)
        for evaluation, values in reports
        for name, value in values.items()
        if not math.isnan(float(value))
    }
    rows = [
        {
            "trial_id": trial.id,
            "arch_id": arch,
            "search_id": trial.search_id,
            "evaluation": evaluation,
            "name": name,
            "value": value,
        }
        for (evaluation, name), value in latest.items()
    ]
    insert_on_conflict(
        session,
        MetricRow.__table__,
        rows,
        ["trial_id", "evaluation", "name"],
        ["value", "arch_id"],
    )
    return len(rows)


def add_growth(session: Session, trial_id: str, growth: GrowthIn) -> GrowthEventRow:
    """Record growth inside a trial as an edge ``pre -> post`` plus its event row."""
    trial = trial_row(session, trial_id)
    pre = arch_pk(session, growth.pre_id)
    edge = {"kind": "growth", "morphisms": [dict(m) for m in growth.morphisms],
            "trial_id": trial.id}  # fmt: skip
    post_key = add_architecture(session, trial.search_id, growth.post, pre, edge)
    edge_key = session.scalars(select(EdgeRow.id).where(EdgeRow.child_id == post_key)).one()
    values = {"edge_id": edge_key, "trial_id": trial.id, "step": growth.step,
              "trigger": growth.trigger, "scores": dict(growth.scores),
              "loss_before": growth.loss_before, "loss_after": growth.loss_after}  # fmt: skip
    insert_on_conflict(session, GrowthEventRow.__table__, values, ["edge_id"])
    return session.scalars(select(GrowthEventRow).where(GrowthEventRow.edge_id == edge_key)).one()
