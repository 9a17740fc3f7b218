"""The from-scratch CNN space of ``bench/search_efficiency.py`` and its trainable.

A trial samples, with Optuna (define-by-run, as a user of ``OptunaSearch`` would write it):

- ``lr``: log-uniform over the morphsearch config's ``selection.lr``;
- ``depth``: 1-3 convolutions; per convolution ``c<i>`` channels (log-uniform, 4-64) and
  ``k<i>`` its kernel size (3/5/7 on 1-d signals, 3/5 on 2-d images), ``same`` padding,
  each followed by ReLU;
- ``pool``: ``none``; ``end`` (one 2x max pool after the convolutions, as
  ``builders.cnn``); or ``each`` (a 2x max pool after every convolution, which halves
  the resolution per layer as the strided MNIST-1D paper CNN does);

then flatten and one linear layer to the classes. Every trial starts from fresh weights
(seeded by the run's seed and the Optuna trial number, so a repeat builds the same
networks) and trains through the package's own ``train_child`` / ``TrialPlan`` path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from morphsearch import artifacts
from morphsearch.arch import Architecture
from morphsearch.builders import GraphBuilder
from morphsearch.search.protocol import TrialPlan
from morphsearch.search.trainable import TrialSetup, train_child

KERNELS = {1: (3, 5, 7), 2: (3, 5)}  # by the number of spatial dimensions
POOLS = ("none", "end", "each")
CHANNELS = (4, 64)
MAX_DEPTH = 3


@dataclass(frozen=True)
class ScratchSpace:
    """Define-by-run space for ``OptunaSearch`` (a module-level class, not a closure:
    Tune pickles the searcher in its checkpoints)."""

    spatial: int  # 1: (C, L) signals, 2: (C, H, W) images
    lr: tuple[float, float]
    seed: int = 0
    lr_schedule: str = "cosine"

    def __call__(self, trial: Any) -> dict[str, Any]:
        trial.suggest_float("lr", *self.lr, log=True)
        depth = trial.suggest_int("depth", 1, MAX_DEPTH)
        for i in range(1, depth + 1):
            trial.suggest_int(f"c{i}", *CHANNELS, log=True)
            trial.suggest_categorical(f"k{i}", KERNELS[self.spatial])
        trial.suggest_categorical("pool", POOLS)
        # constants: the same schedule within a trial as morphsearch's, and a weight seed
        # fixed by the run's seed and the trial's number (Tune's trial ids are random)
        return {"lr_schedule": self.lr_schedule, "trial_seed": self.seed * 10_000 + trial.number}


def layers_of(config: dict[str, Any]) -> tuple[list[tuple[int, int]], str]:
    """``([(channels, kernel), ...], pool)`` of a sampled config."""
    depth = int(config["depth"])
    convs = [(int(config[f"c{i}"]), int(config[f"k{i}"])) for i in range(1, depth + 1)]
    return convs, str(config["pool"])


def scratch_cnn(input_shape: Sequence[int], convs: Sequence[tuple[int, int]], pool: str,
                num_classes: int, seed: int = 0) -> Architecture:  # fmt: skip
    """The sampled CNN with fresh weights: conv-ReLU blocks, pooling, flatten, linear."""
    if len(input_shape) not in (2, 3):
        raise ValueError(f"a CNN needs a (C, L) or (C, H, W) input, got {list(input_shape)}")
    if pool not in POOLS:
        raise ValueError(f"pool {pool!r} is not one of {POOLS}")
    conv = "conv1d" if len(input_shape) == 2 else "conv2d"
    b = GraphBuilder(input_shape, name="scratch-cnn")
    h, size = b.input, min(input_shape[1:])
    for i, (channels, kernel) in enumerate(convs, start=1):
        h = b.add(conv, h, out_channels=channels, kernel_size=kernel, padding=kernel // 2,
                  name=f"conv{i}")  # fmt: skip
        h = b.add("relu", h, name=f"relu{i}")
        if (pool == "each" or (pool == "end" and i == len(convs))) and size >= 2:
            h = b.add("maxpool", h, kernel_size=2, name=f"pool{i}")
            size //= 2
    h = b.add("flatten", h, name="flatten")
    h = b.add("linear", h, out_features=num_classes, name="fc")
    return b.build(h, seed=seed)


def largest_params(input_shape: Sequence[int], num_classes: int) -> int:
    """Parameters of the largest network of the space (for the report)."""
    kernel = max(KERNELS[len(input_shape) - 1])
    convs = [(CHANNELS[1], kernel)] * MAX_DEPTH
    return scratch_cnn(input_shape, convs, "none", num_classes).num_params


def scratch_trial(config: dict[str, Any], setup: TrialSetup, input_shape: tuple[int, ...],
                  num_classes: int) -> None:  # fmt: skip
    """The Tune trainable: build the sampled CNN, save it, train it with ``train_child``."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id() or "local"
    seed = int(config.get("trial_seed", 0)) % 2**31
    convs, pool = layers_of(config)
    arch = scratch_cnn(input_shape, convs, pool, num_classes, seed=seed)
    ref = artifacts.write_architecture(arch, setup.artifacts_uri, f"init-{trial_id}")
    plan = TrialPlan(
        parent_id="", parent_uri=ref.uri, parent_sha256=ref.sha256, lr=float(config["lr"]),
        trial_seed=seed, lr_schedule=str(config.get("lr_schedule", "cosine")),
    )  # fmt: skip
    train_child(plan.to_config(), setup)


def describe(convs: Sequence[tuple[int, int]], pool: str) -> str:
    """``16k5-32k3/each``: a sampled network in one token (for logs)."""
    return "-".join(f"{c}k{k}" for c, k in convs) + f"/{pool}"


def grid(spatial: int) -> list[tuple[list[tuple[int, int]], str]]:
    """A small grid over the space: every depth, kernel and pooling at the channel
    bounds and their geometric middle (the test builds each)."""
    middle = round(math.sqrt(CHANNELS[0] * CHANNELS[1]))
    out = []
    for depth in range(1, MAX_DEPTH + 1):
        for channels in (CHANNELS[0], middle, CHANNELS[1]):
            for kernel in KERNELS[spatial]:
                for pool in POOLS:
                    out.append(([(channels, kernel)] * depth, pool))
    return out
