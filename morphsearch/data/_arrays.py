"""Arrays to a checked :class:`Dataset`, and the stratified splits loaders share.

Every loader of fixed arrays (npz, CIFAR-10, a user factory, the built-in sets) goes
through :func:`from_arrays`, so bad data is refused in one place, before a search
writes anything: rows of inputs and targets that disagree, NaN or inf anywhere, class
labels that are not integers, are negative, or name a class the training split lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import numpy as np
import torch

from morphsearch.data._core import Dataset, Task, TensorSplit
from morphsearch.errors import ConfigError

__all__ = ["TaskOption", "check_pair", "from_arrays", "random_split", "stratified_split"]

TaskOption = Literal["auto", "classification", "regression"]
SPLITS = ("train", "val", "test")


def from_arrays(
    name: str,
    arrays: Mapping[str, np.ndarray | torch.Tensor],
    *,
    task: TaskOption = "auto",
    num_outputs: int | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Dataset:
    """A :class:`Dataset` from ``x_train, y_train, x_val, y_val, x_test, y_test``.

    ``task="auto"`` is classification when every target array has an integer dtype,
    else regression. Inputs become float32 (unless ``transform`` converts stored
    inputs per batch, as CIFAR-10's uint8 pixels); ``name`` appears in every error.

    Raises:
        ConfigError: one line naming the array and the fix.
    """
    xs = {s: _as_numpy(arrays[f"x_{s}"]) for s in SPLITS}
    ys = {s: _as_numpy(arrays[f"y_{s}"]) for s in SPLITS}
    for s in SPLITS:
        _check_rows(name, s, xs[s], ys[s])
        if transform is None:
            _check_finite(name, f"x_{s}", xs[s])
    shapes = {s: tuple(x.shape[1:]) for s, x in xs.items()}
    if len(set(shapes.values())) != 1:
        raise ConfigError(
            f"dataset {name!r}: inputs have different shapes per split "
            f"({', '.join(f'x_{s} {shape}' for s, shape in shapes.items())}); "
            "give every split the same sample shape"
        )
    if task == "auto":
        integer = all(np.issubdtype(y.dtype, np.integer) for y in ys.values())
        task = "classification" if integer else "regression"
    if task == "classification":
        targets, classes = _labels(name, ys)
        outputs = num_outputs or classes
        _check_label_range(name, targets, outputs)
    else:
        for s in SPLITS:
            _check_finite(name, f"y_{s}", ys[s])
        targets = {s: torch.as_tensor(y.astype(np.float32)).reshape(len(y), -1)
                   for s, y in ys.items()}
        outputs = num_outputs or int(targets["train"].shape[1])
    inputs = {s: torch.as_tensor(x if transform else x.astype(np.float32, copy=False))
              for s, x in xs.items()}
    splits = {s: TensorSplit(inputs[s], targets[s], transform) for s in SPLITS}
    resolved: Task = "classification" if task == "classification" else "regression"
    return Dataset(name, resolved, shapes["train"], int(outputs),
                   splits["train"], splits["val"], splits["test"])


def _as_numpy(a: np.ndarray | torch.Tensor) -> np.ndarray:
    return a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def check_pair(name: str, split: str, x: np.ndarray, y: np.ndarray) -> None:
    """Check ``x_<split>`` and ``y_<split>`` as a user gave them, before any splitting
    (so an error names the user's array, not a validation split carved from it)."""
    _check_rows(name, split, x, y)
    _check_finite(name, f"x_{split}", x)
    if not np.issubdtype(y.dtype, np.integer):
        _check_finite(name, f"y_{split}", y)


def _check_rows(name: str, split: str, x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim < 2:
        raise ConfigError(
            f"dataset {name!r}: x_{split} has shape {x.shape}; give it one row per sample "
            "(n, features...)"
        )
    if len(x) != len(y):
        raise ConfigError(
            f"dataset {name!r}: x_{split} has {len(x)} rows but y_{split} has {len(y)}; "
            "give inputs and targets the same number of rows"
        )
    if split == "train" and len(x) == 0:
        raise ConfigError(f"dataset {name!r}: x_train has no rows; give it training samples")


def _check_finite(name: str, key: str, a: np.ndarray) -> None:
    if not np.issubdtype(a.dtype, np.number):
        raise ConfigError(
            f"dataset {name!r}: {key} has dtype {a.dtype}; give it numbers (float or int)"
        )
    if np.issubdtype(a.dtype, np.integer):
        return
    bad = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1) if len(a) else np.zeros(0, bool)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ConfigError(
            f"dataset {name!r}: {key} has NaN or inf in {len(rows)} row(s) (first: row "
            f"{rows[0]}); remove or impute those rows"
        )


def _labels(name: str, ys: Mapping[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], int]:
    out: dict[str, torch.Tensor] = {}
    for s, y in ys.items():
        key = f"y_{s}"
        flat = y.reshape(-1) if y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1) else None
        if flat is None:
            raise ConfigError(
                f"dataset {name!r}: {key} has shape {y.shape}; classification needs one "
                "integer label per row"
            )
        if not np.issubdtype(flat.dtype, np.integer):
            _check_finite(name, key, flat[:, None])
            if flat.size and not np.array_equal(flat, np.round(flat)):
                raise ConfigError(
                    f"dataset {name!r}: {key} has non-integer labels (e.g. "
                    f"{float(flat[flat != np.round(flat)][0])!r}); classification needs integer "
                    "class labels 0..C-1 (or use task: regression)"
                )
        out[s] = torch.as_tensor(flat.astype(np.int64))
    classes = int(out["train"].max()) + 1
    return out, classes


def _check_label_range(name: str, ys: Mapping[str, torch.Tensor], classes: int) -> None:
    for s, y in ys.items():
        if not len(y):
            continue
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            raise ConfigError(
                f"dataset {name!r}: y_{s} has label {low if low < 0 else high}, outside the "
                f"classes 0..{classes - 1}; number classes 0..C-1 (C-1 being the largest "
                "label in y_train)"
            )


def stratified_split(
    y: np.ndarray, fractions: tuple[float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (train, val, test) with each class split in the same proportions."""
    val_fraction, test_fraction = fractions
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"val_fraction {val_fraction} and test_fraction {test_fraction} must be >= 0 "
            "and sum to less than 1"
        )
    rng = np.random.default_rng(seed)
    parts: tuple[list[np.ndarray], ...] = ([], [], [])
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_val = round(len(idx) * val_fraction)
        n_test = round(len(idx) * test_fraction)
        parts[1].append(idx[:n_val])
        parts[2].append(idx[n_val:n_val + n_test])
        parts[0].append(idx[n_val + n_test:])
    train, val, test = (np.sort(np.concatenate(p)) for p in parts)
    return train, val, test


def random_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): a random ``fraction`` of ``n`` rows for validation."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"val_fraction {fraction} must be in [0, 1)")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = round(n * fraction)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
