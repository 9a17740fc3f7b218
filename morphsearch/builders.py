"""Builders for common architectures, and :class:`GraphBuilder` to write your own.

>>> from morphsearch import builders
>>> builders.mlp([64, 16, 10]).num_params
1210
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import networkx as nx
import torch

from morphsearch.arch import ACTIVATIONS, Architecture, NodeSpec
from morphsearch.arch.ops import layer_op_for
from morphsearch.errors import InvalidArchitecture

__all__ = ["GraphBuilder", "cnn", "mlp", "paper_cnn", "resnet"]


class GraphBuilder:
    """Build an architecture node by node.

    >>> b = GraphBuilder((64,))
    >>> h = b.add("linear", b.input, out_features=16, name="fc1")
    >>> h = b.add("relu", h)
    >>> arch = b.build(b.add("linear", h, out_features=10))
    """

    def __init__(self, input_shape: Sequence[int], *, name: str | None = None) -> None:
        self._graph = nx.DiGraph(name=name) if name else nx.DiGraph()
        self._counts: dict[str, int] = {}
        self.input = self.add("input", shape=list(input_shape), name="x")

    def add(self, op: str, *inputs: str, name: str | None = None, **attrs: Any) -> str:
        """Add a node fed by ``inputs`` (in port order); returns its name."""
        if name is None:
            self._counts[op] = self._counts.get(op, 0) + 1
            name = f"{_SHORT.get(op, op)}{self._counts[op]}"
        if name in self._graph:
            raise InvalidArchitecture(f"node {name!r} is added twice; give it another name")
        try:
            spec = NodeSpec(op, attrs)
        except InvalidArchitecture as exc:
            raise InvalidArchitecture(f"node {name!r}: {exc}") from None
        self._graph.add_node(name, spec=spec)
        for port, src in enumerate(inputs):
            self._graph.add_edge(src, name, port=port)
        return name

    def build(
        self,
        output: str,
        *,
        weights: Any = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> Architecture:
        """Mark ``output`` as the network's output and build the architecture."""
        self.add("output", output, name="out")
        return Architecture(self._graph, weights, seed=seed, dtype=dtype)


_SHORT = {"linear": "fc", "conv1d": "conv", "conv2d": "conv", "batchnorm": "bn",
          "layernorm": "ln"}


def _conv_op(input_shape: Sequence[int], builder: str) -> str:
    """``conv1d`` for a ``(C, L)`` signal, ``conv2d`` for a ``(C, H, W)`` image."""
    if len(input_shape) not in (2, 3):
        raise InvalidArchitecture(
            f"{builder} needs a (channels, length) or (channels, height, width) input, got "
            f"{list(input_shape)}; use mlp for vectors"
        )
    return layer_op_for(input_shape)


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise InvalidArchitecture(
            f"activation {activation!r} is not one of {', '.join(sorted(ACTIVATIONS))}"
        )


def mlp(
    sizes: Sequence[int],
    *,
    activation: str = "relu",
    batchnorm: bool = False,
    dropout: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    name: str | None = None,
    input_shape: Sequence[int] | None = None,
) -> Architecture:
    """A multilayer perceptron ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    ``mlp([64, 16, 10])`` is ``x -> fc1(16) -> relu1 -> fc2(10) -> out``. With an
    ``input_shape`` of rank > 1 (``(1, 8, 8)``, whose size must be ``sizes[0]``), the
    network takes that input and flattens it first: ``x -> flatten -> fc1 -> …``, so one
    dataset in its natural layout serves MLPs and CNNs.
    """
    _check_activation(activation)
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise InvalidArchitecture(f"mlp sizes {list(sizes)} need at least two positive widths")
    shape = [int(sizes[0])] if input_shape is None else [int(d) for d in input_shape]
    if math.prod(shape) != int(sizes[0]):
        raise InvalidArchitecture(
            f"mlp input_shape {tuple(shape)} has {math.prod(shape)} values but sizes[0] is "
            f"{sizes[0]}; make sizes[0] the product of the input shape"
        )
    b = GraphBuilder(shape, name=name or "mlp-" + "-".join(map(str, sizes)))
    h = b.input if len(shape) == 1 else b.add("flatten", b.input, name="flatten")
    for i, width in enumerate(sizes[1:], start=1):
        h = b.add("linear", h, out_features=int(width), name=f"fc{i}")
        if i == len(sizes) - 1:
            break
        if batchnorm:
            h = b.add("batchnorm", h, name=f"bn{i}")
        h = b.add(activation, h, name=f"{activation}{i}")
        if dropout:
            h = b.add("dropout", h, p=dropout, name=f"drop{i}")
    return b.build(h, seed=seed, dtype=dtype)


def cnn(
    input_shape: Sequence[int] = (1, 8, 8),
    *,
    channels: Sequence[int] = (8, 16),
    hidden: Sequence[int] = (32,),
    num_classes: int = 10,
    kernel_size: int = 3,
    activation: str = "relu",
    batchnorm: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Architecture:
    """A small conv net: conv blocks, one max pool (kernel 2), flatten, dense head.

    ``conv1d`` and 1-d pooling for a ``(C, L)`` signal, ``conv2d`` and 2x2 pooling for a
    ``(C, H, W)`` image. The default fits 1x8x8 digits images: ``conv(8)-relu-conv(16)-
    relu-maxpool-flatten-fc(32)-relu-fc(10)``.
    """
    _check_activation(activation)
    conv = _conv_op(input_shape, "cnn")
    b = GraphBuilder(input_shape, name="cnn")
    h = b.input
    for i, width in enumerate(channels, start=1):
        h = b.add(conv, h, out_channels=width, kernel_size=kernel_size,
                  padding=kernel_size // 2, name=f"conv{i}")
        if batchnorm:
            h = b.add("batchnorm", h, name=f"bn{i}")
        h = b.add(activation, h, name=f"{activation}{i}")
    h = b.add("maxpool", h, kernel_size=2, name="pool")
    h = b.add("flatten", h, name="flatten")
    for j, width in enumerate([*hidden, num_classes], start=1):
        h = b.add("linear", h, out_features=width, name=f"fc{j}")
        if j <= len(hidden):
            h = b.add(activation, h, name=f"{activation}_fc{j}")
    return b.build(h, seed=seed, dtype=dtype)


def paper_cnn(
    input_shape: Sequence[int] = (1, 40),
    *,
    channels: int | Sequence[int] = 25,
    num_classes: int = 10,
    kernel_sizes: Sequence[int] = (5, 3, 3),
    activation: str = "relu",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    name: str = "paper-cnn",
) -> Architecture:
    """The MNIST-1D paper's CNN (Greydanus & Kobak): convs of stride 2 and padding 1,
    each followed by ``activation``, then flatten and one linear layer.

    The default is the paper's: ``Conv1d(1->25, k5) - Conv1d(25->25, k3) - Conv1d(25->25,
    k3) - Linear(125->10)``, 5,210 parameters on a (1, 40) input. ``channels`` is one
    width for every conv or one per conv (``len(kernel_sizes)`` of them); a ``(C, H, W)``
    input gets ``conv2d`` layers.
    """
    _check_activation(activation)
    conv = _conv_op(input_shape, "paper_cnn")
    widths = [channels] * len(kernel_sizes) if isinstance(channels, int) else list(channels)
    if len(widths) != len(kernel_sizes):
        raise InvalidArchitecture(
            f"paper_cnn channels {widths} need one width per kernel size {list(kernel_sizes)}"
        )
    b = GraphBuilder(input_shape, name=name)
    h = b.input
    for i, (width, k) in enumerate(zip(widths, kernel_sizes, strict=True), start=1):
        h = b.add(conv, h, out_channels=int(width), kernel_size=int(k), stride=2, padding=1,
                  name=f"conv{i}")
        h = b.add(activation, h, name=f"{activation}{i}")
    h = b.add("flatten", h, name="flatten")
    h = b.add("linear", h, out_features=num_classes, name="fc")
    return b.build(h, seed=seed, dtype=dtype)


def resnet(
    input_shape: Sequence[int] = (1, 8, 8),
    *,
    width: int = 8,
    blocks: int = 2,
    num_classes: int = 10,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Architecture:
    """A tiny ResNet: stem conv-bn-relu, ``blocks`` residual blocks
    (conv-bn-relu-conv-bn, add, relu), global average pool, linear head; ``conv1d`` on a
    ``(C, L)`` signal, ``conv2d`` on a ``(C, H, W)`` image."""
    conv = _conv_op(input_shape, "resnet")
    b = GraphBuilder(input_shape, name="resnet")
    h = b.add(conv, b.input, out_channels=width, kernel_size=3, padding=1, name="stem")
    h = b.add("batchnorm", h, name="stem_bn")
    h = b.add("relu", h, name="stem_relu")
    for i in range(1, blocks + 1):
        skip = h
        for j in (1, 2):
            h = b.add(conv, h, out_channels=width, kernel_size=3, padding=1,
                      name=f"b{i}_conv{j}")
            h = b.add("batchnorm", h, name=f"b{i}_bn{j}")
            if j == 1:
                h = b.add("relu", h, name=f"b{i}_relu1")
        h = b.add("add", h, skip, name=f"b{i}_add")
        h = b.add("relu", h, name=f"b{i}_relu")
    h = b.add("global_avgpool", h, name="gap")
    h = b.add("linear", h, out_features=num_classes, name="fc")
    return b.build(h, seed=seed, dtype=dtype)
