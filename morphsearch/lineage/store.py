"""The lineage store: the one object callers use to write and query lineage.

Thread safety:
    A store may be shared by threads; each call runs in its own session and
    transaction. Processes open their own store (engines do not survive a fork).

Atomicity:
    Each write method is one transaction: a trial's child architecture, its edge
    from the parent and its trial row commit together or not at all (a writer
    killed mid-call leaves nothing behind).

Idempotence:
    Writes are keyed by the caller's ids, so a Ray Tune callback replaying
    results after a resume records no duplicate rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from morphsearch.errors import DatabaseError, DatabaseUnreachable, NotFound
from morphsearch.lineage import ids, queries, writes
from morphsearch.lineage._sql import as_utc
from morphsearch.lineage.database import Database, resolve_url, sqlite_path
from morphsearch.lineage.models import ArchitectureRow, SearchRow
from morphsearch.lineage.queries import Cost, Mode
from morphsearch.lineage.records import (
    ArchitectureIn,
    ArchitectureRecord,
    ArchNode,
    BestResult,
    GrowthEventRecord,
    GrowthIn,
    LineageDiff,
    MetricRecord,
    ParetoPoint,
    SearchRecord,
    SearchSummary,
    TrialRecord,
)
from morphsearch.lineage.schema import check_schema, upgrade_command

__all__ = ["LineageStore"]

T = TypeVar("T")


class LineageStore:
    """Lineage of searches in a SQL database (SQLite file or PostgreSQL).

    Args:
        url: database URL; ``None`` means ``$MORPHSEARCH_DB`` or ``sqlite:///morphsearch.db``.
        write: open for writing. An empty database opened for writing gets the
            schema (Alembic upgrade); read-only opens never create or change anything.
        retry_s: for this long, a call whose connection is lost or refused (a server
            restart) is run again, with backoff; 0 (the default) fails at once. The
            search's lineage writer retries for a minute.

    Raises:
        DatabaseUnreachable: the URL is malformed, the server cannot be reached, or
            (read-only) the SQLite file does not exist.
        SchemaOutdated: the schema is older than the code (the message names the
            ``morphsearch db upgrade`` command), or missing on a read-only open.
        DatabaseError: the database is newer than the code or not a lineage database.
    """

    def __init__(
        self, url: str | URL | None = None, *, write: bool = False, retry_s: float = 0.0
    ) -> None:
        self._db = Database(resolve_url(url) if not isinstance(url, URL) else url, write=write)
        self.retry_s = retry_s
        path = sqlite_path(self._db.url)
        if path is not None and not write and not path.exists():
            raise DatabaseUnreachable(
                f"lineage database {path} does not exist; a search creates it, or create "
                f"an empty one with: {upgrade_command(self._db)}"
            )
        try:
            check_schema(self._db)
        except SQLAlchemyError as exc:
            self._db.dispose()
            raise self._db.translate(exc) from exc
        except BaseException:
            self._db.dispose()
            raise

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self._db.display_url

    def close(self) -> None:
        """Release every connection (the store must not be used afterwards)."""
        self._db.dispose()

    def __enter__(self) -> LineageStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, action: Callable[[Session], T], *, write: bool = False) -> T:
        if write and not self._db.write:
            raise DatabaseError(
                f"lineage database {self.url} is open read-only; open it with write=True"
            )
        return self._db.run(action, retry_s=self.retry_s)

    # -- writes -------------------------------------------------------------------

    def create_search(
        self, name: str, config: Mapping[str, Any] | None = None, status: str = "running"
    ) -> SearchRecord:
        """Create search ``name``, or return it unchanged when it exists (resume).

        Raises:
            DatabaseError: the store is read-only or the write failed.
        """

        def action(session: Session) -> SearchRecord:
            row = writes.add_search(session, name, dict(config or {}), status)
            return SearchRecord(row.name, row.config, row.status, as_utc(row.created))

        return self._run(action, write=True)

    def set_search_status(self, name: str, status: str) -> SearchRecord:
        """Set the status of search ``name`` (e.g. ``"finished"``).

        Raises:
            NotFound: no such search.
        """

        def action(session: Session) -> SearchRecord:
            row = writes.set_search_status(session, name, status)
            return SearchRecord(row.name, row.config, row.status, as_utc(row.created))

        return self._run(action, write=True)

    def record_seed(self, search: str, arch: ArchitectureIn) -> ArchNode:
        """Record a seed architecture (no parent) of ``search``; a no-op if already there.

        Raises:
            NotFound: no such search.
            DatabaseError: ``arch.arch_id`` exists with another structure hash or parent.
        """

        def action(session: Session) -> ArchNode:
            writes.add_architecture(session, writes.search_pk(session, search), arch, None)
            return queries.ancestors(session, arch.arch_id)[0]

        return self._run(action, write=True)

    def record_trial(
        self,
        search: str,
        trial_id: str,
        parent_id: str | None,
        child: ArchitectureIn,
        morphisms: Sequence[Mapping[str, Any]] = (),
        *,
        node: str | None = None,
        status: str = "RUNNING",
        config: Mapping[str, Any] | None = None,
        error: str | None = None,
        started: datetime | None = None,
        ended: datetime | None = None,
        growth: Sequence[GrowthIn] = (),
        metrics: Sequence[tuple[int, Mapping[str, float]]] = (),
        metrics_arch_id: str | None = None,
    ) -> TrialRecord:
        """Record a trial with its child architecture and parent -> child edge, and with
        them its growth inside the trial and its metrics, in ONE transaction: a driver
        killed mid-write leaves all of it or none (a resumed search then records it
        again), never a finished trial without its metrics.

        Args:
            search: the search name (created by :meth:`create_search`).
            trial_id: the Ray Tune trial id; recording it again (resume) updates the
                status, node, config, error and times given and adds no row.
            parent_id: the architecture the child was grown from (``None``: the trial
                trains ``child`` itself, a seed).
            child: the architecture the trial trains.
            morphisms: the chain of morphism records applied to the parent, in order.
            node: the Ray node that ran it; status: e.g. RUNNING, TERMINATED, ERROR.
            growth: growth events inside the trial, in order (:meth:`record_growth`).
            metrics: ``(evaluation, values)`` reports (:meth:`record_metrics_many`),
                of ``metrics_arch_id`` (default: the child; after growth, the grown
                architecture the trial kept).

        Returns:
            The trial as stored.

        Raises:
            NotFound: no such search or parent architecture.
            DatabaseError: the trial or child id is already recorded differently.
        """
        fields = {
            "node": node,
            "status": status,
            "config": dict(config or {}),
            "error": error,
            "started": started,
            "ended": ended,
        }

        def action(session: Session) -> TrialRecord:
            row = writes.add_trial(session, search, trial_id, parent_id, child, morphisms, fields)
            for event in growth:
                writes.add_growth(session, trial_id, event)
            if metrics:
                writes.add_metrics_many(session, trial_id, metrics, metrics_arch_id)
            return _trial_record(session, row)

        return self._run(action, write=True)

    def update_trial(
        self, trial_id: str, status: str, *, error: str | None = None, ended: datetime | None = None
    ) -> TrialRecord:
        """Set a trial's status (and its error and end time when given).

        Raises:
            NotFound: no such trial.
        """

        def action(session: Session) -> TrialRecord:
            return _trial_record(
                session, writes.set_trial_status(session, trial_id, status, error, ended)
            )

        return self._run(action, write=True)

    def record_metrics(
        self,
        trial_id: str,
        evaluation: int,
        values: Mapping[str, float],
        *,
        arch_id: str | None = None,
    ) -> int:
        """Record metric values a trial measured at its ``evaluation``-th evaluation (its
        epoch, or its n-th block of ``budget.eval_every_steps`` optimizer steps).

        Args:
            arch_id: the architecture measured (default: the trial's child; after
                in-training growth pass the grown one).

        Returns:
            How many values were stored (NaN values are skipped).

        Raises:
            NotFound: no such trial or architecture.
        """
        return self._run(
            lambda s: writes.add_metrics(s, trial_id, evaluation, values, arch_id), write=True
        )

    def record_metrics_many(
        self,
        trial_id: str,
        reports: Sequence[tuple[int, Mapping[str, float]]],
        *,
        arch_id: str | None = None,
    ) -> int:
        """Record several ``(evaluation, values)`` reports of one trial in ONE transaction.

        The search callback buffers a trial's per-epoch metrics until the trial's
        architecture is known; writing them together costs one commit instead of one per
        epoch (a commit is most of a small write's cost on SQLite).

        Returns:
            How many values were stored.

        Raises:
            NotFound: no such trial or architecture.
        """
        return self._run(
            lambda s: writes.add_metrics_many(s, trial_id, reports, arch_id), write=True
        )

    def record_growth(
        self,
        trial_id: str,
        pre_id: str,
        post: ArchitectureIn,
        morphisms: Sequence[Mapping[str, Any]],
        *,
        step: int,
        trigger: str,
        scores: Mapping[str, Any] | None = None,
        loss_before: float | None = None,
        loss_after: float | None = None,
    ) -> GrowthEventRecord:
        """Record growth inside a trial: edge ``pre_id -> post`` and the event, atomically.

        Raises:
            NotFound: no such trial or pre-growth architecture.
            DatabaseError: ``post.arch_id`` is already recorded differently.
        """
        growth = GrowthIn(pre_id, post, tuple(dict(m) for m in morphisms), int(step), trigger,
                          dict(scores or {}), loss_before, loss_after)  # fmt: skip

        def action(session: Session) -> GrowthEventRecord:
            writes.add_growth(session, trial_id, growth)
            return GrowthEventRecord(trial_id, growth.pre_id, growth.post.arch_id, growth.step,
                                     growth.trigger, growth.scores, growth.loss_before,
                                     growth.loss_after, growth.morphisms)  # fmt: skip

        return self._run(action, write=True)

    # -- queries ------------------------------------------------------------------

    def searches(self) -> list[SearchRecord]:
        """Every search, oldest first."""
        return self._run(queries.list_searches)

    def search(self, name: str) -> SearchRecord:
        """Search ``name``. Raises NotFound."""
        return self._run(lambda s: queries.search(s, name))

    def resolve_search(self, wanted: str | None) -> str:
        """``wanted`` if it exists, else the only search in the store.

        Raises:
            NotFound: no such search, no searches, or several and none chosen.
        """
        if wanted:
            return self.search(wanted).name
        names = [s.name for s in self.searches()]
        if len(names) == 1:
            return names[0]
        if not names:
            raise NotFound(f"the lineage database {self.url} has no searches yet; run a search first")
        raise NotFound(
            f"the lineage database holds {len(names)} searches ({', '.join(names[:10])}); "
            "choose one with --search NAME"
        )

    def summary(
        self, search: str, metric: str | None = None, mode: Mode | None = None
    ) -> SearchSummary:
        """Trials by status, architecture count and the best result of ``search``."""
        return self._run(lambda s: queries.summary(s, search, metric, mode))

    def resolve_arch_id(self, wanted: str) -> str:
        """The full id of the architecture ``wanted`` names: a full id, the bare trial id
        that progress lines print, or a unique prefix. Raises NotFound ("did you mean")."""
        return self._run(lambda s: ids.resolve_arch_id(s, wanted))

    def architecture(self, arch_id: str) -> ArchitectureRecord:
        """One architecture with its graph JSON. Raises NotFound."""
        return self._run(lambda s: queries.architecture(s, arch_id))

    def ancestors(self, arch_id: str) -> list[ArchNode]:
        """The path from ``arch_id`` (first) up to its seed (last). Raises NotFound."""
        return self._run(lambda s: queries.ancestors(s, arch_id))

    def descendants(self, arch_id: str, max_depth: int | None = None) -> list[ArchNode]:
        """The subtree under ``arch_id``, root first, level by level. Raises NotFound."""
        return self._run(lambda s: queries.descendants(s, arch_id, max_depth))

    def child_hashes(self, arch_id: str) -> set[str]:
        """Structure hashes of ``arch_id``'s direct children (one query)."""
        return self._run(lambda s: queries.child_hashes(s, arch_id))

    def best(
        self,
        search: str,
        metric: str,
        mode: Mode = "max",
        evaluation: int | None = None,
        k: int | None = 1,
    ) -> list[BestResult]:
        """The ``k`` best architectures of ``search`` by ``metric`` (``k=None``: every
        one with a value), best first. Raises NotFound."""
        return self._run(lambda s: queries.best(s, search, metric, mode, evaluation, k))

    def pareto(
        self,
        search: str,
        metric: str,
        mode: Mode = "max",
        cost: Cost = "params",
        evaluation: int | None = None,
    ) -> list[ParetoPoint]:
        """The front of ``metric`` against ``cost``, cheapest first. Raises NotFound."""
        return self._run(lambda s: queries.pareto(s, search, metric, mode, cost, evaluation))

    def diff(self, a: str, b: str) -> LineageDiff:
        """The morphism script from the common ancestor of ``a`` and ``b``. Raises NotFound."""
        return self._run(lambda s: queries.diff(s, a, b))

    def trial(self, trial_id: str) -> TrialRecord:
        """Trial ``trial_id`` (e.g. to see on resume whether it was recorded). Raises NotFound."""
        return self._run(lambda s: _trial_record(s, writes.trial_row(s, trial_id)))

    def trial_statuses(self, search: str) -> dict[str, str]:
        """Every trial of ``search`` by Ray trial id: its status. Raises NotFound."""
        return self._run(lambda s: queries.trial_statuses(s, search))

    def metrics(self, trial_id: str) -> list[MetricRecord]:
        """Every value trial ``trial_id`` reported, by evaluation then name. Raises NotFound."""
        return self._run(lambda s: queries.metrics(s, trial_id))

    def growth_events(self, trial_id: str) -> list[GrowthEventRecord]:
        """The growth events of trial ``trial_id``, in step order. Raises NotFound."""
        return self._run(lambda s: queries.growth_events(s, trial_id))

    def roots(self, search: str) -> list[str]:
        """Where the lineage of ``search`` starts (its seeds). Raises NotFound."""
        return self._run(lambda s: queries.roots(s, search))


def _trial_record(session: Session, row: Any) -> TrialRecord:
    names = dict(
        session.execute(
            select(ArchitectureRow.id, ArchitectureRow.arch_id).where(
                ArchitectureRow.id.in_([row.child_id, row.parent_id or row.child_id])
            )
        ).all()
    )
    search = session.scalars(select(SearchRow.name).where(SearchRow.id == row.search_id)).one()
    return TrialRecord(
        row.trial_id,
        search,
        names.get(row.parent_id),
        names[row.child_id],
        row.node,
        row.status,
        row.config,
        row.error,
        as_utc(row.started),
        as_utc(row.ended),
    )
