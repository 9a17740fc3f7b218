"""``factory``: a user's function that returns the data, named ``"package.module:function"``.

Config syntax: ``dataset: {factory: "mypkg.data:make", options: {...}}``; the function
is called as ``make(**options)`` (plus ``seed=`` when it takes a ``seed`` parameter) on
the driver and on every worker, so its module must be importable there. It returns
either a :class:`~morphsearch.data.Dataset`, or ``(train, val, test)`` (a tuple, or a
mapping with those keys) where each split is an ``(x, y)`` pair of tensors/arrays or a
map-style ``torch.utils.data.Dataset`` of ``(x, y)`` samples.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from morphsearch.data._arrays import from_arrays
from morphsearch.data._core import DATASETS, Dataset
from morphsearch.errors import ConfigError

SPLITS = ("train", "val", "test")
RETURNS = ("return a Dataset, or (train, val, test) with each an (x, y) pair or a "
           "torch.utils.data.Dataset")


@DATASETS.register("factory")
def user_factory(*, seed: int, factory: str | None = None, **options: Any) -> Dataset:
    """Call the user function ``factory`` (``"package.module:function"``) with ``options``."""
    if not factory:
        raise ConfigError(
            'dataset "factory" needs a factory: dataset: {factory: "package.module:function"}'
        )
    fn = resolve(factory)
    kwargs = dict(options)
    if "seed" in inspect.signature(fn).parameters:
        kwargs["seed"] = seed
    try:
        result = fn(**kwargs)
    except Exception as exc:  # the user's code: report it in one line, with its name
        raise ConfigError(
            f"dataset factory {factory!r} raised {type(exc).__name__}: {exc}; fix the function "
            "or its options"
        ) from exc
    if isinstance(result, Dataset):
        return result
    return _from_splits(factory, _three(factory, result))


def resolve(target: str) -> Callable[..., Any]:
    """The function named by ``"package.module:function"``.

    Raises:
        ConfigError: malformed name, module not importable, no such function.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"dataset factory {target!r} must be written 'package.module:function'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"dataset factory {target!r}: cannot import {module_name!r} ({exc}); make the "
            "module importable on every worker (install it, or add its folder to PYTHONPATH)"
        ) from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)  # type: ignore[assignment]
        if fn is None:
            raise ConfigError(
                f"dataset factory {target!r}: module {module_name!r} has no {attr!r}; "
                "check the function's name"
            )
    if not callable(fn):
        raise ConfigError(f"dataset factory {target!r} is not a function; name a function")
    return fn


def _three(target: str, result: Any) -> list[Any]:
    if isinstance(result, Mapping):
        missing = [s for s in SPLITS if s not in result]
        if missing:
            raise ConfigError(
                f"dataset factory {target!r} returned no {missing[0]!r} split; {RETURNS}"
            )
        return [result[s] for s in SPLITS]
    if isinstance(result, Sequence) and len(result) == 3:
        return list(result)
    raise ConfigError(f"dataset factory {target!r} returned {type(result).__name__}; {RETURNS}")


def _is_pair(split: Any) -> bool:
    return (isinstance(split, Sequence) and len(split) == 2
            and all(isinstance(a, torch.Tensor | np.ndarray) for a in split))


def _from_splits(target: str, splits: list[Any]) -> Dataset:
    name = f"factory:{target.partition(':')[2]}"
    if all(_is_pair(s) for s in splits):
        arrays: dict[str, Any] = {}
        for split, (x, y) in zip(SPLITS, splits):
            arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
        return from_arrays(name, arrays)
    if not all(isinstance(s, TorchDataset) for s in splits):
        kinds = ", ".join(type(s).__name__ for s in splits)
        raise ConfigError(f"dataset factory {target!r} returned splits of type {kinds}; {RETURNS}")
    return _from_torch(name, splits)


def _from_torch(name: str, splits: list[Any]) -> Dataset:
    """Describe map-style datasets from their samples (labels of train read once)."""
    train = splits[0]
    if len(train) == 0:
        raise ConfigError(f"dataset {name!r}: the train split is empty; give it samples")
    x0, y0 = train[0]
    y0 = torch.as_tensor(y0)
    if y0.dim() == 0 and not torch.is_floating_point(y0):
        classes = getattr(train, "classes", None)
        num_outputs = len(classes) if classes else 1 + max(int(train[i][1]) for i in
                                                           range(len(train)))
        return Dataset(name, "classification", tuple(torch.as_tensor(x0).shape), num_outputs,
                       *splits)
    return Dataset(name, "regression", tuple(torch.as_tensor(x0).shape),
                   int(y0.reshape(-1).numel()), *splits)
