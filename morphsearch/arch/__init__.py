"""The architecture IR: graphs of layers, shapes, graph files and compilation to PyTorch."""

from morphsearch.arch.compile import relu
from morphsearch.arch.io import FORMAT, load, load_weights, save, save_weights
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
