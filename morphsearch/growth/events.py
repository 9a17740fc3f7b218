"""What a growing training run records: growth events, per-step history, the result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from morphsearch.arch import Architecture

__all__ = ["EvalRecord", "GrowthEvent", "TrainResult"]


@dataclass(frozen=True)
class GrowthEvent:
    """One growth inside training: the edge ``parent -> child`` and why it happened.

    ``morphism`` is the morphism record's JSON (``morphisms.replay`` reproduces the child
    from the parent); ``scores`` maps ``morphism@site`` to the score of every candidate
    considered. ``loss_before``/``loss_after`` are measured in eval mode on the scoring
    batch, so for a function-preserving morphism they agree to float rounding. ``parent``
    holds the trained weights at the moment of growth; lineage stores the chain
    seed -> child_1 -> child_2 ... from these.
    """

    step: int
    trigger: str
    site: str
    morphism: Mapping[str, Any]
    scores: Mapping[str, float]
    loss_before: float
    loss_after: float
    params_before: int
    params_after: int
    parent_hash: str
    child_hash: str
    parent: Architecture = field(repr=False, compare=False)
    child: Architecture = field(repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """Everything but the architectures, as JSON-serialisable values."""
        return {
            "step": self.step,
            "trigger": self.trigger,
            "site": self.site,
            "morphism": dict(self.morphism),
            "scores": dict(self.scores),
            "loss_before": self.loss_before,
            "loss_after": self.loss_after,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "parent_hash": self.parent_hash,
            "child_hash": self.child_hash,
        }


@dataclass(frozen=True)
class EvalRecord:
    """Evaluation on held-out data after ``step`` (accuracy is None for regression)."""

    step: int
    loss: float
    accuracy: float | None
    num_params: int
    train_flops: int


@dataclass(frozen=True)
class TrainResult:
    """What :func:`~morphsearch.growth.train` returns.

    ``losses[i]``/``num_params[i]`` are the training loss and parameter count at step
    ``i``; ``train_flops`` is the cumulative training cost, counted as 3x the forward
    FLOPs per sample (forward + backward), growth scoring excluded.
    """

    arch: Architecture
    losses: tuple[float, ...]
    num_params: tuple[int, ...]
    events: tuple[GrowthEvent, ...]
    evals: tuple[EvalRecord, ...]
    train_flops: int
    wall_time: float
    stopped_early: bool

    @property
    def steps(self) -> int:
        return len(self.losses)
