"""Natural layouts: an MLP seed flattens its own input, so one dataset serves MLPs and CNNs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from morphsearch import builders
from morphsearch.arch import save
from morphsearch.data import load_dataset
from morphsearch.errors import ConfigError, InvalidArchitecture
from morphsearch.search.config import SearchConfig
from morphsearch.search.inputs import build_seed


def test_mlp_on_an_image_input_flattens_first_and_computes_the_flat_mlp() -> None:
    flat = builders.mlp([64, 8, 10], seed=3, dtype=torch.float64)
    image = builders.mlp([64, 8, 10], seed=3, dtype=torch.float64, input_shape=(1, 8, 8))
    assert image.input_shape == (1, 8, 8) and image.num_params == flat.num_params
    assert image.spec("flatten").op == "flatten"
    assert list(image.graph.successors("x")) == ["flatten"]
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    image = image.with_weights(flat.weights)  # same layers, same weights
    with torch.no_grad():
        torch.testing.assert_close(image.to_module()(x), flat.to_module()(x.reshape(5, 64)),
                                   rtol=0, atol=1e-10)
    with pytest.raises(InvalidArchitecture, match=r"input_shape \(1, 8, 8\) has 64 values but "
                                                  r"sizes\[0\] is 40"):
        builders.mlp([40, 8, 10], input_shape=(1, 8, 8))


def _config(seed_graph: dict[str, object]) -> SearchConfig:
    return SearchConfig.model_validate({"seed_graph": seed_graph, "dataset": {"name": "digits"}})


def test_build_seed_fits_the_datasets_layout_or_names_the_shape_to_use(tmp_path: Path) -> None:
    digits = load_dataset("digits", seed=0)
    mlp = build_seed(_config({"builder": "mlp", "hidden": [8]}), digits)
    assert mlp.input_shape == (1, 8, 8) and mlp.output_shape == (10,)
    cnn = build_seed(_config({"builder": "cnn", "args": {"channels": [4], "hidden": [8]}}),
                     digits)
    assert cnn.input_shape == mlp.input_shape  # one dataset serves both families
    save(builders.mlp([64, 8, 10]), tmp_path / "flat.json")  # a 64-feature MLP graph
    flat = _config({"path": str(tmp_path / "flat.json")})
    with pytest.raises(ConfigError, match=r"input shape \(64,\) does not fit dataset digits "
                                          r"\(1, 8, 8\); use a graph with input shape \[1, 8, 8\]"):
        build_seed(flat, digits)
    assert build_seed(flat, load_dataset("digits", seed=0, image=False)).input_shape == (64,)
