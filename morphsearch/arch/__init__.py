"""The architecture IR: graphs of layers, shapes, graph files and compilation to PyTorch.

:class:`Architecture` is data plus graph queries; reading and writing files are the
functions :func:`load` and :func:`save` (:mod:`morphsearch.arch.io`).
"""

from morphsearch.arch.canonical import FORMAT
from morphsearch.arch.compile import relu
from morphsearch.arch.io import load, load_weights, save, save_weights
from morphsearch.arch.ir import Architecture, NodeSpec
from morphsearch.arch.ops import ACTIVATIONS, OPS, PARAMETRIC

__all__ = [
    "ACTIVATIONS",
    "FORMAT",
    "OPS",
    "PARAMETRIC",
    "Architecture",
    "NodeSpec",
    "load",
    "load_weights",
    "relu",
    "save",
    "save_weights",
]
