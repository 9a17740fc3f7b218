"""Built-in datasets: the GradMax teacher-student task and sklearn's digits."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from morphsearch.data._arrays import from_arrays, stratified_split
from morphsearch.data._core import DATASETS, Dataset
from morphsearch.errors import ConfigError


@DATASETS.register("teacher_student")
def teacher_student(
    *,
    seed: int,
    n_train: int = 1000,
    n_val: int = 500,
    n_test: int = 1000,
    sizes: Sequence[int] = (20, 10, 10),
    noise: float = 0.0,
) -> Dataset:
    """A ReLU teacher network's outputs on Gaussian inputs (regression, ``(sizes[0],)``).

    Options: ``n_train`` (1000), ``n_val`` (500), ``n_test`` (1000), ``sizes``
    ((20, 10, 10): the teacher's widths), ``noise`` (0.0: std of added target noise).
    """
    # GradMax, section 4.1 and appendix D: a ReLU teacher m_i:m_h:m_o with weights drawn
    # uniformly from [-1, 1]; inputs are standard Gaussian; targets are the teacher's outputs
    # (squared loss). The teacher's biases are drawn the same way.
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ConfigError(f"teacher_student sizes {sizes} must be >= 2 positive layer widths")
    g = torch.Generator().manual_seed(seed)
    layers = [
        (torch.rand(o, i, generator=g) * 2 - 1, torch.rand(o, generator=g) * 2 - 1)
        for i, o in itertools.pairwise(sizes)
    ]

    def teacher(x: torch.Tensor) -> torch.Tensor:
        for k, (w, b) in enumerate(layers):
            x = x @ w.T + b
            if k < len(layers) - 1:
                x = torch.relu(x)
        return x

    arrays: dict[str, torch.Tensor] = {}
    for split, n in zip(("train", "val", "test"), (n_train, n_val, n_test)):
        x = torch.randn(int(n), sizes[0], generator=g)
        arrays[f"x_{split}"] = x
        arrays[f"y_{split}"] = teacher(x) + noise * torch.randn(int(n), sizes[-1], generator=g)
    return from_arrays("teacher_student", arrays, task="regression")


@DATASETS.register("digits")
def digits(
    *, seed: int, image: bool = True, val_fraction: float = 0.15, test_fraction: float = 0.2
) -> Dataset:
    """sklearn's 8x8 digits (bundled, no download): ``(1, 8, 8)`` images, 10 classes.

    Options: ``image`` (True; False gives the former flat ``(64,)`` features),
    ``val_fraction`` (0.15) and ``test_fraction`` (0.2): stratified by ``seed``.
    Pixels are standardised with the training split's statistics.
    """
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    bunch = load_digits()
    x, y = bunch.data.astype(np.float64), bunch.target.astype(np.int64)
    parts = stratified_split(y, (val_fraction, test_fraction), seed)
    shape = (1, 8, 8) if image else (64,)
    return standardised("digits", x, y, parts, shape)


def standardised(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    parts: tuple[np.ndarray, np.ndarray, np.ndarray],
    shape: tuple[int, ...],
) -> Dataset:
    """Standardise features with the training split's statistics (no test leakage)."""
    train = parts[0]
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std == 0] = 1.0  # constant pixels (digits' borders) stay at zero
    z = (x - mean) / std
    arrays: dict[str, np.ndarray] = {}
    for split, idx in zip(("train", "val", "test"), parts):
        arrays[f"x_{split}"] = z[idx].reshape(len(idx), *shape)
        arrays[f"y_{split}"] = y[idx]
    return from_arrays(name, arrays, task="classification", num_outputs=10)
