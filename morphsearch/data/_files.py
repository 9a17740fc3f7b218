"""Datasets read from local files: a user's ``.npz`` and the CIFAR-10 binary release.

Nothing here downloads or unpickles anything (``np.load(allow_pickle=False)``; CIFAR-10
is read from its binary release, not the Python-pickle one).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from morphsearch.data._arrays import (
    TaskOption,
    check_pair,
    from_arrays,
    random_split,
    stratified_split,
)
from morphsearch.data._core import DATASETS, Dataset
from morphsearch.errors import ConfigError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR_RECORD = 1 + 3 * 32 * 32  # one label byte, then 1024 red, 1024 green, 1024 blue


@DATASETS.register("npz")
def npz(
    *, seed: int, path: str | Path | None = None, val_fraction: float = 0.1,
    task: TaskOption = "auto",
) -> Dataset:
    """A user's ``.npz`` with arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``.

    ``x_val``/``y_val`` are optional: without them ``val_fraction`` (0.1) of the training
    rows, drawn by ``seed``, validate. Inputs keep their own trailing shape (``(n, 1, 40)``
    gives input shape ``(1, 40)``). ``task`` (auto): integer targets are class labels.
    """
    if path is None:
        raise ConfigError('dataset "npz" needs option path=<file.npz>')
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"npz dataset file {str(file)!r} does not exist; check the path")
    arrays = _read_npz(file)
    name = f"npz:{file.name}"
    for key in NPZ_KEYS:
        if key not in arrays:
            raise ConfigError(
                f"npz dataset {str(file)!r} has no array {key!r}; it needs x_train, y_train, "
                f"x_test, y_test (x_val, y_val optional); found: "
                f"{', '.join(sorted(arrays)) or 'no arrays'}"
            )
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise ConfigError(f"npz dataset {str(file)!r} must have both x_val and y_val, or neither")
    # check the arrays the user wrote, under their names, before any split is carved
    for split in ("train", "val", "test"):
        if f"x_{split}" in arrays:
            check_pair(name, split, arrays[f"x_{split}"], arrays[f"y_{split}"])
    if "x_val" not in arrays:
        train, val = random_split(len(arrays["y_train"]), val_fraction, seed)
        x, y = arrays["x_train"], arrays["y_train"]
        arrays.update(x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val])
    return from_arrays(name, arrays, task=task)


def _read_npz(file: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(file, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise ValueError("a single array, not an archive")
            return {k: archive[k] for k in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(
            f"npz dataset {str(file)!r} is not a readable .npz archive ({exc}); write it with "
            "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
        ) from None


@dataclass(frozen=True)
class Standardise:
    """uint8 pixels to float32, standardised per channel (picklable for loader workers)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, len(self.mean)) + (1,) * (x.dim() - 2)
        mean = torch.tensor(self.mean).reshape(shape)
        std = torch.tensor(self.std).reshape(shape)
        return (x.float() - mean) / std


@DATASETS.register("cifar10")
def cifar10(*, seed: int, root: str | Path | None = None, val_fraction: float = 0.1) -> Dataset:
    """CIFAR-10 from its binary release in ``root`` (``(3, 32, 32)``, 10 classes).

    ``root`` holds ``cifar-10-batches-bin/`` (or is that folder): ``data_batch_1.bin`` ..
    ``data_batch_5.bin`` and ``test_batch.bin``. ``val_fraction`` (0.1) of the training
    images, stratified by ``seed``, validate. Pixels stay uint8 in memory and are
    standardised per channel (training split statistics) batch by batch.
    """
    if root is None:
        raise ConfigError(
            f'dataset "cifar10" needs option root=<folder with cifar-10-batches-bin>; '
            f"download and extract {CIFAR_URL}"
        )
    folder = Path(root).expanduser()
    if (folder / "cifar-10-batches-bin").is_dir():
        folder = folder / "cifar-10-batches-bin"
    x, y = _read_batches([folder / f"data_batch_{i}.bin" for i in range(1, 6)])
    x_test, y_test = _read_batches([folder / "test_batch.bin"])
    train, val, _ = stratified_split(y, (val_fraction, 0.0), seed)
    pixels = x[train].astype(np.float64) if len(train) else np.zeros((1, 3, 1, 1))
    mean = pixels.mean(axis=(0, 2, 3))
    std = pixels.std(axis=(0, 2, 3))
    std[std == 0] = 1.0
    arrays = {"x_train": x[train], "y_train": y[train], "x_val": x[val], "y_val": y[val],
              "x_test": x_test, "y_test": y_test}
    transform = Standardise(tuple(map(float, mean)), tuple(map(float, std)))
    return from_arrays("cifar10", arrays, task="classification", num_outputs=10,
                       transform=transform)


def _read_batches(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for file in files:
        if not file.is_file():
            raise ConfigError(
                f"cifar10 file {str(file)!r} does not exist; set root to the folder that "
                f"holds cifar-10-batches-bin (extracted from {CIFAR_URL})"
            )
        raw = np.fromfile(file, dtype=np.uint8)
        if raw.size == 0 or raw.size % CIFAR_RECORD:
            raise ConfigError(
                f"cifar10 file {str(file)!r} has {raw.size} bytes, not a whole number of "
                f"{CIFAR_RECORD}-byte records; extract the binary release again"
            )
        records = raw.reshape(-1, CIFAR_RECORD)
        ys.append(records[:, 0].astype(np.int64))
        xs.append(records[:, 1:].reshape(-1, 3, 32, 32))
    return np.concatenate(xs), np.concatenate(ys)
