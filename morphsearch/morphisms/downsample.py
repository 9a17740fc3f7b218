"""``conv.downsample``: insert a pooling layer after a hidden activation. NOT exact.

Halving the resolution (a ``maxpool``/``avgpool`` with kernel = stride = ``kernel_size``)
cannot preserve the function: the layers after it see fewer positions. The morphism says
so (``preserves_function = False``), and :func:`morphsearch.morphisms.apply` measures and
records how far the child moved (``preservation_error``). A searcher should train such
a child as a fresh one, using the inherited weights only as a warm start.

What is inherited: every weight keeps its value; convs and global pooling downstream are
resolution-agnostic. A ``linear`` behind a ``flatten`` whose input shrank gets its weights
resampled to the new grid (area-weighted: adaptive average pooling times the area
ratio), so an activation map that is constant over each pooling window gives the same
output as before.
"""

from __future__ import annotations

import math
from typing import Any

import networkx as nx
import torch
import torch.nn.functional as F

from morphsearch.arch import ACTIVATIONS, Architecture, NodeSpec
from morphsearch.errors import InvalidArchitecture, MorphismNotApplicable
from morphsearch.morphisms._registry import Batch, Morphism, register
from morphsearch.morphisms.conv import fresh_prefix

__all__ = ["Downsample", "downsample_sites"]

_POOLS = {"max": "maxpool", "avg": "avgpool"}
_ADAPTIVE: dict[int, Any] = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d}  # by rank


def _with_pool(parent: Architecture, site: str, pool: str, kernel_size: int) -> nx.DiGraph:
    """The parent's graph with a pool after ``site``, read by all of ``site``'s consumers."""
    graph = parent.editable_graph()
    node = f"{fresh_prefix(parent, 'down')}_{_POOLS[pool]}"
    graph.add_node(node, spec=NodeSpec(_POOLS[pool], kernel_size=kernel_size))
    for consumer in parent.consumers(site):
        ordered = parent.inputs(consumer)
        graph.remove_edge(site, consumer)
        graph.add_edge(node, consumer)
        for port, src in enumerate(ordered):  # explicit ports keep the input order
            graph.edges[node if src == site else src, consumer]["port"] = port
    graph.add_edge(site, node, port=0)
    return graph


def _skeleton(parent: Architecture, graph: nx.DiGraph) -> Architecture:
    """The child's shapes (weights freshly drawn: only the shapes are read)."""
    return Architecture(graph, None, dtype=parent.dtype)


def _why_not(arch: Architecture, site: str, pool: str = "max", kernel_size: int = 2) -> str | None:
    shape = arch.shape(site)
    if arch.op(site) not in ACTIVATIONS or len(shape) < 2:
        return f"{site!r} is {arch.op(site)}; pooling goes after a hidden activation of a conv"
    if min(shape[1:]) < kernel_size:
        return f"{site!r} has spatial size {list(shape[1:])}, smaller than the pool {kernel_size}"
    try:
        child = _skeleton(arch, _with_pool(arch, site, pool, kernel_size))
    except InvalidArchitecture as exc:
        return f"the smaller resolution after {site!r} does not fit a later layer ({exc})"
    for node in arch.nodes:
        if arch.op(node) == "flatten" and child.shape(node) != arch.shape(node):
            bad = [c for c in arch.consumers(node) if arch.op(c) != "linear"]
            if bad:
                return f"flatten {node!r} shrinks and feeds {arch.op(bad[0])} {bad[0]!r}"
    return None


def downsample_sites(arch: Architecture) -> list[str]:
    """Hidden activations with a spatial output whose pooling every later layer fits."""
    return [n for n in arch.nodes if arch.op(n) in ACTIVATIONS and _why_not(arch, n) is None]


def _resampled(weight: torch.Tensor, old: tuple[int, ...], new: tuple[int, ...]) -> torch.Tensor:
    """Dense weights over a ``(C, *old)`` grid moved to ``(C, *new)``, area-weighted."""
    out = weight.shape[0]
    grid = weight.reshape(out, old[0], *old[1:])
    area = math.prod(old[1:]) / math.prod(new[1:])
    return (_ADAPTIVE[len(old) - 1](grid, new[1:]) * area).reshape(out, -1)


@register
class Downsample(Morphism):
    """Insert a ``maxpool``/``avgpool`` after a hidden activation (not exact).

    Params:
        pool: ``"max"`` or ``"avg"``.
        kernel_size: window and stride of the pooling (2 halves each spatial dim).
    """

    name = "conv.downsample"
    preserves_function = False
    description = (
        "insert a pooling layer (kernel = stride = 2) after a conv activation; NOT "
        "function-preserving (dense weights after a flatten are resampled)"
    )

    def sites(self, arch: Architecture) -> list[str]:
        return downsample_sites(arch)

    def accepts(self, arch: Architecture, site: str) -> bool:
        return arch.op(site) in ACTIVATIONS and _why_not(arch, site) is None

    def why_not(self, arch: Architecture, site: str) -> str | None:
        return _why_not(arch, site)

    def transform(  # type: ignore[override]  # params are keyword-only by contract
        self,
        parent: Architecture,
        site: str,
        *,
        batch: Batch | None,
        generator: torch.Generator,
        pool: str = "max",
        kernel_size: int = 2,
    ) -> Architecture:
        if pool not in _POOLS:
            raise MorphismNotApplicable(f"{self.name}: pool={pool!r} must be 'max' or 'avg'")
        if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 2:
            raise MorphismNotApplicable(
                f"{self.name}: kernel_size={kernel_size!r} must be an int >= 2"
            )
        reason = _why_not(parent, site, pool, kernel_size)
        if reason is not None:
            raise MorphismNotApplicable(f"{self.name} at {site!r}: {reason}")
        graph = _with_pool(parent, site, pool, kernel_size)
        shapes = _skeleton(parent, graph)
        weights: dict[str, Any] = parent.weights_copy()
        for node in parent.nodes:
            if parent.op(node) != "flatten":
                continue
            old = parent.shape(parent.inputs(node)[0])
            new = shapes.shape(shapes.inputs(node)[0])
            if new == old:
                continue
            for consumer in parent.consumers(node):
                w = weights[consumer]["weight"]
                weights[consumer]["weight"] = _resampled(w, old, new)
        return Architecture(graph, weights)
