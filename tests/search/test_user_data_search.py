"""Searches on a user's own data: a factory function and a folder of images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from morphsearch.errors import ConfigError
from morphsearch.lineage import LineageStore
from morphsearch.search.config import SearchConfig
from morphsearch.search.runner import run_search
from tests.search.conftest import TINY

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, name: str, dataset: dict[str, Any]) -> SearchConfig:
    return SearchConfig.model_validate({
        **TINY, "name": name, "dataset": dataset,
        "budget": {**TINY["budget"], "trials": 3},
        "database": f"sqlite:///{tmp_path}/lineage.db", "storage": str(tmp_path / "runs"),
    })


def _images(root: Path) -> None:
    from PIL import Image

    for label, colour in enumerate([(250, 10, 10), (10, 250, 10), (10, 10, 250)]):
        (root / f"class{label}").mkdir(parents=True)
        for i in range(12):
            shade = tuple(max(0, c - 8 * i) for c in colour)
            Image.new("RGB", (5, 4), shade).save(root / f"class{label}" / f"{i}.png")


def test_search_on_a_factory_dataset_and_on_an_image_folder(tmp_path: Path,
                                                            local_ray: None) -> None:
    factory = {"factory": "tests.search._user_data:blobs", "options": {"n": 120}}
    _images(tmp_path / "images")
    folder = {"name": "image_folder", "options": {"root": str(tmp_path / "images"),
                                                  "size": [4, 5]}}
    for name, dataset, shape in (("blobs", factory, [2, 2, 3]), ("pics", folder, [3, 4, 5])):
        result = run_search(_config(tmp_path, name, dataset))
        assert result.trials == 3 and result.best_value is not None
        store = LineageStore(f"sqlite:///{tmp_path}/lineage.db")
        assert store.summary(name).trials_by_status == {"TERMINATED": 3}
        graph = store.architecture(f"{name}/seed").graph
        inputs = [n for n in graph["nodes"] if n["op"] == "input"]
        assert inputs[0]["shape"] == shape  # the data's own layout; the MLP flattens it


def test_bad_user_data_is_refused_before_anything_is_written(tmp_path: Path,
                                                              local_ray: None) -> None:
    (tmp_path / "images" / "empty").mkdir(parents=True)
    config = _config(tmp_path, "bad", {"name": "image_folder",
                                       "options": {"root": str(tmp_path / "images")}})
    with pytest.raises(ConfigError, match="has no PNG or JPEG files"):
        run_search(config)
    assert not (tmp_path / "lineage.db").exists() and not (tmp_path / "runs").exists()
