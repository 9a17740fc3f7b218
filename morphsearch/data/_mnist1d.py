"""MNIST-1D (Greydanus & Kobak), generated locally by the ``mnist1d`` package.

The default is the package's own default generation (``get_dataset_args()``: seed 42,
5,000 samples, 4,000 train and 1,000 test), so results compare with the paper's; the
search seed only moves the validation split. Nothing is downloaded: the package's
``get_dataset`` fetches a pickle from GitHub, so it is never called.

Generation is re-implemented here (the package's ``make_dataset`` loop, in the same
order of random draws, checked equal to it by the tests) for one reason: validation
samples beyond the default train/test (``val_size``) must be normalised with the
default set's statistics, which ``make_dataset`` does not return.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from morphsearch.data._arrays import from_arrays, stratified_split
from morphsearch.data._core import DATASETS, Dataset
from morphsearch.errors import ConfigError

INSTALL = 'dataset "mnist1d" needs the mnist1d package: pip install "morphsearch[mnist1d]"'
# Generation options of mnist1d.data.get_dataset_args() a config may override.
GENERATION_OPTIONS = (
    "num_samples", "train_split", "template_len", "padding", "scale_coeff", "max_translation",
    "corr_noise_scale", "iid_noise_scale", "shear_scale", "shuffle_seq", "final_seq_length",
)
Args = tuple[tuple[str, Any], ...]  # hashable generation arguments (a cache key)


@DATASETS.register("mnist1d")
def mnist1d(
    *,
    seed: int,
    val_fraction: float = 0.1,
    val_size: int | None = None,
    generation_seed: int | None = None,
    num_samples: int | None = None,
    train_split: float | None = None,
    template_len: int | None = None,
    padding: Sequence[int] | None = None,
    scale_coeff: float | None = None,
    max_translation: int | None = None,
    corr_noise_scale: float | None = None,
    iid_noise_scale: float | None = None,
    shear_scale: float | None = None,
    shuffle_seq: bool | None = None,
    final_seq_length: int | None = None,
) -> Dataset:
    """MNIST-1D as ``(1, 40)`` sequences, 10 classes.

    Options: ``generation_seed`` and the package's generation options
    (``num_samples``, ``train_split``, ``padding``, …; ``None``: the package default);
    ``val_fraction`` (0.1): a validation split carved from train, stratified by ``seed``;
    ``val_size``: instead, that many extra samples generated beside the default set
    (same options, numpy seed ``SeedSequence([generation_seed, 1, seed])``, normalised
    with the default set's mean and std) for validation, so train keeps all its samples
    and test is never touched.
    """
    given = {k: v for k, v in locals().items() if k in GENERATION_OPTIONS and v is not None}
    args = _args(given, generation_seed)
    x, y, x_test, y_test = _default_split(args)
    if val_size is None:
        train, val, _ = stratified_split(y, (val_fraction, 0.0), seed)
        x_val, y_val, x, y = x[val], y[val], x[train], y[train]
    else:
        if int(val_size) < 1:
            raise ConfigError(f"mnist1d val_size {val_size} must be at least 1 sample")
        x_val, y_val = _extra(args, int(val_size), seed)
    arrays = {"x_train": x, "y_train": y, "x_val": x_val, "y_val": y_val,
              "x_test": x_test, "y_test": y_test}
    shaped = {k: v[:, None, :] if k.startswith("x") else v for k, v in arrays.items()}
    return from_arrays("mnist1d", shaped, task="classification", num_outputs=10)


def _args(given: dict[str, Any], generation_seed: int | None) -> Args:
    try:
        from mnist1d.data import get_dataset_args
    except ImportError:
        raise ConfigError(INSTALL) from None
    defaults = get_dataset_args(as_dict=True)
    merged = {k: defaults[k] for k in GENERATION_OPTIONS}
    merged.update(given)
    merged["padding"] = tuple(int(p) for p in merged["padding"])
    merged["seed"] = int(defaults["seed"] if generation_seed is None else generation_seed)
    if int(merged["num_samples"]) < 10:
        raise ConfigError(f"mnist1d num_samples {merged['num_samples']} must be at least 10")
    return tuple(sorted(merged.items()))


def _default_split(args: Args) -> tuple[np.ndarray, ...]:
    """Train and test exactly as ``mnist1d.data.make_dataset`` gives them."""
    raw, y, _ = _generate(args)
    z = (raw - raw.mean()) / raw.std()
    cut = int(len(y) * dict(args)["train_split"])
    return z[:cut], y[:cut], z[cut:], y[cut:]


@functools.lru_cache(maxsize=4)
def _extra(args: Args, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples from a separate generation, normalised like the default set."""
    raw, _, order = _generate(args)
    options = dict(args)
    extra_seed = int(np.random.SeedSequence([options["seed"], 1, seed]).generate_state(1)[0])
    per_class = -(-n // 10)
    more = {**options, "seed": extra_seed, "num_samples": per_class * 10, "shuffle_seq": False}
    x, y, _ = _generate(tuple(sorted(more.items())))
    if order is not None:  # the default set's sequence shuffle, not a new one
        x = x[..., order]
    z = (x - raw.mean()) / raw.std()
    # n // 10 per class, one more for the first n % 10 classes: balanced as the default set
    keep = np.sort(np.concatenate(
        [np.flatnonzero(y == c)[: n // 10 + (c < n % 10)] for c in range(10)]))
    return z[keep], y[keep]


@functools.lru_cache(maxsize=4)
def _generate(args: Args) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Raw (unnormalised) samples, labels, and the sequence shuffle (when shuffle_seq).

    Cached: generating 5,000 samples takes seconds and trainers reload the data per trial
    (callers never modify the arrays)."""
    try:
        from mnist1d.data import get_templates
        from mnist1d.transform import transform
        from mnist1d.utils import ObjectView
    except ImportError:
        raise ConfigError(INSTALL) from None
    options = dict(args)
    view = ObjectView({**options, "padding": list(options["padding"])})
    templates = get_templates()
    with _global_seed(options["seed"]):
        xs, ys = [], []
        per_class = options["num_samples"] // len(templates["y"])
        for label in range(len(templates["y"])):
            for _ in range(per_class):
                x, _t = transform(templates["x"][label], templates["t"], view)
                xs.append(x)
                ys.append(templates["y"][label])
        shuffle = np.random.permutation(len(ys))
        x_all, y_all = np.stack(xs)[shuffle], np.stack(ys)[shuffle]
        order = np.random.permutation(options["final_seq_length"]) if options[
            "shuffle_seq"] else None
    if order is not None:
        x_all = x_all[..., order]
    return x_all, y_all.astype(np.int64), order


@contextmanager
def _global_seed(seed: int) -> Iterator[None]:
    """Seed numpy's and Python's global generators as the package does, then restore them
    (its transforms draw from the global generators; we leave no trace)."""
    np_state, py_state = np.random.get_state(), random.getstate()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
