"""SQLAlchemy 2 ORM models of the lineage database.

Integer surrogate keys join the tables (fast recursive walks); the caller's string
ids (architecture id, Ray trial id, search name) are unique columns. Every
architecture has at most one incoming edge, so the lineage is a forest: ancestors
are a path to a seed, descendants a subtree. The Alembic migrations under
``migrations/versions`` must build exactly this schema (a test compares them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ArchitectureRow",
    "Base",
    "EdgeRow",
    "GrowthEventRow",
    "MetricRow",
    "SearchRow",
    "TrialRow",
]

# Deterministic constraint names, so migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID_LEN = 200  # caller-chosen ids: content hashes, Ray trial ids, search names


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class SearchRow(Base):
    __tablename__ = "searches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(ID_LEN), unique=True)
    config: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(32))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ArchitectureRow(Base):
    __tablename__ = "architectures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    arch_id: Mapped[str] = mapped_column(String(ID_LEN), unique=True)
    # the search that first recorded it; seeds shared by searches keep the first
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id"), index=True)
    graph: Mapped[dict[str, Any]]
    structure_hash: Mapped[str] = mapped_column(String(128), index=True)
    weights_hash: Mapped[str | None] = mapped_column(String(128))
    params: Mapped[int] = mapped_column(BigInteger)
    flops: Mapped[int] = mapped_column(BigInteger)
    weights_uri: Mapped[str | None] = mapped_column(Text)
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    depth: Mapped[int] = mapped_column(Integer)  # edges from its seed, for tree and diff
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TrialRow(Base):
    __tablename__ = "trials"
    __table_args__ = (Index("ix_trials_search_id_status", "search_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[str] = mapped_column(String(ID_LEN), unique=True)  # Ray trial id
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("architectures.id"))
    child_id: Mapped[int] = mapped_column(ForeignKey("architectures.id"), index=True)
    node: Mapped[str | None] = mapped_column(String(ID_LEN))
    status: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]]
    error: Mapped[str | None] = mapped_column(Text)
    started: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class EdgeRow(Base):
    """``parent`` became ``child`` by the chain of morphism records ``morphisms``."""

    __tablename__ = "edges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("architectures.id"), index=True)
    # unique: one parent per architecture, which makes the lineage a forest
    child_id: Mapped[int] = mapped_column(ForeignKey("architectures.id"), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "trial" or "growth"
    morphisms: Mapped[list[Any]]
    trial_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id"), index=True)


class MetricRow(Base):
    __tablename__ = "metrics"
    __table_args__ = (
        UniqueConstraint("trial_id", "evaluation", "name"),
        # best at any evaluation / at one evaluation, Pareto (per-architecture best)
        Index("ix_metrics_search_id_name_value", "search_id", "name", "value"),
        Index(
            "ix_metrics_search_id_name_evaluation_value",
            "search_id", "name", "evaluation", "value",
        ),
        Index("ix_metrics_search_id_name_arch_id_value", "search_id", "name", "arch_id", "value"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"))
    # the architecture trained when the value was measured (after growth: the grown one)
    arch_id: Mapped[int] = mapped_column(ForeignKey("architectures.id"))
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id"))  # denormalised for ranking
    # the index of the evaluation that measured the value: the trial's epoch, or its
    # n-th block of budget.eval_every_steps optimizer steps
    evaluation: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Double)


class GrowthEventRow(Base):
    """Growth inside a trial; the architecture change itself is the edge ``edge_id``."""

    __tablename__ = "growth_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    edge_id: Mapped[int] = mapped_column(ForeignKey("edges.id"), unique=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(64))
    scores: Mapped[dict[str, Any]]
    loss_before: Mapped[float | None] = mapped_column(Double)
    loss_after: Mapped[float | None] = mapped_column(Double)
