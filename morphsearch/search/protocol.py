"""The trial hop, typed: what the driver plans, what a worker reports, and their names.

A :class:`TrialPlan` is what Optuna's suggestion resolves to on the driver; Ray carries it
to a worker as the trial's config dict (:meth:`TrialPlan.to_config`), and the worker reads
it back with :meth:`TrialPlan.from_config`. A worker reports :class:`TrialReport`\\ s; each
is one Ray result dict (:meth:`TrialReport.to_result`), read on the driver by the lineage
callback and the progress view with :meth:`TrialReport.from_result`.

This module imports neither torch nor ray: the driver-side modules (space, callback,
progress, runner) take the protocol from here, never from the worker module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

__all__ = [
    "EPOCH",
    "EPOCH_HISTORY",
    "EPOCH_METRICS",
    "FIRST_BATCH_LOSS",
    "KEPT_EPOCH",
    "LINEAGE_METRICS",
    "STEP",
    "TEST_ACCURACY",
    "TEST_LOSS",
    "TRAIN_FLOPS",
    "VAL_ACCURACY",
    "VAL_LOSS",
    "EpochReport",
    "PlannedMorphism",
    "TrialPlan",
    "TrialReport",
]

# Metric names (what a result dict holds, what lineage records, what configs rank by).
EPOCH = "epoch"  # the evaluation's index (1-based): an epoch, or eval_every_steps steps
STEP = "step"  # optimizer steps taken so far in the trial
TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"
VAL_ACCURACY = "val_accuracy"
FINAL_LOSS = "final_loss"
FIRST_BATCH_LOSS = "first_batch_loss"
TRAIN_FLOPS = "train_flops"
TRAIN_TIME_S = "train_time_s"
SETUP_TIME_S = "setup_time_s"
TEST_ACCURACY = "test_accuracy"
TEST_LOSS = "test_loss"
# A report carries, under this key, the evaluations since the previous report (JSON list,
# oldest first): a trial reports every ``report_every_s`` seconds, not every evaluation
# (each report is a round trip through the driver), and lineage still gets every one.
EPOCH_HISTORY = "epoch_history"
# Set on a trial's last report: the evaluation whose weights the trial kept (its best by
# the search's first objective). The report's metrics are that evaluation's, so Optuna,
# ASHA and lineage rank the trial by the weights it saved.
KEPT_EPOCH = "kept_epoch"

# Measured every evaluation (early stopping and the kept weights can watch these).
EPOCH_METRICS = (VAL_ACCURACY, VAL_LOSS, TRAIN_LOSS, FINAL_LOSS)
# What the lineage callback records per evaluation.
LINEAGE_METRICS = (
    TRAIN_LOSS, VAL_LOSS, VAL_ACCURACY, FINAL_LOSS, FIRST_BATCH_LOSS, TRAIN_TIME_S, SETUP_TIME_S,
)


@dataclass(frozen=True)
class PlannedMorphism:
    """The morphism a trial applies: name, site, parameters and seed (a record to replay)."""

    name: str
    site: str
    params: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "site": self.site, "params": dict(self.params),
                "seed": self.seed}  # fmt: skip


@dataclass(frozen=True)
class TrialPlan:
    """One trial as the driver planned it.

    Attributes:
        parent_id, parent_uri, parent_sha256: the parent architecture in lineage and the
            artifact store (its weights are checked against the sha256 when given).
        morphism: what to apply; ``None`` trains the parent as it is (the seed trial).
        child_structure_hash: the child's structure hash planned on the driver; the
            worker applies the morphism and refuses a child that differs.
        lr, lr_schedule: the trial's Adam learning rate and its per-step schedule.
        trial_seed: seeds the morphism, the batch order and a re-initialised child.
        fine_tune: the parent was trained, so an inheriting child fine-tunes
            (``budget.child_steps``) instead of training the full budget.
        inherit_optimizer: continue the parent's saved optimizer state.
    """

    parent_id: str
    parent_uri: str
    parent_sha256: str | None = None
    morphism: PlannedMorphism | None = None
    child_structure_hash: str | None = None
    lr: float = 1e-2
    lr_schedule: str = "cosine"
    trial_seed: int = 0
    fine_tune: bool = True
    inherit_optimizer: bool = False

    def to_config(self) -> dict[str, Any]:
        """Ray's config dict (flat plain values; the morphism as a nested dict)."""
        out = asdict(self)
        out["morphism"] = None if self.morphism is None else self.morphism.to_json()
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrialPlan:
        """Read a plan back from a trial's config (Ray may add keys of its own)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in config.items() if k in known}
        morphism = values.get("morphism")
        if isinstance(morphism, Mapping):
            values["morphism"] = PlannedMorphism(
                str(morphism["name"]), str(morphism["site"]), dict(morphism.get("params") or {}),
                int(morphism.get("seed", 0)),
            )
        return cls(**values)


@dataclass(frozen=True)
class EpochReport:
    """The metrics of one evaluation (NaN where not measured: accuracy in regression)."""

    epoch: int
    step: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    final_loss: float
    first_batch_loss: float
    train_flops: int
    train_time_s: float = 0.0
    setup_time_s: float = 0.0

    def metrics(self) -> dict[str, float]:
        """The finite numeric values, by metric name."""
        return {k: float(v) for k, v in asdict(self).items() if not _missing(v)}

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> EpochReport:
        names = {f.name for f in fields(cls)}
        got = {k: v for k, v in values.items() if k in names}
        got.setdefault(STEP, 0)
        for name in names - set(got):
            got[name] = math.nan
        return cls(**got)

    def value(self, metric: str) -> float | None:
        got = getattr(self, metric, None)
        return None if got is None or _missing(got) else float(got)


@dataclass(frozen=True)
class TrialReport:
    """One Ray result: the latest evaluation, the trial's identity, and at the end its
    saved weights.

    Attributes:
        latest: the evaluation this result reports (for a last report: the kept one,
            see ``kept_epoch``).
        history: the evaluations before ``latest`` since the previous report.
        arch_id, parent_id, node_id: lineage ids of the trial's child and where it ran.
        morphisms: the applied morphism records (JSON dicts, with preservation error).
        child_uri: where the child's graph (and at the end its weights) is stored.
        structure_hash, params, flops: the trial's child, before any growth.
        final_params, final_flops: the architecture the metrics are measured on.
        weights_*: the kept weights, on the last report only.
        final_arch_id: the architecture that holds the kept weights (a growth inside the
            trial makes it differ from ``arch_id``).
        growth_events: the growths inside the trial (JSON dicts).
        kept_epoch: on the last report, the evaluation whose weights were kept.
        last_epoch: the last evaluation the trial ran (``latest.epoch`` except on a last
            report whose kept evaluation is an earlier one).
        stopped_early: the trial stopped on patience.
    """

    latest: EpochReport
    arch_id: str
    parent_id: str | None
    child_uri: str
    structure_hash: str
    params: int
    flops: int
    morphisms: tuple[Mapping[str, Any], ...] = ()
    history: tuple[EpochReport, ...] = ()
    node_id: str | None = None
    final_params: int | None = None
    final_flops: int | None = None
    final_arch_id: str | None = None
    weights_uri: str | None = None
    weights_sha256: str | None = None
    weights_hash: str | None = None
    growth_events: tuple[Mapping[str, Any], ...] = ()
    kept_epoch: int | None = None
    last_epoch: int | None = None
    stopped_early: bool = False

    @property
    def evaluations(self) -> tuple[EpochReport, ...]:
        """Every evaluation this result carries, oldest first, each once (a last report's
        kept evaluation is one of its history's when it is not the latest)."""
        if self.kept_epoch is not None:
            return self.history
        return (*self.history, self.latest)

    @property
    def is_final(self) -> bool:
        return self.weights_uri is not None

    def to_result(self) -> dict[str, Any]:
        """Ray's result dict: the latest evaluation's metrics at top level (what Tune,
        Optuna and ASHA read), identity fields, and the batched history as JSON."""
        out: dict[str, Any] = asdict(self.latest)
        if self.kept_epoch is not None:  # the time attribute stays the last evaluation
            out[EPOCH] = self.last_epoch if self.last_epoch is not None else self.latest.epoch
        out.update(
            arch_id=self.arch_id, parent_id=self.parent_id, node_id=self.node_id,
            child_uri=self.child_uri, structure_hash=self.structure_hash,
            params=self.final_params if self.final_params is not None else self.params,
            flops=self.final_flops if self.final_flops is not None else self.flops,
            child_params=self.params, child_flops=self.flops,
            morphisms=json.dumps([dict(m) for m in self.morphisms]),
            stopped_early=self.stopped_early,
        )  # fmt: skip
        if self.history:
            out[EPOCH_HISTORY] = json.dumps([r.metrics() for r in self.history])
        if self.is_final:
            out.update(
                weights_uri=self.weights_uri, weights_sha256=self.weights_sha256,
                weights_hash=self.weights_hash, final_arch_id=self.final_arch_id or self.arch_id,
                growth_events=json.dumps([dict(e) for e in self.growth_events]),
                kept_epoch=self.kept_epoch,
            )  # fmt: skip
        return out

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> TrialReport:
        """Read a Ray result dict back (Ray adds keys of its own; they are ignored)."""
        latest = EpochReport.from_values(result)
        kept = result.get(KEPT_EPOCH)
        if kept is not None:
            latest = replace(latest, epoch=int(kept))
        history = tuple(
            EpochReport.from_values(r) for r in json.loads(result.get(EPOCH_HISTORY) or "[]")
        )
        return cls(
            latest=latest,
            arch_id=str(result["arch_id"]),
            parent_id=result.get("parent_id"),
            child_uri=str(result["child_uri"]),
            structure_hash=str(result["structure_hash"]),
            params=int(result.get("child_params", result.get("params", 0))),
            flops=int(result.get("child_flops", result.get("flops", 0))),
            morphisms=tuple(json.loads(result.get("morphisms") or "[]")),
            history=history,
            node_id=result.get("node_id"),
            final_params=_int_or_none(result.get("params")),
            final_flops=_int_or_none(result.get("flops")),
            final_arch_id=result.get("final_arch_id"),
            weights_uri=result.get("weights_uri"),
            weights_sha256=result.get("weights_sha256"),
            weights_hash=result.get("weights_hash"),
            growth_events=tuple(json.loads(result.get("growth_events") or "[]")),
            kept_epoch=None if kept is None else int(kept),
            last_epoch=_int_or_none(result.get(EPOCH)) if kept is not None else None,
            stopped_early=bool(result.get("stopped_early", False)),
        )


def is_trial_result(result: Mapping[str, Any]) -> bool:
    """Whether a Ray result dict came from a trial report (Tune also sends its own)."""
    return "arch_id" in result and "child_uri" in result


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
