"""Morphism operators: pure, function-preserving growth with inherited weights.

>>> from morphsearch import builders, morphisms
>>> parent = builders.mlp([20, 5, 10])
>>> result = morphisms.apply("widen.random", parent, "fc1", k=2)  # doctest: +SKIP
"""

from morphsearch.morphisms._registry import (
    Batch,
    Morphism,
    MorphismRecord,
    MorphismResult,
    apply,
    describe,
    get,
    list_morphisms,
    plan,
    preservation_error,
    register,
    replay,
    sites,
)
from morphsearch.morphisms.optim import transfer_optimizer, unit_positions

# Importing the operator modules registers them.
from morphsearch.morphisms import conv, deepen, downsample, splitting, tied, widen  # noqa: F401  isort: skip

__all__ = [
    "Batch",
    "Morphism",
    "MorphismRecord",
    "MorphismResult",
    "apply",
    "describe",
    "get",
    "list_morphisms",
    "plan",
    "preservation_error",
    "register",
    "replay",
    "sites",
    "transfer_optimizer",
    "unit_positions",
]
