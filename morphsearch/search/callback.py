"""Lineage is written on the driver, by a Ray Tune callback; workers need no database.

Per-epoch metrics are buffered until the trial's child architecture is recorded (its
final result carries the weights URI, or the trial ends without one: stopped by ASHA
or failed), then written with it. Every write is idempotent by Ray trial id, and the
buffer is part of the callback's state in Tune's experiment checkpoint, so a resumed
search records each trial exactly once.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timezone
from typing import Any

from ray.tune import Callback

from morphsearch import artifacts
from morphsearch.lineage import ArchitectureIn, LineageStore
from morphsearch.search.trainable import EPOCH_HISTORY

__all__ = ["METRIC_NAMES", "LineageCallback"]

log = logging.getLogger(__name__)

METRIC_NAMES = (
    "train_loss",
    "val_loss",
    "val_accuracy",
    "final_loss",
    "first_batch_loss",
    "train_time_s",
    "setup_time_s",
)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class LineageCallback(Callback):
    """Records trials, child architectures, edges and metrics in the lineage store.

    Args:
        db_url: the lineage database URL.
        search: the search name (created by the runner).
    """

    def __init__(self, db_url: str, search: str) -> None:
        self.db_url = db_url
        self.search = search
        self._pending: dict[str, list[tuple[int, dict[str, float]]]] = {}
        self._last: dict[str, dict[str, Any]] = {}
        self._recorded: set[str] = set()
        self._started: dict[str, str] = {}  # trial id -> ISO time its run began
        self._store: LineageStore | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_store"] = None
        return state

    @property
    def store(self) -> LineageStore:
        if self._store is None:
            self._store = LineageStore(self.db_url, write=True)
        return self._store

    def get_state(self) -> dict[str, Any]:
        return {
            "pending": self._pending,
            "last": self._last,
            "recorded": sorted(self._recorded),
            "started": self._started,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._pending = {
            k: [(int(b), dict(v)) for b, v in rows] for k, rows in state["pending"].items()
        }
        self._last = dict(state["last"])
        self._recorded = set(state["recorded"])
        self._started = dict(state.get("started", {}))  # absent in older snapshots

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        # the first start counts: a trial resumed after a crash keeps its start time
        self._started.setdefault(str(trial.trial_id), _now().isoformat())

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        trial_id = str(trial.trial_id)
        # the epochs trained since the previous report, then this report's own
        reports = [*json.loads(result.get(EPOCH_HISTORY) or "[]"), result]
        rows = [(_budget(r), _values(r)) for r in reports]
        self._last[trial_id] = {
            k: v for k, v in result.items() if _plain(v) and k != EPOCH_HISTORY
        }
        if trial_id in self._recorded:
            self.store.record_metrics_many(trial_id, rows)
            return
        self._pending.setdefault(trial_id, []).extend(rows)
        if result.get("weights_uri"):
            self._record(trial, "RUNNING", None)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        # the driver goes on (summary, a next search): release the engine's connections
        if self._store is not None:
            self._store.close()
            self._store = None

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._finish(trial, "TERMINATED", None)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        error = getattr(trial, "error_file", None)
        self._finish(trial, "ERROR", f"trial failed; see {error}" if error else "trial failed")

    def _finish(self, trial: Any, status: str, error: str | None) -> None:
        trial_id = str(trial.trial_id)
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
        grown = json.loads(last.get("growth_events") or "[]")
        child = self._child(last, with_weights=not grown)
        config = {k: v for k, v in dict(trial.config).items() if _plain(v)}
        self.store.record_trial(
            self.search,
            trial_id,
            last.get("parent_id"),
            child,
            json.loads(last.get("morphisms") or "[]"),
            node=last.get("node_id"),
            status=status,
            config=config,
            error=error,
            started=_parsed(self._started.get(trial_id)),
        )
        self._recorded.add(trial_id)
        for i, event in enumerate(grown):
            self._record_growth(trial_id, event, last if i == len(grown) - 1 else None)
        measured = last.get("final_arch_id") if grown else None
        self.store.record_metrics_many(trial_id, self._pending.pop(trial_id, []), arch_id=measured)
        return True

    def _record_growth(
        self, trial_id: str, event: dict[str, Any], last: dict[str, Any] | None
    ) -> None:
        """One growth inside the trial; the last grown architecture holds the weights."""
        fields = dict(event)
        if last is not None:
            for key in ("weights_uri", "weights_sha256", "weights_hash"):
                fields[key] = last.get(key)
        post = self._child(fields, with_weights=last is not None)
        self.store.record_growth(
            trial_id,
            event["pre_id"],
            post,
            [event["morphism"]],
            step=int(event["step"]),
            trigger=str(event["trigger"]),
            scores=event["scores"],
            loss_before=event["loss_before"],
            loss_after=event["loss_after"],
        )

    def _child(self, last: dict[str, Any], *, with_weights: bool = True) -> ArchitectureIn:
        graph = json.loads(artifacts.read_bytes(artifacts.graph_uri_for(str(last["child_uri"]))))
        return ArchitectureIn(
            arch_id=str(last["arch_id"]),
            graph=graph,
            structure_hash=str(last["structure_hash"]),
            params=int(last.get("child_params", last.get("params", 0))),
            flops=int(last.get("child_flops", last.get("flops", 0))),
            weights_hash=last.get("weights_hash") if with_weights else None,
            weights_uri=last.get("weights_uri") if with_weights else None,
            weights_sha256=last.get("weights_sha256") if with_weights else None,
        )


def _values(report: dict[str, Any]) -> dict[str, float]:
    return {
        name: float(report[name])
        for name in METRIC_NAMES
        if isinstance(report.get(name), (int, float)) and not math.isnan(float(report[name]))
    }


def _budget(report: dict[str, Any]) -> int:
    return int(report.get("epoch", report.get("training_iteration", 0)))


def _parsed(iso: str | None) -> datetime | None:
    return None if iso is None else datetime.fromisoformat(iso)


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, dict))
