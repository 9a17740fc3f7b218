"""Read queries over the lineage forest, each a function of one open session.

Walks up and down the forest are recursive CTEs over the indexed ``edges`` table
(one index probe per level), rankings read the ``metrics`` indexes in order, and
the Pareto front is one window query (a running best ordered by cost).
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from sqlalchemy import Integer, Select, bindparam, func, literal, select, text
from sqlalchemy.orm import Session, aliased

from morphsearch.lineage._sql import arch_pk, as_utc, search_pk
from morphsearch.lineage.models import (
    ArchitectureRow,
    EdgeRow,
    GrowthEventRow,
    MetricRow,
    SearchRow,
    TrialRow,
)
from morphsearch.lineage.objective import config_metric, objective
from morphsearch.lineage.records import (
    ArchitectureRecord,
    ArchNode,
    BestResult,
    EdgeStep,
    GrowthEventRecord,
    LineageDiff,
    MetricRecord,
    ParetoPoint,
    SearchRecord,
    SearchSummary,
)
from morphsearch.lineage.writes import trial_row

__all__ = [
    "ancestors",
    "architecture",
    "best",
    "child_hashes",
    "descendants",
    "diff",
    "growth_events",
    "list_searches",
    "metrics",
    "pareto",
    "roots",
    "search",
    "summary",
    "trial_statuses",
]

Mode = Literal["max", "min"]
Cost = Literal["params", "flops"]
MAX_DEPTH = 100_000  # a guard: the forest has no cycles, but a walk must end regardless


def list_searches(session: Session) -> list[SearchRecord]:
    rows = session.scalars(select(SearchRow).order_by(SearchRow.id)).all()
    return [SearchRecord(r.name, r.config, r.status, as_utc(r.created)) for r in rows]


def search(session: Session, name: str) -> SearchRecord:
    """Search ``name``.

    Raises:
        NotFound: no such search.
    """
    row = session.get_one(SearchRow, search_pk(session, name))
    return SearchRecord(row.name, row.config, row.status, as_utc(row.created))


def _node_select(walk: Any) -> Select[Any]:
    """Architectures on a walk (``id``, ``lvl``) with their incoming edge, as ArchNode columns."""
    parent = aliased(ArchitectureRow)
    return (
        select(
            ArchitectureRow.arch_id,
            parent.arch_id,
            ArchitectureRow.depth,
            ArchitectureRow.params,
            ArchitectureRow.flops,
            EdgeRow.kind,
            EdgeRow.morphisms,
            TrialRow.trial_id,
        )
        .join(walk, walk.c.id == ArchitectureRow.id)
        .outerjoin(EdgeRow, EdgeRow.child_id == ArchitectureRow.id)
        .outerjoin(parent, parent.id == EdgeRow.parent_id)
        .outerjoin(TrialRow, TrialRow.id == EdgeRow.trial_id)
    )


def _to_node(row: Any) -> ArchNode:
    arch_id, parent_id, depth, params, flops, kind, morphisms, trial_id = row
    return ArchNode(
        arch_id, parent_id, depth, params, flops, kind or "seed", tuple(morphisms or ()), trial_id
    )


@functools.cache
def _walk_statement(direction: str) -> Select[Any]:
    """The recursive walk from ``:arch_id`` up (``"ancestors"``) or down, built once.

    The statement takes bind parameters (``arch_id``, ``max_depth``), so it is
    constructed and compiled once per process: that is most of the Python cost of
    a 200-level walk.
    """
    start = select(ArchitectureRow.id.label("id"), literal(0, Integer).label("lvl")).where(
        ArchitectureRow.arch_id == bindparam("arch_id")
    )
    walk = start.cte(direction, recursive=True)
    if direction == "ancestors":
        step = select(EdgeRow.parent_id, walk.c.lvl + 1).join(walk, EdgeRow.child_id == walk.c.id)
    else:
        step = select(EdgeRow.child_id, walk.c.lvl + 1).join(walk, EdgeRow.parent_id == walk.c.id)
    walk = walk.union_all(step.where(walk.c.lvl < bindparam("max_depth")))
    return _node_select(walk).order_by(walk.c.lvl, ArchitectureRow.id)


def _walk(session: Session, direction: str, arch_id: str, max_depth: int) -> list[ArchNode]:
    statement = _walk_statement(direction)
    rows = session.connection().execute(statement, {"arch_id": arch_id, "max_depth": max_depth})
    nodes = [_to_node(row) for row in rows]
    if not nodes:
        arch_pk(session, arch_id)  # raises NotFound
    return nodes


def ancestors(session: Session, arch_id: str) -> list[ArchNode]:
    """The path from ``arch_id`` (first) up to its seed (last).

    Raises:
        NotFound: no such architecture.
    """
    return _walk(session, "ancestors", arch_id, MAX_DEPTH)


def descendants(session: Session, arch_id: str, max_depth: int | None = None) -> list[ArchNode]:
    """The subtree under ``arch_id``, the root first, then level by level.

    Args:
        max_depth: stop this many edges below ``arch_id`` (``None``: the whole subtree).

    Raises:
        NotFound: no such architecture.
    """
    return _walk(session, "descendants", arch_id, MAX_DEPTH if max_depth is None else max_depth)


def child_hashes(session: Session, arch_id: str) -> set[str]:
    """Structure hashes of the direct children of ``arch_id``, in one query (the search's
    duplicate check runs it for every parent it considers)."""
    parent = aliased(ArchitectureRow)
    rows = session.execute(
        select(ArchitectureRow.structure_hash)
        .join(EdgeRow, EdgeRow.child_id == ArchitectureRow.id)
        .join(parent, parent.id == EdgeRow.parent_id)
        .where(parent.arch_id == arch_id)
    )
    return {str(h) for (h,) in rows}


def architecture(session: Session, arch_id: str) -> ArchitectureRecord:
    """One architecture with its graph JSON and the edge that produced it.

    Raises:
        NotFound: no such architecture.
    """
    node = ancestors(session, arch_id)[0]
    row = session.scalars(select(ArchitectureRow).where(ArchitectureRow.arch_id == arch_id)).one()
    search = session.scalars(select(SearchRow.name).where(SearchRow.id == row.search_id)).one()
    return ArchitectureRecord(
        row.arch_id,
        search,
        row.graph,
        row.structure_hash,
        row.weights_hash,
        row.params,
        row.flops,
        row.weights_uri,
        row.weights_sha256,
        node.parent_id,
        row.depth,
        node.morphisms,
        as_utc(row.created),
    )


def best(
    session: Session,
    search: str,
    metric: str,
    mode: Mode = "max",
    evaluation: int | None = None,
    k: int | None = 1,
) -> list[BestResult]:
    """The ``k`` architectures with the best value of ``metric`` in ``search``, best
    first; ``k=None`` gives every architecture with a value.

    Each architecture counts once, at its best value over every reported evaluation,
    or over ``evaluation`` only when given. Ties go to the earlier architecture.

    Raises:
        NotFound: no such search.
    """
    key = search_pk(session, search)
    order = MetricRow.value.desc() if mode == "max" else MetricRow.value.asc()
    query = (
        select(
            ArchitectureRow.arch_id,
            TrialRow.trial_id,
            MetricRow.value,
            MetricRow.evaluation,
            ArchitectureRow.params,
            ArchitectureRow.flops,
        )
        .join(ArchitectureRow, ArchitectureRow.id == MetricRow.arch_id)
        .join(TrialRow, TrialRow.id == MetricRow.trial_id)
        .where(MetricRow.search_id == key, MetricRow.name == metric)
        .order_by(order, MetricRow.arch_id, MetricRow.evaluation)
    )
    if evaluation is not None:
        query = query.where(MetricRow.evaluation == evaluation)
    # Read rows in index order and keep each architecture's first (best) one; widen
    # the window only when many rows belong to the same few architectures.
    limit = None if k is None else 4 * k
    while True:
        rows = session.execute(query.limit(limit)).all()
        found: dict[str, BestResult] = {}
        for arch_id, trial_id, value, at, params, flops in rows:
            if arch_id not in found:
                found[arch_id] = BestResult(arch_id, trial_id, metric, value, at, params, flops)
        if limit is None or k is None or len(found) >= k or len(rows) < limit:
            return list(found.values())[:k]
        limit *= 4


def pareto(
    session: Session,
    search: str,
    metric: str,
    mode: Mode = "max",
    cost: Cost = "params",
    evaluation: int | None = None,
) -> list[ParetoPoint]:
    """Architectures of ``search`` not dominated in (``cost`` lower, ``metric`` better).

    An architecture's value is its best over every evaluation (or at ``evaluation``). Sorted
    by cost, a point is on the front when it beats the best value of every cheaper
    point: a running max (min) over a window, computed in SQL.

    Raises:
        NotFound: no such search.
    """
    key = search_pk(session, search)
    agg = func.max if mode == "max" else func.min
    cost_of = select(getattr(ArchitectureRow, cost)).where(ArchitectureRow.id == MetricRow.arch_id)
    # The cost is a scalar subquery per scored architecture (an index probe each):
    # joining instead lets PostgreSQL hash-join a sequential scan of every
    # architecture of every search (720 ms instead of 460 ms at 1M architectures).
    per_arch = select(
        MetricRow.arch_id.label("pk"),
        agg(MetricRow.value).label("value"),
        cost_of.scalar_subquery().label("cost"),
    ).where(MetricRow.search_id == key, MetricRow.name == metric)
    if evaluation is not None:
        per_arch = per_arch.where(MetricRow.evaluation == evaluation)
    scored = per_arch.group_by(MetricRow.arch_id).subquery("scored")
    better_first = scored.c.value.desc() if mode == "max" else scored.c.value.asc()
    running = agg(scored.c.value).over(
        order_by=(scored.c.cost, better_first, scored.c.pk), rows=(None, -1)
    )
    ranked = select(scored, running.label("prev")).subquery("ranked")
    beats = ranked.c.value > ranked.c.prev if mode == "max" else ranked.c.value < ranked.c.prev
    # the id of the few points on the front, again by index probe, not by a join
    name_of = (
        select(ArchitectureRow.arch_id).where(ArchitectureRow.id == ranked.c.pk).scalar_subquery()
    )
    query = (
        select(name_of, ranked.c.cost, ranked.c.value)
        .where(ranked.c.prev.is_(None) | beats)
        .order_by(ranked.c.cost, ranked.c.pk)
    )
    if session.get_bind().dialect.name == "postgresql":
        # For this transaction only: the sort of one search's scores fits in memory,
        # and JIT compilation (triggered by the subplan cost estimate) costs more
        # than the whole query (150 ms of 375 ms measured).
        session.execute(text("SET LOCAL work_mem = '64MB'"))
        session.execute(text("SET LOCAL jit = off"))
    return [ParetoPoint(a, int(c), float(v)) for a, c, v in session.execute(query).all()]


def diff(session: Session, a: str, b: str) -> LineageDiff:
    """The morphism script between ``a`` and ``b``: edges down from their common ancestor.

    Raises:
        NotFound: either architecture does not exist.
    """
    up_a, up_b = ancestors(session, a), ancestors(session, b)
    on_b = {node.arch_id for node in up_b}
    common = next((node.arch_id for node in up_a if node.arch_id in on_b), None)

    def down_to(path: list[ArchNode]) -> tuple[EdgeStep, ...]:
        steps = []
        for node in path:
            if node.arch_id == common or node.parent_id is None:
                break
            steps.append(
                EdgeStep(node.parent_id, node.arch_id, node.kind, node.morphisms, node.trial_id)
            )
        return tuple(reversed(steps))

    return LineageDiff(a, b, common, down_to(up_a), down_to(up_b))


def roots(session: Session, search: str) -> list[str]:
    """Where the lineage of ``search`` starts: its seeds, and parents from other searches.

    Raises:
        NotFound: no such search.
    """
    key = search_pk(session, search)
    parent, child = aliased(ArchitectureRow), aliased(ArchitectureRow)
    seeds = select(ArchitectureRow.arch_id, ArchitectureRow.id).where(
        ArchitectureRow.search_id == key, ArchitectureRow.depth == 0
    )
    borrowed = (
        select(parent.arch_id, parent.id)
        .join(EdgeRow, EdgeRow.parent_id == parent.id)
        .join(child, child.id == EdgeRow.child_id)
        .where(child.search_id == key, parent.search_id != key)
    )
    rows = session.execute(seeds.union(borrowed).order_by("id")).all()
    return [row[0] for row in rows]


def summary(
    session: Session, search: str, metric: str | None = None, mode: Mode | None = None
) -> SearchSummary:
    """Trials by status, architecture count and best result of ``search``.

    Args:
        metric, mode: what "best" means; default: the search config's objective.

    Raises:
        NotFound: no such search.
    """
    key = search_pk(session, search)
    row = session.get_one(SearchRow, key)
    by_status = dict(
        session.execute(
            select(TrialRow.status, func.count())
            .where(TrialRow.search_id == key)
            .group_by(TrialRow.status)
        ).all()
    )
    n_archs = session.scalar(select(func.count()).where(ArchitectureRow.search_id == key)) or 0
    # a search whose config names no metric has no best (unless one is asked for)
    chosen = objective(row.config, metric, mode) if metric or config_metric(row.config) else None
    top = best(session, search, chosen[0], chosen[1]) if chosen else []  # type: ignore[arg-type]
    return SearchSummary(
        row.name,
        row.status,
        as_utc(row.created),
        int(n_archs),
        sum(by_status.values()),
        {str(s): int(n) for s, n in by_status.items()},
        top[0] if top else None,
    )


def trial_statuses(session: Session, search: str) -> dict[str, str]:
    """Every trial of ``search``: its Ray trial id and status.

    Raises:
        NotFound: no such search.
    """
    key = search_pk(session, search)
    rows = session.execute(
        select(TrialRow.trial_id, TrialRow.status).where(TrialRow.search_id == key)
    ).all()
    return {str(t): str(s) for t, s in rows}


def metrics(session: Session, trial_id: str) -> list[MetricRecord]:
    """Every value trial ``trial_id`` reported, by evaluation then name.

    Raises:
        NotFound: no such trial.
    """
    key = trial_row(session, trial_id).id
    rows = session.execute(
        select(ArchitectureRow.arch_id, MetricRow.evaluation, MetricRow.name, MetricRow.value)
        .join(ArchitectureRow, ArchitectureRow.id == MetricRow.arch_id)
        .where(MetricRow.trial_id == key)
        .order_by(MetricRow.evaluation, MetricRow.name)
    ).all()
    return [MetricRecord(trial_id, a, b, n, v) for a, b, n, v in rows]


def growth_events(session: Session, trial_id: str) -> list[GrowthEventRecord]:
    """The growth events of trial ``trial_id``, in step order.

    Raises:
        NotFound: no such trial.
    """
    key = trial_row(session, trial_id).id
    pre, post = aliased(ArchitectureRow), aliased(ArchitectureRow)
    rows = session.execute(
        select(GrowthEventRow, pre.arch_id, post.arch_id, EdgeRow.morphisms)
        .join(EdgeRow, EdgeRow.id == GrowthEventRow.edge_id)
        .join(pre, pre.id == EdgeRow.parent_id)
        .join(post, post.id == EdgeRow.child_id)
        .where(GrowthEventRow.trial_id == key)
        .order_by(GrowthEventRow.step, GrowthEventRow.id)
    ).all()
    return [
        GrowthEventRecord(trial_id, pre_id, post_id, e.step, e.trigger, e.scores,
                          e.loss_before, e.loss_after, tuple(morphisms))
        for e, pre_id, post_id, morphisms in rows
    ]  # fmt: skip
