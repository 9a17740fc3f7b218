"""Options for measuring search efficiency: weight inheritance on/off, training FLOPs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from morphsearch import artifacts, builders
from morphsearch.data import load_dataset
from morphsearch.errors import ConfigError
from morphsearch.search import trainable
from morphsearch.search.config import SearchConfig, load_config
from morphsearch.search.runner import TrainFlopsStopper
from morphsearch.search.trainable import (
    TrialSetup,
    _grow_child,
    morphism_flops,
    train_child,
    train_epoch_flops,
)
from tests.search.conftest import TINY


def test_defaults_inherit_and_no_flops_budget() -> None:
    config = SearchConfig.model_validate(TINY)
    assert config.selection.inherit_weights is True
    assert config.budget.max_train_flops is None


def test_options_parse_and_validate(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(
        "seed_graph: {builder: mlp}\ndataset: {name: digits}\n"
        "selection: {inherit_weights: false}\nbudget: {max_train_flops: 1.0e9}\n"
    )
    config = load_config(path)
    assert config.selection.inherit_weights is False
    assert config.budget.max_train_flops == 1e9
    path.write_text(
        "seed_graph: {builder: mlp}\ndataset: {name: digits}\nbudget: {max_train_flops: 0}\n"
    )
    with pytest.raises(ConfigError, match="max_train_flops"):
        load_config(path)


def _parent_config(tmp_path: Path, morphism: str) -> dict[str, Any]:
    parent = builders.mlp([64, 8, 10], activation="tanh", seed=3)
    ref = artifacts.save_architecture(parent, str(tmp_path), "parent")
    return {
        "parent_uri": ref.uri,
        "parent_sha256": ref.sha256,
        "morphism": morphism,
        "site": "fc1",
        "params": {"k": 4},
        "trial_seed": 7,
        "lr": 0.01,
    }


def test_inherit_off_reinitialises_the_same_graph(tmp_path: Path) -> None:
    data = load_dataset("digits", seed=0)
    probe = data.x_train[:32], data.y_train[:32]
    config = _parent_config(tmp_path, "widen.gradmax")
    inherited, records, spent = _grow_child(config, probe, inherit=True)
    fresh, records_off, spent_off = _grow_child(config, probe, inherit=False)
    assert inherited.structure_hash == fresh.structure_hash
    assert records == records_off and spent == spent_off > 0
    parent = artifacts.load_architecture(config["parent_uri"])
    x = data.x_val[:16]
    with torch.no_grad():
        want = parent.to_module()(x)
        assert torch.allclose(inherited.to_module()(x), want, atol=1e-5)
        assert not torch.allclose(fresh.to_module()(x), want, atol=1e-2)
    # GradMax pays a forward+backward pass of the parent over the batch on top of the check
    assert spent == morphism_flops("widen.gradmax", parent, inherited, 32)
    assert spent > morphism_flops("widen.split", parent, inherited, 32)


def test_train_flops_reported_cumulatively(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reports: list[dict[str, Any]] = []

    class Context:
        def get_trial_id(self) -> str:
            return "t0"

    monkeypatch.setattr(trainable.tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(trainable.tune, "get_context", lambda: Context())
    monkeypatch.setattr(trainable.tune, "report", lambda metrics, **_: reports.append(metrics))
    setup = TrialSetup(
        search="s",
        artifacts_uri=str(tmp_path / "art"),
        dataset="digits",
        dataset_options=(),
        data_seed=0,
        epochs=3,
        batch_size=64,
        cpus=1,
        growth={},
        checkpoint_every_s=1e9,
        inherit_weights=False,
    )
    config = _parent_config(tmp_path, "widen.split")
    train_child(config, setup)
    data = load_dataset("digits", seed=0)
    child_arch = artifacts.load_architecture(reports[-1]["weights_uri"])
    per_epoch = train_epoch_flops(child_arch, data)
    assert per_epoch == 3 * child_arch.flops * len(data.x_train)
    grow = reports[0]["train_flops"] - per_epoch
    assert grow > 0  # the morphism's probe passes are counted
    assert [r["train_flops"] for r in reports] == [grow + e * per_epoch for e in (1, 2, 3)]


def test_train_flops_stopper_sums_the_latest_value_per_trial() -> None:
    stopper = TrainFlopsStopper(100)
    assert not stopper("a", {"train_flops": 40})
    assert not stopper("a", {"train_flops": 60})  # cumulative per trial: 60, not 100
    assert not stopper("b", {"train_flops": 30})
    assert stopper("b", {"train_flops": 40})
    assert stopper.stop_all()
