"""The model card of an exported architecture, and the lineage path it shows.

:func:`model_card` is the ``MODEL_CARD.md`` of an export (:mod:`morphsearch.export`);
:func:`lineage_path` and :func:`describe_morphisms` also serve the HTML report
(:mod:`morphsearch.report`). Everything here reads the store only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from morphsearch import __version__
from morphsearch.lineage import ArchitectureRecord, BestResult, LineageStore, MetricRecord
from morphsearch.lineage.objective import metric_values, objective, test_scores
from morphsearch.lineage.render import EVALUATION_MEANING

if TYPE_CHECKING:  # pragma: no cover
    from morphsearch.refit import RefitResult

__all__ = ["PathStep", "describe_morphisms", "lineage_path", "model_card", "timestamp"]


@dataclass(frozen=True)
class PathStep:
    """One architecture on a lineage path, with the edge that made it and its metric."""

    arch_id: str
    kind: str
    trial_id: str | None
    morphisms: tuple[dict[str, Any], ...]
    params: int
    flops: int
    value: BestResult | None


def lineage_path(
    store: LineageStore, arch_id: str, values: dict[str, BestResult]
) -> list[PathStep]:
    """The architectures from the seed (first) down to ``arch_id`` (last).

    Args:
        values: best metric value by architecture id
            (from :func:`morphsearch.lineage.objective.metric_values`).
    """
    return [
        PathStep(n.arch_id, n.kind, n.trial_id, n.morphisms, n.params, n.flops,
                 values.get(n.arch_id))
        for n in reversed(store.ancestors(arch_id))
    ]  # fmt: skip


def describe_morphisms(morphisms: Sequence[dict[str, Any]]) -> str:
    """``widen.gradmax@fc1 (k=2, seed=0)`` for each morphism of an edge, joined by ``+``."""
    parts = []
    for record in morphisms:
        params = dict(record.get("params") or {})
        if record.get("seed") is not None:
            params["seed"] = record["seed"]
        args = ", ".join(f"{k}={v}" for k, v in params.items())
        site = f"@{record['site']}" if record.get("site") else ""
        parts.append(f"{record.get('name', '?')}{site}" + (f" ({args})" if args else ""))
    return " + ".join(parts) or "-"


def _value_text(result: BestResult | MetricRecord | None) -> str:
    return "-" if result is None else f"{result.value:.4g} (evaluation {result.evaluation})"


def model_card(
    store: LineageStore,
    record: ArchitectureRecord,
    *,
    metric: str | None = None,
    mode: str | None = None,
    refit: RefitResult | None = None,
) -> str:
    """``MODEL_CARD.md`` of an exported architecture: lineage, size, data, config
    (``refit``: when the exported weights are a refit's, its section and hash).

    Raises:
        ConfigError: the search config names no metric and none is given.
    """
    config = store.search(record.search).config
    metric, mode = objective(config, metric, mode, search=record.search)
    values = {r.arch_id: r for r in metric_values(store, record.search, metric, mode)}
    steps = lineage_path(store, record.arch_id, values)
    shapes = {n.get("op"): n.get("shape") for n in record.graph.get("nodes", [])}
    searchs = " (the search's)" if refit else ""
    lines = [
        f"# Model card: {record.arch_id}",
        "",
        f"Exported by morphsearch {__version__} on {timestamp()} from search `{record.search}` "
        f"(lineage database `{store.url}`).",
        "",
        *(["**The exported weights are a refit** (see \"Refit\" below): the search's "
           "values in this card are those of the weights by which the architecture was "
           "chosen, not of these.", ""] if refit else []),
        "| field | value |",
        "|---|---|",
        f"| architecture | `{record.arch_id}` |",
        f"| structure hash | `{record.structure_hash}` |",
        f"| weights sha256{searchs} | `{record.weights_sha256 or '-'}` |",
        *([f"| exported weights hash (refit) | `{refit.arch.weights_hash}` |"] if refit else []),
        f"| parameters | {record.params:,} |",
        f"| FLOPs per sample | {record.flops:,} |",
        f"| input shape | {shapes.get('input')} |",
        f"| {metric} ({mode}) | {_value_text(values.get(record.arch_id))} |",
        *[f"| {name} (scored once at the search's end, never used to select) | "
          f"{_value_text(score)} |" for name, score in test_scores(
              store, getattr(values.get(record.arch_id), "trial_id", None), record.arch_id
          ).items()],
        "",
        f"## Lineage: {len(steps) - 1} steps from the seed",
        "",
        f"| step | architecture | edge | trial | morphisms | params | FLOPs | {metric} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, s in enumerate(steps):
        lines.append(
            f"| {i} | `{s.arch_id}` | {s.kind} | {s.trial_id or '-'} | "
            f"{describe_morphisms(s.morphisms)} | {s.params:,} | {s.flops:,} | "
            f"{_value_text(s.value)} |"
        )
    dataset = config.get("dataset") or {}
    lines += [
        "",
        f"Values are the best each architecture reached; {EVALUATION_MEANING}.",
        "",
        *(refit.card_lines() if refit else []),
        "## Dataset",
        "",
        f"`{dataset.get('name', 'unknown')}`, options: `{json.dumps(dataset.get('options') or {})}`",
        "",
        "## Search config",
        "",
        "```json",
        json.dumps(config, indent=2, sort_keys=True),
        "```",
        "",
        "## Use",
        "",
        "```python",
        "import morphsearch",
        'model = morphsearch.load_module("THIS_FOLDER")  # graph.json + weights.safetensors',
        "```",
        "",
        "`model.onnx` (onnxruntime) and `model.pt2` (`torch.export.load`) take input `x` with "
        "a dynamic batch axis; both were checked against PyTorch at export.",
        "",
    ]
    return "\n".join(lines)


def timestamp() -> str:
    """Now, in UTC, to the minute (``2025-01-31 12:00 UTC``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
