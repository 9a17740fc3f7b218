"""Morphisms for conv nets: widen a kernel, convolve the input of a dense head.

``conv.widen_kernel`` grows a conv layer's kernel from ``k`` to ``k + 2 * taps`` along
the chosen spatial dims, with zero outer taps, and raises the padding by ``taps``. The
output size ``(L + 2p - k) // s + 1`` is unchanged for any stride ``s``, and output
position ``o`` reads the input window starting ``taps`` earlier, whose first and last
``taps`` taps are zero: the old taps meet the same inputs, so the function is identical.

``conv.input`` inserts an identity convolution just ahead of a ``flatten`` that feeds
dense layers: the input of an MLP seed (``x -> flatten -> linear``) or the end of a conv
stack. The new conv maps ``C -> C`` channels with a centre tap ``I`` (odd
``kernel_size``, stride 1, padding ``kernel_size // 2``), so the image and the function
are unchanged; widening it afterwards (``widen.*``: its consumer is the linear behind
the flatten) gives the dense layer new inputs that start at zero, and the MLP grows into
a CNN by function-preserving steps. With ``activation="relu"`` the conv maps ``C -> 2C``
channels, ``x`` and ``-x``, followed by a ReLU, and each dense consumer's weight ``W``
becomes ``[W, -W]``: ``W relu(x) - W relu(-x) = W x`` exactly, and the new conv layer is
non-linear from its first training step (``deepen.identity`` at that ReLU then stacks
more conv layers, exactly too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import networkx as nx
import torch
import torch.nn.functional as F

from morphsearch.arch import Architecture, NodeSpec
from morphsearch.arch.ops import OPS, layer_op_for
from morphsearch.errors import InvalidArchitecture, MorphismNotApplicable
from morphsearch.morphisms._registry import Batch, Morphism, register

__all__ = [
    "ConvInput", "WidenKernel", "conv_input_sites", "conv_op_for", "conv_sites", "fresh_prefix",
]

# ---------------------------------------------------------------- op knowledge
# The only places here that name conv ops or read int-or-list attributes: switch them
# to the op table (OPS[op].spatial_rank, a per-dim attribute helper) when it has them.

def _conv_rank(arch: Architecture, node: str) -> int | None:
    """Spatial dims of a conv layer (1 for conv1d, 2 for conv2d); None if not a conv."""
    rank = OPS[arch.op(node)].spatial_rank
    return rank if rank else None


def conv_op_for(shape: Sequence[int]) -> str | None:
    """The conv op that takes a ``(C, *spatial)`` input (None for a vector)."""
    return layer_op_for(shape) if len(shape) > 1 else None


def _per_dim(value: int | Sequence[int], rank: int) -> tuple[int, ...]:
    """An int-or-list conv attribute as one int per spatial dim."""
    if isinstance(value, int):
        return (value,) * rank
    return tuple(value)


def _attr_value(values: Sequence[int]) -> int | list[int]:
    """Per-dim values back to an attribute: an int when all dims agree (so graph files
    keep their form and hash), else a list."""
    return values[0] if len(set(values)) == 1 else list(values)


# ------------------------------------------------------------------- helpers


def conv_sites(arch: Architecture) -> list[str]:
    """Every conv layer, in graph order."""
    return [n for n in arch.nodes if _conv_rank(arch, n) is not None]


def _check_int(name: str, field: str, value: Any, *, odd: bool = False) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if not ok or (odd and value % 2 == 0):
        kind = "a positive odd int (1, 3, 5 ...)" if odd else "a positive int"
        raise MorphismNotApplicable(f"{name}: {field}={value!r} must be {kind}")
    return int(value)


def _checked_dims(name: str, dims: Sequence[int] | None, rank: int) -> tuple[int, ...]:
    if dims is None:
        return tuple(range(rank))
    if (not isinstance(dims, (list, tuple)) or not dims
            or any(not isinstance(d, int) or isinstance(d, bool) or not 0 <= d < rank
                   for d in dims)):
        raise MorphismNotApplicable(
            f"{name}: dims={dims!r} must be a non-empty list of spatial dims in [0, {rank}) "
            "(0: height or length, 1: width), or None for all"
        )
    return tuple(sorted(set(dims)))


def fresh_prefix(arch: Architecture, stem: str) -> str:
    """``stem1``, ``stem2`` ...: the first that no node name starts with (``stem1_``)."""
    i = 1
    while any(n.startswith(f"{stem}{i}_") for n in arch.nodes):
        i += 1
    return f"{stem}{i}"


# --------------------------------------------------------------- widen_kernel


@register
class WidenKernel(Morphism):
    """Grow a conv layer's kernel by ``taps`` zero taps on each side of the chosen dims.

    Params:
        dims: spatial dims to widen (0: height or length, 1: width); None: all.
        taps: zero taps added on each side (kernel ``k -> k + 2 * taps``, padding
            ``p -> p + taps``).
    """

    name = "conv.widen_kernel"
    description = "kernel k -> k + 2 with zero outer taps, padding + 1 (shape and function kept)"

    def sites(self, arch: Architecture) -> list[str]:
        return conv_sites(arch)

    def accepts(self, arch: Architecture, site: str) -> bool:
        return _conv_rank(arch, site) is not None

    def why_not(self, arch: Architecture, site: str) -> str | None:
        if self.accepts(arch, site):
            return None
        return f"{site!r} is {arch.op(site)}; the kernel to widen belongs to a conv layer"

    def transform(  # type: ignore[override]  # params are keyword-only by contract
        self,
        parent: Architecture,
        site: str,
        *,
        batch: Batch | None,
        generator: torch.Generator,
        dims: list[int] | None = None,
        taps: int = 1,
    ) -> Architecture:
        rank = _conv_rank(parent, site)
        assert rank is not None  # apply() checked the site
        chosen = _checked_dims(self.name, dims, rank)
        taps = _check_int(self.name, "taps", taps)
        spec = parent.spec(site)
        kernel = list(_per_dim(spec["kernel_size"], rank))
        padding = list(_per_dim(spec["padding"], rank))
        for d in chosen:
            kernel[d] += 2 * taps
            padding[d] += taps
        try:
            new_spec = spec.replace(kernel_size=_attr_value(kernel),
                                    padding=_attr_value(padding))
        except InvalidArchitecture as exc:
            raise MorphismNotApplicable(
                f"{self.name}: node {site!r} cannot take kernel_size {_attr_value(kernel)} "
                f"({exc}); widen every dim (dims=None)"
            ) from None
        pad: list[int] = []  # F.pad lists the last dim first
        for d in reversed(range(rank)):
            pad += [taps, taps] if d in chosen else [0, 0]
        weights = {node: dict(params) for node, params in parent.weights.items()}
        weights[site]["weight"] = F.pad(parent.weights[site]["weight"], pad)
        return parent.respecified({site: new_spec}, weights)


# ------------------------------------------------------------------ conv.input


def conv_input_sites(arch: Architecture) -> list[str]:
    """``flatten`` nodes that flatten a ``(C, L)`` or ``(C, H, W)`` tensor (for which the
    op table has a conv) straight into ``linear`` layers."""
    return [n for n in arch.nodes if _why_not_conv_input(arch, n) is None]


def _why_not_conv_input(arch: Architecture, node: str) -> str | None:
    if arch.op(node) != "flatten":
        return f"{node!r} is {arch.op(node)}; the new conv goes just ahead of a flatten"
    shape = arch.shape(arch.inputs(node)[0])
    if conv_op_for(shape) is None:
        return f"flatten {node!r} takes a {list(shape)} tensor, which no conv op takes"
    others = [c for c in arch.consumers(node) if arch.op(c) != "linear"]
    if others:
        return (f"flatten {node!r} feeds {arch.op(others[0])} node {others[0]!r}; "
                "it must feed linear layers only")
    return None


def _identity_conv(
    channels: int, rank: int, kernel_size: int, signs: Sequence[int], dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Weights of a ``C -> len(signs) * C`` conv whose block ``i`` is ``signs[i] * I`` at
    the centre tap, bias 0."""
    weight = torch.zeros(len(signs) * channels, channels, *[kernel_size] * rank, dtype=dtype)
    centre = weight.flatten(2)[:, :, weight[0, 0].numel() // 2]  # the centre tap: [out, in]
    eye = torch.eye(channels, dtype=dtype)
    for i, sign in enumerate(signs):
        centre[i * channels : (i + 1) * channels] = sign * eye
    return {"weight": weight, "bias": torch.zeros(len(signs) * channels, dtype=dtype)}


@register
class ConvInput(Morphism):
    """Insert an identity conv ahead of a flatten that feeds dense layers.

    Params:
        kernel_size: odd kernel of the new conv (padding ``kernel_size // 2``).
        activation: None (the conv alone, ``C -> C``) or ``"relu"`` (``C -> 2C`` channels
            ``x, -x``, a ReLU, and the dense weights ``[W, -W]``).
    """

    name = "conv.input"
    description = (
        "insert an identity conv ahead of a flatten into dense layers (an MLP's input): "
        "widening it turns the MLP into a CNN"
    )

    def sites(self, arch: Architecture) -> list[str]:
        return conv_input_sites(arch)

    def accepts(self, arch: Architecture, site: str) -> bool:
        return _why_not_conv_input(arch, site) is None

    def why_not(self, arch: Architecture, site: str) -> str | None:
        return _why_not_conv_input(arch, site)

    def transform(  # type: ignore[override]  # params are keyword-only by contract
        self,
        parent: Architecture,
        site: str,
        *,
        batch: Batch | None,
        generator: torch.Generator,
        kernel_size: int = 3,
        activation: str | None = None,
    ) -> Architecture:
        kernel_size = _check_int(self.name, "kernel_size", kernel_size, odd=True)
        if activation not in (None, "relu"):
            raise MorphismNotApplicable(
                f"{self.name}: activation={activation!r} must be None or 'relu'"
            )
        source = parent.inputs(site)[0]
        shape = parent.shape(source)
        op = conv_op_for(shape)
        assert op is not None  # apply() checked the site
        signs = (1,) if activation is None else (1, -1)
        graph: nx.DiGraph = parent.editable_graph()
        weights: dict[str, Any] = parent.weights_copy()
        prefix = fresh_prefix(parent, "convin")
        conv = f"{prefix}_conv"
        graph.add_node(conv, spec=NodeSpec(op, out_channels=len(signs) * shape[0],
                                           kernel_size=kernel_size, padding=kernel_size // 2))
        weights[conv] = _identity_conv(shape[0], len(shape) - 1, kernel_size, signs,
                                       parent.dtype)
        graph.remove_edge(source, site)
        graph.add_edge(source, conv, port=0)
        last = conv
        if activation is not None:
            last = f"{prefix}_{activation}"
            graph.add_node(last, spec=NodeSpec(activation))
            graph.add_edge(conv, last, port=0)
            for consumer in parent.consumers(site):  # W relu(x) - W relu(-x) = W x
                w = weights[consumer]["weight"]
                weights[consumer]["weight"] = torch.cat([w, -w], dim=1)
        graph.add_edge(last, site, port=0)
        return Architecture(graph, weights)
