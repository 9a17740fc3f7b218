"""The test split, used once: the search's top architectures scored at its end.

Selection never sees these numbers: the search ranks by validation metrics; at its end
the ``selection.test_top`` best architectures by the first objective are evaluated once on
the test split with the weights the trial kept, and recorded in lineage as
``test_accuracy`` / ``test_loss`` at the budget of the evaluation they were ranked by.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from morphsearch import artifacts
from morphsearch.data import load_dataset
from morphsearch.growth.trainer import evaluate
from morphsearch.lineage import LineageStore
from morphsearch.search.config import SearchConfig
from morphsearch.search.protocol import TEST_ACCURACY, TEST_LOSS

__all__ = ["TestScore", "score_on_test"]


@dataclass(frozen=True)
class TestScore:
    arch_id: str
    test_loss: float
    test_accuracy: float  # NaN for regression


def score_on_test(store: LineageStore, config: SearchConfig, name: str) -> list[TestScore]:
    """Score the ``selection.test_top`` best architectures of search ``name`` on the
    test split and record the scores (idempotent: a re-run overwrites the same rows)."""
    top = config.selection.test_top
    ranked = store.best(name, config.metric, config.mode, k=top) if top else []
    if not ranked:
        return []
    options = dict(config.dataset.options)
    if config.dataset.path:
        options["path"] = config.dataset.path
    data = load_dataset(config.dataset.name, seed=config.seed, **options)
    out = []
    for best in ranked:
        record = store.architecture(best.arch_id)
        if record.weights_uri is None or best.trial_id is None:
            continue
        arch = artifacts.load_architecture(record.weights_uri, record.weights_sha256)
        loss, acc = evaluate(arch.to_module(), data, "test", device=torch.device("cpu"))
        values = {TEST_LOSS: loss} if math.isnan(acc) else {TEST_LOSS: loss, TEST_ACCURACY: acc}
        store.record_metrics(best.trial_id, int(best.budget), values, arch_id=best.arch_id)
        out.append(TestScore(best.arch_id, loss, acc))
    return out
