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
    "load": "morphsearch.export",
    "from_module": "morphsearch.arch.fx_import",
    "errors": "morphsearch.errors",
    "MorphSearchError": "morphsearch.errors",
    "InvalidArchitecture": "morphsearch.errors",
    "MorphismNotApplicable": "morphsearch.errors",
    "ModuleImportError": "morphsearch.errors",
    "UnknownMorphism": "morphsearch.errors",
}

__all__ = [
    "Architecture",
    "InvalidArchitecture",
    "ModuleImportError",
    "MorphSearchError",
    "MorphismNotApplicable",
    "NodeSpec",
    "UnknownMorphism",
    "__version__",
    "builders",
    "errors",
    "from_module",
    "growth",
    "lineage",
    "load",
    "morphisms",
]

if TYPE_CHECKING:  # pragma: no cover
    from morphsearch import builders, errors, growth, lineage, morphisms
    from morphsearch.arch import Architecture, NodeSpec
    from morphsearch.arch.fx_import import from_module
    from morphsearch.errors import (
        InvalidArchitecture,
        ModuleImportError,
        MorphismNotApplicable,
        MorphSearchError,
        UnknownMorphism,
    )
    from morphsearch.export import load


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
