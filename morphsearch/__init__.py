"""morphsearch: grow neural networks with function-preserving morphisms.

The public names are imported lazily (PEP 562) so that light entry points, such as
``morphsearch lineage ...``, never pay for importing torch or ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "Architecture": "morphsearch.arch",
    "NodeSpec": "morphsearch.arch",
    "builders": "morphsearch.builders",
    "morphisms": "morphsearch.morphisms",
    "growth": "morphsearch.growth",
    "lineage": "morphsearch.lineage",
    "load_module": "morphsearch.export",
    "load_architecture": "morphsearch.export",
    "from_module": "morphsearch.arch.fx_import",
    "errors": "morphsearch.errors",
    # the user's path: data, a search, its lineage, the export
    "load_dataset": "morphsearch.data",
    "list_datasets": "morphsearch.data",
    "SearchConfig": "morphsearch.search.config",
    "load_config": "morphsearch.search.config",
    "run_search": "morphsearch.search.runner",
    "LineageStore": "morphsearch.lineage",
    "export_architecture": "morphsearch.export",
    # every user-facing error class
    **{
        name: "morphsearch.errors"
        for name in (
            "ConfigError", "DatabaseError", "DatabaseUnreachable", "ExportError",
            "GraphFileError", "InvalidArchitecture", "ModuleImportError", "MorphSearchError",
            "MorphismNotApplicable", "NotFound", "SchemaOutdated", "SearchError",
            "UnknownMorphism", "WeightsError",
        )
    },
}

__all__ = [
    "Architecture",
    "ConfigError",
    "DatabaseError",
    "DatabaseUnreachable",
    "ExportError",
    "GraphFileError",
    "InvalidArchitecture",
    "LineageStore",
    "ModuleImportError",
    "MorphSearchError",
    "MorphismNotApplicable",
    "NodeSpec",
    "NotFound",
    "SchemaOutdated",
    "SearchConfig",
    "SearchError",
    "UnknownMorphism",
    "WeightsError",
    "__version__",
    "builders",
    "errors",
    "export_architecture",
    "from_module",
    "growth",
    "lineage",
    "list_datasets",
    "load_config",
    "load_dataset",
    "load_architecture",
    "load_module",
    "morphisms",
    "run_search",
]

if TYPE_CHECKING:  # pragma: no cover
    from morphsearch import builders, errors, growth, lineage, morphisms
    from morphsearch.arch import Architecture, NodeSpec
    from morphsearch.arch.fx_import import from_module
    from morphsearch.data import list_datasets, load_dataset
    from morphsearch.errors import (
        ConfigError,
        DatabaseError,
        DatabaseUnreachable,
        ExportError,
        GraphFileError,
        InvalidArchitecture,
        ModuleImportError,
        MorphismNotApplicable,
        MorphSearchError,
        NotFound,
        SchemaOutdated,
        SearchError,
        UnknownMorphism,
        WeightsError,
    )
    from morphsearch.export import export_architecture, load_architecture, load_module
    from morphsearch.lineage import LineageStore
    from morphsearch.search.config import SearchConfig, load_config
    from morphsearch.search.runner import run_search


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'morphsearch' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if module_name.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
