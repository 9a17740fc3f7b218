"""In-training growth inside a search trial: the typed config becomes the loop's hook.

With ``growth.enabled`` a trial's step loop (:class:`~morphsearch.growth.GrowingTrainer`)
grows its network: the registered trigger (``growth.trigger``) decides when, the
registered scorer (``growth.scorer``) where, the configured morphism how. Each growth
becomes an edge ``pre -> post`` that the driver's callback records with
``record_growth``; :func:`event_record` is what a trial reports about one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from morphsearch import morphisms
from morphsearch.growth import GradMaxScore, NaturalExpansionScore, RoundRobin, SplittingScore
from morphsearch.growth.events import GrowthEvent
from morphsearch.growth.scores import Scorer
from morphsearch.growth.trainer import GrowthConfig
from morphsearch.growth.triggers import TRIGGERS, TriggerPlan
from morphsearch.registry import Registry
from morphsearch.search.config import TrialGrowthConfig

__all__ = ["SCORERS", "event_record", "loop_config"]

SCORERS: Registry[Callable[[], Scorer]] = Registry("scorer")
SCORERS.add("round_robin", RoundRobin)
SCORERS.add("gradmax", GradMaxScore)
SCORERS.add("splitting", SplittingScore)
SCORERS.add("natural_expansion", NaturalExpansionScore)


def loop_config(
    growth: TrialGrowthConfig, *, steps: int, lr: float, schedule: str, batch_size: int,
    seed: int, device: str, precision: str,
) -> GrowthConfig:
    """The step loop's config for a trial: Adam at ``lr`` on the per-step ``schedule``;
    with ``growth.enabled``, its trigger, scorer and morphism (``k`` only where the
    morphism takes one)."""
    base = GrowthConfig(steps=steps, optimizer="adam", lr=lr, lr_schedule=schedule,  # type: ignore[arg-type]
                        batch_size=batch_size, seed=seed, device=device,
                        precision=precision)  # type: ignore[arg-type]  # fmt: skip
    if not growth.enabled:
        return base
    plan = TriggerPlan(steps, growth.max_events, growth.tau, growth.check_every)
    takes_k = "k" in morphisms.get(growth.morphism).param_defaults()
    return GrowthConfig(
        **{**base.__dict__, "trigger": TRIGGERS.get(growth.trigger)(plan),
           "scorer": SCORERS.get(growth.scorer)(), "morphisms": (growth.morphism,),
           "morphism_params": {growth.morphism: {"k": growth.k}} if takes_k else {},
           "max_growths": growth.max_events},
    )  # fmt: skip


def event_record(event: GrowthEvent, pre_id: str, post_id: str, uri: str) -> dict[str, Any]:
    """What a trial reports about one growth (JSON): the edge, its scores and losses."""
    return {
        "pre_id": pre_id,
        "arch_id": post_id,
        "child_uri": uri,
        "structure_hash": event.child.structure_hash,
        "params": event.child.num_params,
        "flops": event.child.flops,
        "morphism": dict(event.morphism),
        "step": event.step,
        "trigger": event.trigger,
        "scores": dict(event.scores),
        "loss_before": event.loss_before,
        "loss_after": event.loss_after,
    }
