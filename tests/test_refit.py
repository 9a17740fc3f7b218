"""Refit: the chosen architecture trained again on the training and validation splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import ConcatDataset

from morphsearch import builders, refit
from morphsearch.data import Dataset, load_dataset
from morphsearch.errors import ConfigError
from morphsearch.growth.trainer import evaluate
from tests.search.conftest import tiny_config


def _stored(tmp_path: Path, **budget: int) -> dict[str, Any]:
    """The config as lineage stores it."""
    return tiny_config(tmp_path, **budget).model_dump(mode="json")


def test_validation_rows_join_the_training_rows_in_order() -> None:
    data = load_dataset("digits", seed=0)
    merged = refit.with_val_in_train(data)
    x, y = merged.split("train")
    torch.testing.assert_close(x, torch.cat([data.x_train, data.x_val]))
    torch.testing.assert_close(y, torch.cat([data.y_train, data.y_val]))
    torch.testing.assert_close(merged.split("test")[0], data.x_test)  # untouched
    assert len(data.train) == 1169  # type: ignore[arg-type]  # the original keeps its split


def test_splits_that_are_not_tensor_pairs_are_concatenated() -> None:
    data = load_dataset("digits", seed=0)
    listed = Dataset(data.name, data.task, data.input_shape, data.num_outputs,
                     list(data.train), list(data.val), data.test)  # type: ignore[arg-type]
    merged = refit.with_val_in_train(listed).train
    assert isinstance(merged, ConcatDataset) and len(merged) == 1169 + 269
    torch.testing.assert_close(merged[1169][0], data.x_val[0])


def test_refit_trains_a_fresh_copy_on_train_and_val(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    real_train = refit.train

    def spy(arch: Any, data: Any, config: Any) -> Any:
        seen.update(arch=arch, rows=data.split("train")[0], config=config)
        return real_train(arch, data, config)

    monkeypatch.setattr(refit, "train", spy)
    chosen = builders.mlp([64, 6, 10], seed=5, input_shape=(1, 8, 8))
    result = refit.refit(chosen, _stored(tmp_path, batch_size=32), lr=0.01, seed=3)
    data = load_dataset("digits", seed=0)
    torch.testing.assert_close(seen["rows"], torch.cat([data.x_train, data.x_val]))
    # a fresh initialisation of the same graph, not the chosen weights
    assert seen["arch"].structure_hash == chosen.structure_hash
    assert seen["arch"].weights_hash != chosen.weights_hash
    # the search's recipe: epochs_per_trial 2 of the 1,169 training rows at batch 32
    assert seen["config"].steps == result.steps == 2 * 37
    assert (seen["config"].lr, seen["config"].batch_size) == (0.01, 32)
    assert result.samples == 1169 + 269
    # the recorded test score is the returned weights' own
    loss, acc = evaluate(result.arch.to_module(), data, "test", device=torch.device("cpu"))
    assert (result.test_loss, result.test_accuracy) == pytest.approx((loss, acc), abs=1e-12)
    assert acc > 0.5  # it learned: chance is 0.1
    card = "\n".join(result.card_lines())
    assert "1,438 samples" in card and f"accuracy {acc:.4f}" in card


def test_refit_steps_override_the_budget(tmp_path: Path) -> None:
    result = refit.refit(builders.mlp([64, 4, 10], input_shape=(1, 8, 8)), _stored(tmp_path), lr=0.01, steps=5)
    assert result.steps == 5


def test_refit_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    arch = builders.mlp([64, 4, 10])
    no_val = _stored(tmp_path)
    no_val["dataset"] = {**no_val["dataset"], "options": {"val_fraction": 0.0}}
    with pytest.raises(ConfigError, match=r"has no validation split here.*without --refit"):
        refit.refit(arch, no_val, lr=0.01)
    broken = {**_stored(tmp_path), "budget": {"batch_size": 0}}
    with pytest.raises(ConfigError, match=r"stored config does not validate \(budget.batch_size"):
        refit.refit(arch, broken, lr=0.01)
    with pytest.raises(ConfigError, match="refit steps 0 must be at least 1"):
        refit.refit(arch, _stored(tmp_path), lr=0.01, steps=0)
