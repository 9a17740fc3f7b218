"""The parent pool: spread over the accuracy-vs-size front, and morphisms kept to
spatial or flat sites."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from morphsearch import builders
from morphsearch.errors import ConfigError
from morphsearch.search.config import SearchConfig
from tests.search.conftest import TINY, digits_space, load_config_text


def test_front_pool_spreads_over_the_accuracy_vs_size_front(tmp_path: Path) -> None:
    from types import SimpleNamespace

    space, seed = digits_space(tmp_path)
    graph = seed.to_json()
    # (params, val_accuracy): a..e on the front, x and y dominated
    points = {"a": (100, 0.70), "b": (200, 0.80), "c": (400, 0.85), "d": (800, 0.90),
              "e": (1600, 0.93), "x": (900, 0.88), "y": (1700, 0.92)}

    class Store:  # ranks like LineageStore.best / .pareto would
        def best(self, search: str, metric: str, mode: str, k: int = 1) -> list[Any]:
            ranked = sorted(points, key=lambda a: points[a][1], reverse=True)
            return [SimpleNamespace(arch_id=a) for a in ranked[:k]]

        def pareto(self, search: str, metric: str, mode: str = "max", cost: str = "params",
                   **kwargs: Any) -> list[Any]:
            front = [a for a in points if not any(
                points[b][0] <= points[a][0] and points[b][1] > points[a][1] for b in points)]
            return [SimpleNamespace(arch_id=a, cost=points[a][0], value=points[a][1])
                    for a in sorted(front, key=lambda a: points[a][0])]

        def architecture(self, arch_id: str) -> Any:
            return SimpleNamespace(arch_id=arch_id, weights_uri=f"{arch_id}.st",
                                   weights_sha256=None, graph=graph)

        def child_hashes(self, arch_id: str) -> set[str]:
            return set()

    space._store = Store()
    assert [p.arch_id for p in space.pool()] == ["e", "y"]  # best: the top two by accuracy
    data = {**TINY, "selection": {**TINY["selection"], "pool": "front", "pool_size": 3}}
    space.config = SearchConfig.model_validate(data)
    assert [p.arch_id for p in space.pool()] == ["e", "c", "a"]  # best, middle, smallest
    space.suggested |= {("c", str(i)) for i in range(3)}  # c has max_children children
    assert [p.arch_id for p in space.pool()] == ["e", "b", "a"]
    with pytest.raises(ConfigError, match="pool"):
        load_config_text(tmp_path, "selection: {pool: pareto}")


def test_sites_spatial_keeps_a_morphism_on_the_convolutions(tmp_path: Path) -> None:
    from morphsearch import morphisms as registry

    space, _ = digits_space(tmp_path, **{"widen.split": {"k": [2, 2], "sites": "spatial"},
                                   "deepen.identity": {"sites": "flat"}})
    seed = builders.mlp([40, 32, 10], input_shape=(1, 40))
    grown = registry.apply("conv.input", seed, registry.sites("conv.input", seed)[0]).child
    widen = {s for m, s, _ in space._candidates(grown, "widen.split", 0.0, 2)
             if m == "widen.split"}
    assert widen == {"convin1_conv"}  # not fc1
    deepen = {s for m, s, _ in space._candidates(grown, "deepen.identity", 0.0, 1)
              if m == "deepen.identity"}
    assert deepen and all(len(grown.shape(s)) == 1 for s in deepen)
    with pytest.raises(ConfigError, match="sites"):
        load_config_text(tmp_path, "morphisms: {widen.split: {sites: conv}}")
