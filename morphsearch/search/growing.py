"""In-training growth inside a search trial, through :mod:`morphsearch.growth`.

With ``growth.enabled`` a trial trains its child with the growing trainer: a trigger
(schedule, loss plateau or score threshold) decides when, the configured morphism how;
each growth becomes an edge ``pre -> post`` that the driver's callback records with
``record_growth``. The architectures grown inside the trial are written to the artifact
store as graphs; the last one also gets the trained weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from morphsearch import artifacts
from morphsearch.arch import Architecture
from morphsearch.data import Dataset

__all__ = ["GrowthOutcome", "grow_during_trial"]


@dataclass(frozen=True)
class GrowthOutcome:
    arch: Architecture
    train_loss: float
    events: list[dict[str, Any]]
    train_flops: int = 0  # training FLOPs of the trial (growth trainer's count)


def _trigger(options: dict[str, Any], steps: int) -> Any:
    from morphsearch.growth import LossPlateau, Schedule, ScoreThreshold

    if options["trigger"] == "schedule":
        every = max(1, steps // (int(options["max_events"]) + 1))
        return Schedule(start=every, every=every, max_growths=int(options["max_events"]))
    if options["trigger"] == "score":
        return ScoreThreshold(tau=0.0)
    return LossPlateau(window=max(10, steps // 10))


def grow_during_trial(
    child: Architecture,
    data: Dataset,
    options: dict[str, Any],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    lr_schedule: Literal["constant", "cosine"] = "constant",
    device: torch.device,
    base: str,
    arch_id: str,
) -> GrowthOutcome:
    """Train ``child`` for ``epochs`` with growth; write each grown graph to ``base``.

    Returns:
        The final architecture (trained weights), the mean loss of the last epoch's
        steps, and one JSON-ready dict per growth event (ids, URIs, scores, losses).
    """
    from morphsearch.growth import GrowthConfig, train

    steps = epochs * math.ceil(len(data.x_train) / batch_size)
    config = GrowthConfig(
        steps=steps,
        optimizer="adam",
        lr=lr,
        lr_schedule=lr_schedule,
        batch_size=batch_size,
        trigger=_trigger(options, steps),
        morphisms=(str(options["morphism"]),),
        morphism_params={str(options["morphism"]): {"k": int(options["k"])}},
        max_growths=int(options["max_events"]),
        seed=seed,
        device=str(device),
    )
    result = train(child, data, config)
    events, pre = [], arch_id
    for i, event in enumerate(result.events, start=1):
        post = f"{arch_id}/g{i}"
        uri = artifacts.join(base, post.replace("/", "__") + ".safetensors")
        graph = json.dumps(event.child.to_json(), sort_keys=True).encode()
        artifacts.write_bytes(artifacts.graph_uri_for(uri), graph)
        events.append(
            {
                "pre_id": pre,
                "arch_id": post,
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
        )
        pre = post
    per_epoch = max(1, steps // epochs)
    tail = result.losses[-per_epoch:] or (math.nan,)
    return GrowthOutcome(
        result.arch, float(sum(tail) / len(tail)), events, int(result.train_flops)
    )
