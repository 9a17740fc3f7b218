"""A search that starts from the user's own PyTorch model: ``seed_graph: {module: ...}``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from morphsearch.data import load_dataset
from morphsearch.errors import ConfigError
from morphsearch.lineage import LineageStore
from morphsearch.search.config import SearchConfig
from morphsearch.search.inputs import build_seed
from morphsearch.search.runner import run_search
from tests.arch import fx_models
from tests.search.conftest import TINY, tiny_config

MODULE_SEED = {"module": "tests.arch.fx_models:digits_mlp"}


def _config(tmp_path: Path, seed_graph: dict[str, object], **budget: int) -> SearchConfig:
    config = tiny_config(tmp_path, name="imported", **budget)
    return config.model_copy(update={"seed_graph": SearchConfig.model_validate(
        {**TINY, "seed_graph": seed_graph}).seed_graph})


def test_module_seed_is_the_imported_model(tmp_path: Path) -> None:
    config = _config(tmp_path, MODULE_SEED)
    data = load_dataset("digits")
    seed = build_seed(config, data)
    assert seed.input_shape == tuple(data.input_shape)
    module = fx_models.digits_mlp().eval()  # the factory seeds its initialisation
    x = data.x_val[:16]
    with torch.no_grad():
        torch.testing.assert_close(seed.to_module().eval()(x), module(x), rtol=0, atol=1e-6)


def test_seed_graph_takes_exactly_one_source() -> None:
    with pytest.raises(ValueError, match=r"exactly one of 'path'.*'builder', or 'module'"):
        SearchConfig.model_validate({**TINY, "seed_graph": {"builder": "mlp", **MODULE_SEED}})


def test_module_seed_refusal_names_the_field(tmp_path: Path) -> None:
    data = load_dataset("teacher_student")  # 20 features
    lstm = {"module": "tests.arch.fx_models:lstm_net", "args": {"features": 20}}
    with pytest.raises(ConfigError, match=r"^seed_graph\.module: cannot import node 'lstm'"):
        build_seed(_config(tmp_path, lstm), data)
    too_wide = _config(tmp_path, {"module": "tests.arch.fx_models:lstm_net"})  # 40 != 20
    with pytest.raises(ConfigError, match=r"^seed_graph\.module: LSTMNet fails on an example "
                                          r"input of shape \[2, 20\] at node 'lstm' at "
                                          r"fx_models\.py:\d+: input\.size\(-1\) must be"):
        build_seed(too_wide, data)


@pytest.mark.slow
def test_search_from_a_module_seed_runs_end_to_end(tmp_path: Path, local_ray: None) -> None:
    config = _config(tmp_path, MODULE_SEED, trials=2, max_concurrent=1)
    result = run_search(config)
    assert result.trials == 2
    store = LineageStore(config.database)
    summary = store.summary("imported")
    assert summary.trials_by_status == {"TERMINATED": 2}
    seed = store.architecture("imported/seed")
    assert seed.structure_hash == build_seed(config, load_dataset("digits")).structure_hash
    assert len(store.descendants("imported/seed")) == 3  # the seed and one child per trial
    store.close()
