"""Refit: a chosen architecture trained again on the training and validation splits.

The usual last step of model selection on small data (auto-sklearn's and AutoGluon's
``refit``): the search picks an architecture by its validation score, and the weights a
user ships then see every non-test sample (on sklearn's digits the validation split is
269 of the 1,438 non-test images). Measured on the digits searches' picks it did not pay
on average (bench/BENCHMARKS.md, "Refit"): it is an option, off by default.

The refit starts from a fresh initialisation of the architecture's graph and trains it
with the search's own recipe (Adam at the trial's learning rate, the budget's schedule,
batch size and precision) for the seed trial's full budget, since a grown network's
weights came through several trials on the training split alone. There is no held-out
split left to stop on, so it trains for a fixed number of steps; its test score is
measured once, for the model card, and never selects anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from pydantic import ValidationError
from torch.utils.data import ConcatDataset

from morphsearch.arch import Architecture
from morphsearch.data import Dataset, TensorSplit, load_dataset
from morphsearch.errors import ConfigError
from morphsearch.growth.trainer import GrowthConfig, evaluate, train

__all__ = ["RefitResult", "refit", "with_val_in_train"]


@dataclass(frozen=True)
class RefitResult:
    """The refit weights and how they were made (the model card's "Refit" section)."""

    arch: Architecture
    steps: int
    lr: float
    batch_size: int
    samples: int  # training + validation
    seed: int
    test_loss: float
    test_accuracy: float  # NaN for regression

    def card_lines(self) -> list[str]:
        """Markdown for the model card."""
        acc = "" if math.isnan(self.test_accuracy) else f", accuracy {self.test_accuracy:.4f}"
        return [
            "## Refit",
            "",
            f"These weights were trained again from a fresh initialisation (seed {self.seed}) "
            f"on the training and validation splits together ({self.samples:,} samples): "
            f"{self.steps:,} Adam steps at lr {self.lr:.3g}, batch {self.batch_size}. "
            f"On the test split, scored once: loss {self.test_loss:.4g}{acc}. The lineage "
            "values above are the search's weights (training split only), by which this "
            "architecture was chosen.",
            "",
        ]


def with_val_in_train(data: Dataset) -> Dataset:
    """``data`` whose training split also holds the validation samples (in memory: one
    tensor pair; otherwise a concatenation)."""
    train_part, val_part = data.train, data.val
    if (isinstance(train_part, TensorSplit) and isinstance(val_part, TensorSplit)
            and train_part.transform is None and val_part.transform is None):
        merged: Any = TensorSplit(torch.cat([train_part.x, val_part.x]),
                                  torch.cat([train_part.y, val_part.y]))
    else:
        merged = ConcatDataset([train_part, val_part])
    return replace(data, train=merged)


def refit(
    arch: Architecture,
    search_config: Mapping[str, Any],
    *,
    lr: float,
    steps: int | None = None,
    seed: int = 0,
    device: str | None = None,
) -> RefitResult:
    """Train ``arch``'s graph from a fresh initialisation on train + validation.

    Args:
        arch: the chosen architecture (only its graph and dtype are used).
        search_config: the search's config as lineage stores it (dataset, budget).
        lr: Adam's learning rate (the chosen architecture's trial's).
        steps: optimizer steps; ``None``: the search's full trial budget.
        seed: the initialisation and batch order.

    Raises:
        ConfigError: the stored config does not validate, or the dataset has no
            validation split to add.
    """
    from morphsearch.search.config import SearchConfig  # deferred: pydantic models

    try:
        config = SearchConfig.model_validate(dict(search_config))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise ConfigError(f"the search's stored config does not validate ({where}: "
                          f"{first['msg']}); refit needs its dataset and budget") from None
    data = load_dataset(config.dataset.name, seed=config.seed,
                        **config.dataset.loader_options())
    if len(data.val) == 0:  # type: ignore[arg-type]
        raise ConfigError(f"dataset {config.dataset.name!r} has no validation split here: "
                          "refit would only repeat the search's training; export without "
                          "--refit")
    # the search's training batches: augmented as its trials' were
    merged = with_val_in_train(data).with_augment(config.dataset.augmentation())
    samples = len(merged.train)  # type: ignore[arg-type]
    if steps is None:
        steps = config.budget.in_steps(len(data.train))[0]  # type: ignore[arg-type]
    if steps < 1:
        raise ConfigError(f"refit steps {steps} must be at least 1")
    fresh = Architecture(arch.editable_graph(), seed=seed, dtype=arch.dtype)
    recipe = GrowthConfig(steps=steps, optimizer="adam", lr=lr,
                          lr_schedule=config.budget.lr_schedule,
                          batch_size=config.budget.batch_size, seed=seed, device=device,
                          precision=config.budget.precision,
                          morphisms=())  # fmt: skip
    trained = train(fresh, merged, recipe).arch
    on = torch.device(device or "cpu")
    loss, acc = evaluate(trained.to_module().to(on), data, "test", device=on)
    return RefitResult(trained, steps, lr, config.budget.batch_size, samples, seed, loss, acc)
