"""The test split, used once: the search's top architectures scored at its end.

Selection never sees these numbers: the search ranks by validation metrics; at its end
the ``selection.test_top`` best architectures by the first objective are evaluated once on
the test split with the weights the trial kept, and recorded in lineage as
``test_accuracy`` / ``test_loss`` at the evaluation they were ranked by.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from morphsearch import artifacts
from morphsearch.data import load_dataset
from morphsearch.growth.trainer import evaluate
from morphsearch.lineage import LineageStore
from morphsearch.lineage.records import BestResult
from morphsearch.search.config import SearchConfig
from morphsearch.search.protocol import TEST_ACCURACY, TEST_LOSS

__all__ = ["TestScore", "score_on_test"]


@dataclass(frozen=True)
class TestScore:
    arch_id: str
    test_loss: float
    test_accuracy: float  # NaN for regression


_FRONT_POOL = 200  # the accuracy-vs-parameters front is taken among this many best


def _front(ranked: list[BestResult], mode: str) -> list[BestResult]:
    """The non-dominated members of ``ranked`` (best first): no other is as small and
    at least as good."""
    sign = 1 if mode == "max" else -1
    front, best_value = [], -math.inf
    for r in sorted(ranked, key=lambda r: (r.params, -sign * r.value)):
        if sign * r.value > best_value:
            front.append(r)
            best_value = sign * r.value
    return front


def score_on_test(store: LineageStore, config: SearchConfig, name: str) -> list[TestScore]:
    """Score on the test split the ``selection.test_top`` best architectures of search
    ``name`` and the members of its validation-vs-parameters front (so a small network
    on the front has a test score too), and record the scores (idempotent: a re-run
    overwrites the same rows). The test split never feeds back into a choice."""
    top = config.selection.test_top
    if not top:
        return []
    pool = store.best(name, config.metric, config.mode, k=max(top, _FRONT_POOL))
    chosen = {r.arch_id: r for r in pool[:top]}
    chosen.update({r.arch_id: r for r in _front(pool, config.mode)})
    ranked = list(chosen.values())
    if not ranked:
        return []
    data = load_dataset(config.dataset.name, seed=config.seed,
                        **config.dataset.loader_options())
    out = []
    for best in ranked:
        record = store.architecture(best.arch_id)
        if record.weights_uri is None or best.trial_id is None:
            continue
        arch = artifacts.read_architecture(record.weights_uri, record.weights_sha256)
        loss, acc = evaluate(arch.to_module(), data, "test", device=torch.device("cpu"))
        values = {TEST_LOSS: loss} if math.isnan(acc) else {TEST_LOSS: loss, TEST_ACCURACY: acc}
        store.record_metrics(best.trial_id, int(best.evaluation), values, arch_id=best.arch_id)
        out.append(TestScore(best.arch_id, loss, acc))
    return out
