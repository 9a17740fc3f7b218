"""What a search starts from, checked before Ray starts: the morphisms it names, the
dataset and the seed architecture.

Loading the dataset and building the seed is the check: whatever fails here fails in
one line naming the config field, and nothing has been written yet. Needs torch, not Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from morphsearch import builders, morphisms
from morphsearch.arch import Architecture, load
from morphsearch.arch.fx_import import from_module, module_from_factory
from morphsearch.data import Dataset, load_dataset
from morphsearch.errors import ConfigError, ModuleImportError, MorphSearchError
from morphsearch.growth.triggers import TRIGGERS
from morphsearch.search.config import SearchConfig
from morphsearch.search.growing import SCORERS

__all__ = [
    "SearchInputs",
    "absolute",
    "build_seed",
    "check_morphisms",
    "graph_path",
    "load_inputs",
]


def build_seed(config: SearchConfig, data: Dataset) -> Architecture:
    """The seed architecture: a graph file, a builder fitted to the dataset's shapes, or
    the user's module imported on a batch of two inputs of the dataset's shape.

    Raises:
        ConfigError: the graph does not fit the dataset, or the module cannot be imported.
    """
    spec = config.seed_graph
    if spec.path is not None:
        arch = load(graph_path(spec.path, config.source))
    elif spec.module is not None:
        arch = _imported_seed(spec.module, spec.args, data)
    elif spec.builder == "mlp":
        width = math.prod(data.input_shape)
        arch = builders.mlp([width, *spec.hidden, data.num_outputs], seed=config.seed,
                            input_shape=data.input_shape, **spec.args)
    elif spec.builder == "cnn":
        arch = builders.cnn(
            data.input_shape, num_classes=data.num_outputs, seed=config.seed, **spec.args
        )
    else:
        arch = builders.resnet(
            data.input_shape, num_classes=data.num_outputs, seed=config.seed, **spec.args
        )
    if tuple(arch.input_shape) != tuple(data.input_shape):
        raise ConfigError(
            f"seed_graph: input shape {tuple(arch.input_shape)} does not fit dataset "
            f"{data.name} {tuple(data.input_shape)}; use a graph with input shape "
            f"{list(data.input_shape)} (an MLP starts with a flatten node)"
        )
    return arch


def _imported_seed(factory: str, args: dict[str, Any], data: Dataset) -> Architecture:
    example = torch.randn((2, *data.input_shape), generator=torch.Generator().manual_seed(0))
    try:
        return from_module(module_from_factory(factory, **args), example)
    except ModuleImportError as exc:
        raise ConfigError(f"seed_graph.module: {exc}") from None


def graph_path(path: str, source: str | None) -> str:
    """A seed graph path as given, else relative to the config file or its parent folder."""
    candidates = [Path(path)]
    if source is not None:
        candidates += [Path(source).parent / path, Path(source).parent.parent / path]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    return path  # let the graph loader raise its own one-line error


def check_morphisms(config: SearchConfig) -> None:
    """Every morphism, trigger and scorer the config names is registered."""
    valid = morphisms.list_morphisms()
    named = [(f"morphisms.{name}", name) for name in config.morphisms]
    if config.growth.enabled:
        named.append(("growth.morphism", config.growth.morphism))
    for field, name in named:
        if name not in valid:
            raise ConfigError(
                f"{config.source or 'config'}: field '{field}': unknown morphism {name!r}; "
                f"valid morphisms: {', '.join(valid) or 'none registered'}"
            )
    for field, registry, name in (("growth.trigger", TRIGGERS, config.growth.trigger),
                                  ("growth.scorer", SCORERS, config.growth.scorer)):
        if name not in registry:
            raise ConfigError(
                f"{config.source or 'config'}: field '{field}': {registry.unknown(name)}"
            )


def absolute(uri: str) -> str:
    """A local path made absolute (the runs folder must not depend on the cwd later);
    a URI (``s3://``, ``file://``) as given."""
    return uri if "://" in uri else str(Path(uri).resolve())


@dataclass(frozen=True)
class SearchInputs:
    """The dataset and seed a search starts from, loaded (and so checked) before Ray."""

    data: Dataset
    options: dict[str, Any]
    seed: Architecture


def load_inputs(config: SearchConfig) -> SearchInputs:
    """Load the dataset and build the seed; errors name the config field to fix.

    Raises:
        ConfigError: the data or the seed graph cannot be loaded, or do not fit.
    """
    options = config.dataset.loader_options()
    field = "dataset.path" if config.dataset.path else "dataset"
    try:
        data = load_dataset(config.dataset.name, seed=config.seed, **options)
    except MorphSearchError as exc:
        raise _field_error(config, field, exc) from None
    augment = config.dataset.augmentation()
    if augment is not None:
        try:
            augment.check(data.input_shape)
        except ConfigError as exc:
            raise _field_error(config, "dataset.augment", exc) from None
    try:
        seed = build_seed(config, data)
    except ConfigError:
        raise  # build_seed's own errors name seed_graph already
    except MorphSearchError as exc:
        raise _field_error(config, "seed_graph.path", exc) from None
    return SearchInputs(data, options, seed)


def _field_error(config: SearchConfig, field: str, exc: MorphSearchError) -> ConfigError:
    return ConfigError(f"{config.source or 'config'}: field '{field}': {exc}")
