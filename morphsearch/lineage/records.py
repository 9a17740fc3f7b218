"""Frozen value objects that go into and come out of the lineage store.

The store never hands out ORM rows: every query returns one of these records, so
callers cannot mutate the database by accident and records stay valid after the
session that produced them has closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "ArchNode",
    "ArchitectureIn",
    "ArchitectureRecord",
    "BestResult",
    "EdgeStep",
    "GrowthEventRecord",
    "LineageDiff",
    "MetricRecord",
    "ParetoPoint",
    "SearchRecord",
    "SearchSummary",
    "TrialRecord",
]

JSONDict = dict[str, Any]


@dataclass(frozen=True)
class ArchitectureIn:
    """An architecture as the writer hands it to the store (plain values, no torch).

    Attributes:
        arch_id: caller-chosen unique id (e.g. a content hash); recording the same id
            again is a no-op when the structure hash matches.
        graph: the graph JSON (node-link dict), stored verbatim.
        structure_hash: content hash of the canonical graph.
        weights_hash: content hash of the weights, if known.
        params: number of trainable parameters.
        flops: forward FLOPs for one sample.
        weights_uri: where the weights file lives (local path, NFS, ``s3://``).
        weights_sha256: sha256 of the weights file, to verify it on load.
    """

    arch_id: str
    graph: JSONDict
    structure_hash: str
    params: int
    flops: int
    weights_hash: str | None = None
    weights_uri: str | None = None
    weights_sha256: str | None = None


@dataclass(frozen=True)
class SearchRecord:
    """One search: its unique name, config JSON, status and creation time (UTC)."""

    name: str
    config: JSONDict
    status: str
    created: datetime


@dataclass(frozen=True)
class ArchitectureRecord:
    """A stored architecture, with its graph JSON and the edge that produced it.

    ``parent_id`` is ``None`` for a seed; ``depth`` counts edges from the seed.
    """

    arch_id: str
    search: str
    graph: JSONDict
    structure_hash: str
    weights_hash: str | None
    params: int
    flops: int
    weights_uri: str | None
    weights_sha256: str | None
    parent_id: str | None
    depth: int
    morphisms: tuple[JSONDict, ...]
    created: datetime


@dataclass(frozen=True)
class ArchNode:
    """An architecture as a node of the lineage forest (no graph JSON: cheap to list).

    ``morphisms`` is the chain of morphism records on the edge from ``parent_id``
    (empty for a seed); ``kind`` is ``"seed"``, ``"trial"`` or ``"growth"``;
    ``trial_id`` is the Ray trial that made the edge.
    """

    arch_id: str
    parent_id: str | None
    depth: int
    params: int
    flops: int
    kind: str
    morphisms: tuple[JSONDict, ...] = ()
    trial_id: str | None = None


@dataclass(frozen=True)
class EdgeStep:
    """One edge of a morphism script: ``parent_id`` became ``child_id`` by ``morphisms``."""

    parent_id: str
    child_id: str
    kind: str
    morphisms: tuple[JSONDict, ...]
    trial_id: str | None


@dataclass(frozen=True)
class LineageDiff:
    """The morphism script between two architectures.

    ``to_a`` and ``to_b`` are the edges from ``common_ancestor`` down to ``a`` and
    to ``b``, top first. With no common ancestor (different seeds) each side
    starts at its own seed and ``common_ancestor`` is ``None``.
    """

    a: str
    b: str
    common_ancestor: str | None
    to_a: tuple[EdgeStep, ...]
    to_b: tuple[EdgeStep, ...]


@dataclass(frozen=True)
class TrialRecord:
    """One Ray Tune trial: it trained ``child_id``, grown from ``parent_id``."""

    trial_id: str
    search: str
    parent_id: str | None
    child_id: str
    node: str | None
    status: str
    config: JSONDict
    error: str | None
    started: datetime | None
    ended: datetime | None


@dataclass(frozen=True)
class MetricRecord:
    """A metric value a trial measured at its ``evaluation``-th evaluation (its epoch, or
    its n-th block of ``budget.eval_every_steps`` optimizer steps)."""

    trial_id: str
    arch_id: str
    evaluation: int
    name: str
    value: float


@dataclass(frozen=True)
class GrowthIn:
    """Growth inside a trial as the writer hands it to the store: ``pre_id`` grew into
    ``post`` by ``morphisms`` at optimizer step ``step``."""

    pre_id: str
    post: ArchitectureIn
    morphisms: tuple[JSONDict, ...]
    step: int
    trigger: str
    scores: JSONDict = field(default_factory=dict)
    loss_before: float | None = None
    loss_after: float | None = None


@dataclass(frozen=True)
class GrowthEventRecord:
    """Growth inside a trial: ``pre_id`` grew into ``post_id`` at ``step``."""

    trial_id: str
    pre_id: str
    post_id: str
    step: int
    trigger: str
    scores: JSONDict
    loss_before: float | None
    loss_after: float | None
    morphisms: tuple[JSONDict, ...]


@dataclass(frozen=True)
class BestResult:
    """An architecture ranked by a metric (the value the ranking used)."""

    arch_id: str
    trial_id: str
    metric: str
    value: float
    evaluation: int
    params: int
    flops: int


@dataclass(frozen=True)
class ParetoPoint:
    """A non-dominated architecture: no other one is as cheap and at least as good."""

    arch_id: str
    cost: int
    value: float


@dataclass(frozen=True)
class SearchSummary:
    """Counts and the best result of one search."""

    name: str
    status: str
    created: datetime
    n_architectures: int
    n_trials: int
    trials_by_status: dict[str, int] = field(default_factory=dict)
    best: BestResult | None = None
