"""The architecture IR: :class:`Architecture` (layers are :class:`~morphsearch.arch.spec.NodeSpec`).

An :class:`Architecture` is a networkx ``DiGraph`` whose nodes carry a :class:`NodeSpec`
(edges carry the ``port`` of the consumer's input they feed), plus weights kept beside
the graph as ``{node: {param: Tensor}}``. It validates on construction and is never
mutated afterwards: the graph is frozen and the weights are private copies. To change
an architecture, build a new one (see :meth:`Architecture.editable_graph` and
:meth:`Architecture.weights_copy`), or, when only attributes change, use the fast
path :meth:`Architecture.respecified`.

An :class:`Architecture` is data plus graph queries. Serialisation, hashing and
compilation are functions that take one: :mod:`morphsearch.arch.canonical`
(``to_json``, ``structure_hash``, ``weights_hash``), :mod:`morphsearch.arch.io`
(``load``, ``save`` and the bytes of files) and :mod:`morphsearch.arch.compile`
(``compile_module``, ``weights_from_module``). The methods ``to_json``,
``structure_hash``, ``weights_hash``, ``to_module`` and ``with_weights_from`` are
conveniences that call those functions.

Note on ``relu``: the IR's ReLU has derivative 1 at 0 (PyTorch's ``torch.relu`` has 0).
Growth that starts new neurons with zero incoming weights (GradMax) needs f'(0) != 0,
otherwise those neurons never receive a gradient. See :mod:`morphsearch.arch.compile`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any

import networkx as nx
import torch

from morphsearch.arch import canonical, shapes
from morphsearch.arch import compile as compiler
from morphsearch.arch.ops import ParamSpec, Shape
from morphsearch.arch.spec import NodeSpec
from morphsearch.arch.validate import (
    checked_weights,
    normalised_graph,
    ordered_inputs,
    validated_order,
)
from morphsearch.errors import InvalidArchitecture

__all__ = ["Architecture", "NodeSpec"]


Weights = Mapping[str, Mapping[str, torch.Tensor]]


class Architecture:
    """An immutable, validated architecture graph with its weights.

    Args:
        graph: a ``networkx.DiGraph``. Each node carries ``spec`` (a :class:`NodeSpec`)
            or ``op`` plus attributes; each edge may carry ``port`` (the index of the
            consumer's input it feeds; insertion order is used where absent).
        weights: ``{node: {param: tensor}}`` for every parametric node, or ``None`` to
            initialise them as PyTorch would, deterministically from ``seed``.
        seed: seed of the initialisation when ``weights`` is None.
        dtype: float dtype of initialised weights (given weights keep theirs).

    Raises:
        InvalidArchitecture: naming the node and the problem; nothing is kept.
    """

    _template: nx.DiGraph  # a respecified child's, until its graph is built

    def __init__(
        self,
        graph: nx.DiGraph,
        weights: Weights | None = None,
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not isinstance(graph, nx.DiGraph) or graph.is_multigraph():
            raise InvalidArchitecture("an architecture graph must be a networkx.DiGraph")
        self._graph = normalised_graph(graph)
        self._order = validated_order(self._graph)
        self._inputs = {n: ordered_inputs(self._graph, n) for n in self._order}
        self._specs: Mapping[str, NodeSpec] = {
            n: self._graph.nodes[n]["spec"] for n in self._order
        }
        self._consumers = {n: tuple(sorted(self._graph.successors(n))) for n in self._order}
        self._infos = shapes.infer(self._order, self._specs, self._inputs)
        if weights is None:
            weights = compiler.init_weights(self, seed=seed, dtype=dtype)
        self._weights = checked_weights(self, weights)

    def respecified(self, specs: Mapping[str, NodeSpec], weights: Weights) -> Architecture:
        """This graph with the attributes of some nodes changed, and new weights: the
        fast-path constructor for attribute-only changes.

        For morphisms that keep every node, edge and op and change only attributes
        (widening changes ``out_features``/``out_channels``); anything else goes through
        the constructor (:meth:`editable_graph`, then ``Architecture(graph, weights)``).
        The child reuses what this
        architecture has already validated and those changes cannot break (node names,
        topological order, arity, ports and consumers) and checks the rest as the
        constructor does: every shape is inferred again and every weight tensor checked
        against it (the unchanged tensors, this architecture's private copies, are
        shared; the new ones are handed over by the caller, who must hold no other
        reference to them, and are not copied either). The child's networkx graph is
        built when it is first asked for, and it shares this architecture's compiled
        forward when its code is the same (:func:`morphsearch.arch.compile.share_forward`).

        Args:
            specs: ``{node: new spec}``, each with its node's op.
            weights: every parametric node's weights (``{node: {param: tensor}}``).

        Raises:
            InvalidArchitecture: as the constructor, or when a spec changes a node's op.
        """
        for node, spec in specs.items():
            if not isinstance(spec, NodeSpec) or spec.op != self.op(node):
                raise InvalidArchitecture(
                    f"node {node!r}: respecified keeps every op, got {spec!r}"
                )
        child = object.__new__(Architecture)
        # for the lazy graph: a graph with the same nodes and edges (this one's, or, if
        # this one is not built either, the one it would be built from)
        template = self.__dict__.get("_template")
        child._template = self._graph if template is None else template
        child._order = self._order
        child._inputs = self._inputs
        child._specs = {**self._specs, **specs}
        child._consumers = self._consumers
        child._infos = shapes.infer(child._order, child._specs, child._inputs)
        child._weights = checked_weights(child, weights, handed_over=True)
        compiler.share_forward(self, child, (s.op for s in specs.values()))
        return child

    @cached_property
    def _graph(self) -> nx.DiGraph:
        """A :meth:`respecified` child's graph (the constructor sets it directly)."""
        template = self._template
        graph = nx.DiGraph()
        graph.graph.update(template.graph)
        graph.add_nodes_from((node, {"spec": self._specs[node]}) for node in template.nodes)
        graph.add_edges_from(template.edges(data=True))
        return nx.freeze(graph)

    # ------------------------------------------------------------- structure
    @property
    def graph(self) -> nx.DiGraph:
        """The frozen graph; ``editable_graph()`` gives a copy you may change."""
        return self._graph

    def editable_graph(self) -> nx.DiGraph:
        """A mutable copy of the graph, to build a new architecture from."""
        return nx.DiGraph(self._graph)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Node names in a deterministic topological order."""
        return self._order

    def spec(self, node: str) -> NodeSpec:
        try:
            return self._specs[node]
        except KeyError:
            raise InvalidArchitecture(
                f"no node {node!r}; nodes: {', '.join(self._order)}"
            ) from None

    def op(self, node: str) -> str:
        return self.spec(node).op

    def inputs(self, node: str) -> tuple[str, ...]:
        """The node's inputs, ordered by port."""
        return self._inputs[node]

    def consumers(self, node: str) -> tuple[str, ...]:
        return self._consumers[node]

    @cached_property
    def input_node(self) -> str:
        return self._order[0]

    @cached_property
    def ops(self) -> frozenset[str]:
        """The ops the architecture uses (``"batchnorm" in arch.ops``)."""
        return frozenset(spec.op for spec in self._specs.values())

    @cached_property
    def output_node(self) -> str:
        return next(n for n in self._order if self.op(n) == "output")

    def shape(self, node: str) -> Shape:
        """Output shape of ``node`` without the batch dimension."""
        return self._infos[node].shape

    @property
    def input_shape(self) -> Shape:
        return self.shape(self.input_node)

    @property
    def output_shape(self) -> Shape:
        return self.shape(self.output_node)

    def param_specs(self, node: str) -> Mapping[str, ParamSpec]:
        return self._infos[node].params

    def node_params(self, node: str) -> int:
        """Trainable parameters of one node."""
        return self._infos[node].num_params

    def node_flops(self, node: str) -> int:
        """FLOPs of one node for one sample (a multiply-add is 2)."""
        return self._infos[node].flops

    @cached_property
    def num_params(self) -> int:
        return sum(info.num_params for info in self._infos.values())

    @cached_property
    def flops(self) -> int:
        """Forward FLOPs for one sample."""
        return sum(info.flops for info in self._infos.values())

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __contains__(self, node: object) -> bool:
        return node in self._specs

    # --------------------------------------------------------------- weights
    @property
    def weights(self) -> Mapping[str, Mapping[str, torch.Tensor]]:
        """Read-only mapping ``{node: {param: tensor}}``. Do not modify tensors in place."""
        return self._weights

    def weights_copy(self) -> dict[str, dict[str, torch.Tensor]]:
        """A deep, mutable copy of the weights."""
        return {n: {k: t.clone() for k, t in ps.items()} for n, ps in self._weights.items()}

    @property
    def dtype(self) -> torch.dtype:
        for params in self._weights.values():
            for tensor in params.values():
                if tensor.is_floating_point():
                    return tensor.dtype
        return torch.get_default_dtype()

    def to(self, dtype: torch.dtype) -> Architecture:
        """The same architecture with float weights cast to ``dtype``."""
        cast = {
            n: {k: t.to(dtype) if t.is_floating_point() else t for k, t in ps.items()}
            for n, ps in self._weights.items()
        }
        return Architecture(self._graph, cast)

    def with_weights(self, weights: Weights) -> Architecture:
        """The same graph with other weights (validated)."""
        return Architecture(self._graph, weights)

    # ------------------------------------------- conveniences over functions
    @cached_property
    def structure_hash(self) -> str:
        """sha256 of the canonical graph, independent of node names and weights
        (:func:`morphsearch.arch.canonical.structure_hash`)."""
        return canonical.structure_hash(self)

    @cached_property
    def weights_hash(self) -> str:
        """sha256 of the weights in canonical node order, dtype and shape included
        (:func:`morphsearch.arch.canonical.weights_hash`)."""
        return canonical.weights_hash(self)

    def to_json(self) -> dict[str, Any]:
        """The graph document (:func:`morphsearch.arch.canonical.to_json`); no weights.

        Read it back, or a graph file, with :func:`morphsearch.arch.load`; write both
        files with :func:`morphsearch.arch.save`.
        """
        return canonical.to_json(self)

    def to_module(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> torch.nn.Module:
        """Compile to a ``torch.nn.Module`` with these weights
        (:func:`morphsearch.arch.compile.compile_module`)."""
        return compiler.compile_module(self, device=device, dtype=dtype)

    def with_weights_from(self, module: torch.nn.Module) -> Architecture:
        """A new architecture with the (trained) weights of a module from :meth:`to_module`
        (:func:`morphsearch.arch.compile.weights_from_module`)."""
        return self.with_weights(compiler.weights_from_module(self, module))

    def __repr__(self) -> str:
        return (
            f"Architecture({len(self)} nodes, {self.num_params:,} params, "
            f"{self.flops:,} FLOPs, {self.input_shape} -> {self.output_shape})"
        )


