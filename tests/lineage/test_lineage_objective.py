"""The one objective resolver and the store-to-values glue of reports and pictures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _lineage_data import build

from morphsearch.errors import ConfigError, NotFound
from morphsearch.lineage import LineageStore, open_store
from morphsearch.lineage.objective import (
    best_arch_id,
    metric_values,
    objective,
    search_objective,
)


@pytest.fixture(scope="module")
def built(module_db_url: str) -> Iterator[LineageStore]:
    with open_store(module_db_url, write=True) as opened:
        build(opened)
        yield opened


def test_objective_prefers_arguments_then_the_config() -> None:
    listed = {"objectives": [{"metric": "val_loss", "mode": "min"}, {"metric": "params"}]}
    assert objective(listed) == ("val_loss", "min")
    assert objective(listed, "val_acc") == ("val_acc", "max")  # another metric: max
    assert objective(listed, mode="max") == ("val_loss", "max")
    assert objective({"metric": "acc"}) == ("acc", "max")
    with pytest.raises(ConfigError, match=r"search .s. names no metric.*--metric NAME"):
        objective({"lr": 0.1}, search="s")
    with pytest.raises(ConfigError, match="the search config names no metric"):
        objective(None)
    with pytest.raises(ConfigError, match="--mode max or --mode min"):
        objective(listed, mode="up")


def test_every_scored_architecture_best_first(built: LineageStore) -> None:
    everyone = metric_values(built, "alpha", "val_acc", "max")
    assert [r.arch_id for r in everyone[:3]] == ["E2", "C", "E"]
    assert len(everyone) == len({r.arch_id for r in everyone}) > 3
    assert [r.arch_id for r in metric_values(built, "alpha", "val_acc", "max", 1)][:2] == [
        "C", "E"
    ]  # fmt: skip


def test_best_arch_id_follows_the_config(built: LineageStore) -> None:
    assert search_objective(built, "alpha") == ("val_acc", "max")
    assert best_arch_id(built, "alpha") == "E2"
    assert best_arch_id(built, "alpha", "val_acc", "min") == "B"
    with pytest.raises(NotFound, match="no nothing values recorded yet"):
        best_arch_id(built, "alpha", "nothing")
