"""Datasets: the GradMax teacher-student task, sklearn digits, MNIST-1D and user ``.npz`` files.

Every loader returns a frozen :class:`Dataset` with fixed train/validation/test splits that
depend only on the name, the options and ``seed``, so a search and its replays see the same
data.

>>> data = load_dataset("digits", seed=0)
>>> data.input_shape, data.num_outputs, data.task
((64,), 10, 'classification')
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from morphsearch.errors import ConfigError

__all__ = ["Dataset", "list_datasets", "load_dataset"]

Task = Literal["classification", "regression"]
Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class Dataset:
    """A dataset with fixed splits.

    Inputs are float32 tensors of shape ``(n, *input_shape)``. Targets are int64 class
    labels of shape ``(n,)`` for classification, float32 of shape ``(n, num_outputs)`` for
    regression (the convention of :data:`morphsearch.morphisms.Batch`).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: Task
    input_shape: tuple[int, ...]
    num_outputs: int

    def split(self, which: Split) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)`` of one split.

        Raises:
            ConfigError: ``which`` is not train, val or test.
        """
        if which not in ("train", "val", "test"):
            raise ConfigError(f"dataset split {which!r} does not exist; use train, val or test")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")


Loader = Callable[..., Dataset]
_LOADERS: dict[str, Loader] = {}


def _loader(name: str) -> Callable[[Loader], Loader]:
    def decorate(fn: Loader) -> Loader:
        _LOADERS[name] = fn
        return fn

    return decorate


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return sorted(_LOADERS)


def load_dataset(name: str, *, seed: int = 0, **options: Any) -> Dataset:
    """Load (or generate) a dataset with splits fixed by ``seed``.

    Args:
        name: ``teacher_student``, ``digits``, ``mnist1d`` or ``npz``.
        seed: seeds generation and the split.
        **options: per dataset; ``teacher_student``: ``n_train`` (1000), ``n_val`` (500),
            ``n_test`` (1000), ``sizes`` ((20, 10, 10)), ``noise`` (0.0);
            ``digits``: ``image`` (False: 64 features; True: (1, 8, 8)), ``val_fraction``
            (0.15), ``test_fraction`` (0.2); ``mnist1d``: ``num_samples`` (5000),
            ``val_fraction`` (0.1); ``npz``: ``path`` (required), ``val_fraction`` (0.1,
            used when the file has no x_val/y_val).

    Returns:
        The :class:`Dataset`.

    Raises:
        ConfigError: unknown name or option, missing file, key or optional package.
    """
    try:
        loader = _LOADERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; valid datasets: {', '.join(list_datasets())}"
        ) from None
    accepted = [
        p for p, v in inspect.signature(loader).parameters.items() if v.kind is v.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        valid = ", ".join(p for p in accepted if p != "seed")
        raise ConfigError(
            f"dataset {name!r} has no option {unknown[0]!r}; valid options: {valid or 'none'}"
        )
    return loader(seed=seed, **options)


# ----------------------------------------------------------------------------- teacher-student


@_loader("teacher_student")
def _teacher_student(
    *,
    seed: int,
    n_train: int = 1000,
    n_val: int = 500,
    n_test: int = 1000,
    sizes: Sequence[int] = (20, 10, 10),
    noise: float = 0.0,
) -> Dataset:
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

    splits: list[torch.Tensor] = []
    for n in (n_train, n_val, n_test):
        x = torch.randn(int(n), sizes[0], generator=g)
        y = teacher(x) + noise * torch.randn(int(n), sizes[-1], generator=g)
        splits += [x, y]
    x_tr, y_tr, x_va, y_va, x_te, y_te = splits
    return Dataset("teacher_student", x_tr, y_tr, x_va, y_va, x_te, y_te, task="regression",
                   input_shape=(sizes[0],), num_outputs=sizes[-1])


# ----------------------------------------------------------------------------- digits


@_loader("digits")
def _digits(
    *, seed: int, image: bool = False, val_fraction: float = 0.15, test_fraction: float = 0.2
) -> Dataset:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    bunch = load_digits()
    x, y = bunch.data.astype(np.float64), bunch.target.astype(np.int64)
    parts = _stratified_split(y, (val_fraction, test_fraction), seed)
    shape = (1, 8, 8) if image else (64,)
    return _standardised("digits", x, y, parts, shape, num_outputs=10)


# ----------------------------------------------------------------------------- MNIST-1D


@_loader("mnist1d")
def _mnist1d(*, seed: int, num_samples: int = 5000, val_fraction: float = 0.1) -> Dataset:
    x, y, x_test, y_test = _mnist1d_arrays(seed, int(num_samples))
    train, val, _ = _stratified_split(y, (val_fraction, 0.0), seed)
    return _tensors_dataset(
        "mnist1d", (x[train], y[train], x[val], y[val], x_test, y_test), num_outputs=10
    )


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(seed: int, num_samples: int) -> tuple[np.ndarray, ...]:
    # Generating takes a few seconds; cache it, since trainers reload it per trial.
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise ConfigError(
            'dataset "mnist1d" needs the mnist1d package: pip install "morphsearch[mnist1d]"'
        ) from None
    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    # make_dataset reseeds numpy's global generator; restore it so we leave no trace.
    state = np.random.get_state()
    try:
        d = make_dataset(args)  # generated locally; never the package's download path
    finally:
        np.random.set_state(state)
    return d["x"], d["y"], d["x_test"], d["y_test"]


# ----------------------------------------------------------------------------- user .npz


@_loader("npz")
def _npz(*, seed: int, path: str | Path | None = None, val_fraction: float = 0.1) -> Dataset:
    if path is None:
        raise ConfigError('dataset "npz" needs option path=<file.npz>')
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"npz dataset file {str(file)!r} does not exist; check the path")
    with np.load(file, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    for key in ("x_train", "y_train", "x_test", "y_test"):
        if key not in arrays:
            raise ConfigError(
                f"npz dataset {str(file)!r} has no array {key!r}; it needs x_train, y_train, "
                f"x_test, y_test (x_val, y_val optional); found: {', '.join(sorted(arrays))}"
            )
    x, y = arrays["x_train"], arrays["y_train"]
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise ConfigError(f"npz dataset {str(file)!r} must have both x_val and y_val, or neither")
    if "x_val" in arrays:
        x_val, y_val = arrays["x_val"], arrays["y_val"]
    else:
        train, val = _random_split(len(y), val_fraction, seed)
        x, y, x_val, y_val = x[train], y[train], x[val], y[val]
    return _tensors_dataset(
        f"npz:{file.name}", (x, y, x_val, y_val, arrays["x_test"], arrays["y_test"])
    )


# ----------------------------------------------------------------------------- helpers


def _stratified_split(
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


def _random_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 <= fraction < 1:
        raise ConfigError(f"val_fraction {fraction} must be in [0, 1)")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = round(n * fraction)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _standardised(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    parts: tuple[np.ndarray, np.ndarray, np.ndarray],
    shape: tuple[int, ...],
    num_outputs: int,
) -> Dataset:
    """Standardise features with the training split's statistics (no test leakage)."""
    train = parts[0]
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std == 0] = 1.0  # constant pixels (digits' borders) stay at zero
    z = (x - mean) / std
    arrays = []
    for idx in parts:
        arrays += [z[idx].reshape(len(idx), *shape), y[idx]]
    return _tensors_dataset(name, tuple(arrays), num_outputs=num_outputs)


def _tensors_dataset(
    name: str, arrays: tuple[np.ndarray, ...], num_outputs: int | None = None
) -> Dataset:
    """Convert numpy splits to tensors; the task follows the targets' dtype."""
    xs = [torch.as_tensor(np.asarray(a, dtype=np.float32)) for a in arrays[0::2]]
    ys_np = [np.asarray(a) for a in arrays[1::2]]
    classification = all(np.issubdtype(a.dtype, np.integer) for a in ys_np)
    shapes = {tuple(x.shape[1:]) for x in xs}
    if len(shapes) != 1:
        raise ConfigError(f"dataset {name!r}: splits have different input shapes {sorted(shapes)}")
    if classification:
        ys = [torch.as_tensor(a.astype(np.int64)).reshape(-1) for a in ys_np]
        inferred = int(max(int(t.max()) for t in ys if t.numel()) + 1)
        task: Task = "classification"
    else:
        ys = [torch.as_tensor(a.astype(np.float32)) for a in ys_np]
        ys = [t.reshape(len(t), -1) for t in ys]
        inferred = int(ys[0].shape[1])
        task = "regression"
    for x, t in zip(xs, ys):
        if len(x) != len(t):
            raise ConfigError(f"dataset {name!r}: {len(x)} inputs but {len(t)} targets in a split")
    return Dataset(name, xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], task=task,
                   input_shape=shapes.pop(), num_outputs=num_outputs or inferred)
