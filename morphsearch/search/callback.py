"""Lineage is written on the driver, by a Ray Tune callback; workers need no database.

Per-epoch metrics are buffered until the trial's child architecture is recorded (its
final result carries the weights URI, or the trial ends without one: stopped by ASHA
or failed), then written with it and its growth events in one transaction. Every write
is idempotent by Ray trial id, and the buffer is part of the callback's state in Tune's
experiment checkpoint, so a resumed search records each trial exactly once.

Lineage is written at once while Tune snapshots its experiment from time to time, so a
driver killed right after a trial finished can leave that trial in lineage and not in
the snapshot. On resume the callback finds such trials (lineage's trials that Tune did
not restore), closes their rows, and the searcher counts them against the budget.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ray.tune import Callback

from morphsearch import artifacts
from morphsearch.errors import MorphSearchError, first_line
from morphsearch.lineage import ArchitectureIn, GrowthIn, LineageStore
from morphsearch.search.protocol import (
    EPOCH_HISTORY,
    LINEAGE_METRICS,
    EpochReport,
    TrialReport,
    is_trial_result,
)

__all__ = ["LineageCallback"]

log = logging.getLogger(__name__)


# how long lineage writes retry while the database server is away
WRITE_RETRY_S = 60.0


def _now() -> datetime:
    return datetime.now(timezone.utc)


class LineageCallback(Callback):
    """Records trials, child architectures, edges and metrics in the lineage store.

    Args:
        db_url: the lineage database URL.
        search: the search name (created by the runner).
        progress: the console progress, told on resume how many finished trials Tune
            lost, so that its counts agree with lineage.
    """

    # class defaults: a search started by an older version unpickles this callback from
    # its tuner.pkl without running __init__
    progress: Any = None
    _reconcile = False  # set on restore: lineage may hold trials Tune lost

    def __init__(self, db_url: str, search: str, progress: Any = None) -> None:
        self.db_url = db_url
        self.search = search
        self.progress = progress
        self._pending: dict[str, list[tuple[int, dict[str, float]]]] = {}
        self._last: dict[str, dict[str, Any]] = {}
        self._recorded: set[str] = set()
        self._started: dict[str, str] = {}  # trial id -> ISO time its run began
        self._retried: dict[str, str] = {}  # trial id -> why its last failed attempt failed
        self._store: LineageStore | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_store"] = None
        return state

    @property
    def store(self) -> LineageStore:
        if self._store is None:
            # a database server restarted mid-search: writes wait for it (up to a minute)
            self._store = LineageStore(self.db_url, write=True, retry_s=WRITE_RETRY_S)
        return self._store

    def get_state(self) -> dict[str, Any]:
        return {
            "pending": self._pending,
            "last": self._last,
            "recorded": sorted(self._recorded),
            "started": self._started,
            "retried": self._retried,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._pending = {
            k: [(int(b), dict(v)) for b, v in rows] for k, rows in state["pending"].items()
        }
        self._last = dict(state["last"])
        self._recorded = set(state["recorded"])
        self._started = dict(state.get("started", {}))  # absent in older snapshots
        self._retried = dict(state.get("retried", {}))
        self._reconcile = True

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self._reconcile:  # the first step after a restore: Tune's trials are all back
            self._reconcile = False
            self._adopt_lost({str(t.trial_id) for t in trials})

    def _adopt_lost(self, known: set[str]) -> None:
        """Close lineage's trials that the restored Tune does not know. Each was recorded
        on its final report, so it trained to the end; the kill came before Tune's
        completion of it (left ``RUNNING``) or before its next snapshot."""
        lost = {t: s for t, s in self.store.trial_statuses(self.search).items()
                if t not in known}  # fmt: skip
        if not lost:
            return
        log.warning(
            "resume: %d trial(s) finished after Tune's last snapshot (%s); lineage keeps "
            "them and they count against budget.trials", len(lost), ", ".join(sorted(lost)),
        )  # fmt: skip
        for trial_id, status in lost.items():
            if status == "RUNNING":
                self.store.update_trial(trial_id, "TERMINATED", ended=_now())
        if self.progress is not None:
            self.progress.carry(lost.values())

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        # the first start counts: a trial resumed after a crash keeps its start time
        self._started.setdefault(str(trial.trial_id), _now().isoformat())

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        if not is_trial_result(result):
            return
        trial_id = str(trial.trial_id)
        report = TrialReport.from_result(result)
        rows = [(r.epoch, _values(r)) for r in report.evaluations]
        self._last[trial_id] = {
            k: v for k, v in result.items() if _plain(v) and k != EPOCH_HISTORY
        }
        if trial_id in self._recorded:
            self.store.record_metrics_many(trial_id, rows, arch_id=self._measured(report))
            return
        self._pending.setdefault(trial_id, []).extend(rows)
        if report.is_final:
            self._record(trial, "RUNNING", None)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        # the driver goes on (summary, a next search): release the engine's connections
        if self._store is not None:
            self._store.close()
            self._store = None

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._finish(trial, "TERMINATED", None)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        line = trial_error_line(trial)
        log.warning("trial %s failed: %s", trial.trial_id, line)
        self._finish(trial, "ERROR", line)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        # an attempt failed (a killed worker, a lost node) and Tune runs the trial again
        # (budget retries): the trial's row keeps why, whatever the next attempt does
        line = trial_error_line(trial)
        log.warning("trial %s failed (%s); retrying it", trial.trial_id, line)
        self._retried[str(trial.trial_id)] = line

    def _finish(self, trial: Any, status: str, error: str | None) -> None:
        trial_id = str(trial.trial_id)
        if error is None and trial_id in self._retried:
            error = f"retried after a failed attempt: {self._retried[trial_id]}"
        if trial_id not in self._recorded and not self._record(trial, status, error):
            return
        self.store.update_trial(trial_id, status, error=error, ended=_now())

    def _record(self, trial: Any, status: str, error: str | None) -> bool:
        """Write the trial with its child and buffered metrics; False if nothing is known."""
        trial_id = str(trial.trial_id)
        last = self._last.get(trial_id)
        if last is None or not last.get("child_uri"):
            log.warning(
                "trial %s ended before reporting its architecture; not in lineage", trial_id
            )
            return False
        report = TrialReport.from_result(last)
        holder = report.final_arch_id if report.is_final else None
        child = self._child(report.arch_id, report.child_uri, report.structure_hash,
                            report.params, report.flops, report if holder == report.arch_id
                            else None)  # fmt: skip
        config = {k: v for k, v in dict(trial.config).items() if _plain(v)}
        growth = [self._growth(event, report if event["arch_id"] == holder else None)
                  for event in report.growth_events]  # fmt: skip
        # one transaction: a driver killed here leaves the trial with its metrics or not
        # at all, never a finished trial without them (tests/search/test_resume.py)
        self.store.record_trial(
            self.search, trial_id, report.parent_id, child, [dict(m) for m in report.morphisms],
            node=report.node_id, status=status, config=config, error=error,
            started=_parsed(self._started.get(trial_id)), growth=growth,
            metrics=self._pending.get(trial_id, []), metrics_arch_id=self._measured(report),
        )  # fmt: skip
        self._recorded.add(trial_id)
        self._pending.pop(trial_id, None)
        return True

    @staticmethod
    def _measured(report: TrialReport) -> str | None:
        """The architecture a grown trial's metrics belong to: the one holding its weights."""
        return report.final_arch_id if report.growth_events else None

    def _growth(self, event: Mapping[str, Any], weights: TrialReport | None) -> GrowthIn:
        """One growth inside the trial; the architecture the trial kept holds the weights."""
        post = self._child(str(event["arch_id"]), str(event["child_uri"]),
                           str(event["structure_hash"]), int(event["params"]),
                           int(event["flops"]), weights)  # fmt: skip
        return GrowthIn(str(event["pre_id"]), post, (dict(event["morphism"]),),
                        step=int(event["step"]), trigger=str(event["trigger"]),
                        scores=dict(event["scores"] or {}), loss_before=event["loss_before"],
                        loss_after=event["loss_after"])  # fmt: skip

    @staticmethod
    def _child(arch_id: str, uri: str, structure_hash: str, params: int, flops: int,
               weights: TrialReport | None) -> ArchitectureIn:  # fmt: skip
        graph = json.loads(artifacts.read_bytes(artifacts.graph_uri_for(uri)))
        return ArchitectureIn(
            arch_id=arch_id, graph=graph, structure_hash=structure_hash, params=params,
            flops=flops, weights_hash=weights.weights_hash if weights else None,
            weights_uri=weights.weights_uri if weights else None,
            weights_sha256=weights.weights_sha256 if weights else None,
        )  # fmt: skip


def _values(report: EpochReport) -> dict[str, float]:
    values = report.metrics()
    return {name: values[name] for name in LINEAGE_METRICS if name in values}


def _parsed(iso: str | None) -> datetime | None:
    return None if iso is None else datetime.fromisoformat(iso)


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, dict))


def trial_error_line(trial: Any) -> str:
    """One line for a failed trial: a MorphSearchError's own message (out of GPU memory,
    a child that is not the planned one), else where Tune wrote the traceback."""
    try:
        error = trial.get_pickled_error()
    except Exception:  # storage gone or unpicklable: fall back to the file's path
        error = None
    cause = getattr(error, "cause", error)
    if isinstance(cause, MorphSearchError):
        return str(cause).splitlines()[0]
    first = "" if cause is None else first_line(cause, "")[:200]
    what = f"trial failed ({first})" if first else "trial failed"
    where = getattr(trial, "error_file", None)
    return f"{what}; see {where}" if where else what
