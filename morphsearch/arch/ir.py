"""The architecture IR: :class:`NodeSpec` and :class:`Architecture`.

An :class:`Architecture` is a networkx ``DiGraph`` whose nodes carry a :class:`NodeSpec`
(edges carry the ``port`` of the consumer's input they feed), plus weights kept beside
the graph as ``{node: {param: Tensor}}``. It validates on construction and is never
mutated afterwards: the graph is frozen and the weights are private copies. To change
an architecture, build a new one (see :meth:`Architecture.editable_graph` and
:meth:`Architecture.weights_copy`).

Note on ``relu``: the IR's ReLU has derivative 1 at 0 (PyTorch's ``torch.relu`` has 0).
Growth that starts new neurons with zero incoming weights (GradMax) needs f'(0) != 0,
otherwise those neurons never receive a gradient. See :mod:`morphsearch.arch.compile`.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any

import networkx as nx
import torch

from morphsearch.arch import shapes
from morphsearch.arch.ops import OPS, OpError, ParamSpec, Shape, resolve_attrs
from morphsearch.errors import InvalidArchitecture

__all__ = ["Architecture", "NodeSpec"]

_NODE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_RESERVED = frozenset({"forward", "training", "layers", "input", "output"})


@dataclass(frozen=True, eq=False)
class NodeSpec:
    """One layer: an op name and its attributes (JSON values, defaults filled in).

    ``NodeSpec("linear", {"out_features": 8})`` equals
    ``NodeSpec("linear", {"out_features": 8, "bias": True})``.

    Raises:
        InvalidArchitecture: unknown op, unknown/missing attribute or invalid value.
    """

    op: str
    attrs: Mapping[str, Any]

    def __init__(self, op: str, attrs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        try:
            resolved = resolve_attrs(op, {**(attrs or {}), **kwargs})
        except OpError as exc:
            raise InvalidArchitecture(str(exc)) from None
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "attrs", MappingProxyType(resolved))
        object.__setattr__(self, "_key", json.dumps([op, resolved], sort_keys=True))

    def __getitem__(self, name: str) -> Any:
        return self.attrs[name]

    def replace(self, **attrs: Any) -> NodeSpec:
        """A copy with some attributes changed."""
        return NodeSpec(self.op, {**self.attrs, **attrs})

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, **self.attrs}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeSpec) and self._key == other._key  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.attrs.items())
        return f"NodeSpec({self.op!r}{', ' if args else ''}{args})"


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
        self._graph = _normalised_graph(graph)
        self._order = _validated_order(self._graph)
        self._inputs = {n: _ordered_inputs(self._graph, n) for n in self._order}
        specs = {n: self._graph.nodes[n]["spec"] for n in self._order}
        self._infos = shapes.infer(self._order, specs, self._inputs)
        if weights is None:
            from morphsearch.arch.compile import init_weights

            weights = init_weights(self, seed=seed, dtype=dtype)
        self._weights = _checked_weights(self, weights)

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
            return self._graph.nodes[node]["spec"]
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
        return tuple(sorted(self._graph.successors(node)))

    @cached_property
    def input_node(self) -> str:
        return self._order[0]

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
        return node in self._graph

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

    # ----------------------------------------------------------------- ids
    @cached_property
    def structure_hash(self) -> str:
        """sha256 of the canonical graph: independent of node names and weights."""
        from morphsearch.arch.io import structure_hash

        return structure_hash(self)

    @cached_property
    def weights_hash(self) -> str:
        """sha256 of the weights in canonical node order (dtype and shape included)."""
        from morphsearch.arch.io import weights_hash

        return weights_hash(self)

    # ------------------------------------------------------------- conversion
    def to_module(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> torch.nn.Module:
        """Compile to a ``torch.nn.Module`` (a ``torch.fx.GraphModule``) with these weights."""
        from morphsearch.arch.compile import compile_module

        return compile_module(self, device=device, dtype=dtype)

    def with_weights_from(self, module: torch.nn.Module) -> Architecture:
        """A new architecture with the (trained) weights of a module from :meth:`to_module`."""
        from morphsearch.arch.compile import weights_from_module

        return self.with_weights(weights_from_module(self, module))

    def to_json(self) -> dict[str, Any]:
        """The graph file content (node-link JSON with a ``format`` field); no weights."""
        from morphsearch.arch.io import to_json

        return to_json(self)

    @classmethod
    def from_json(cls, source: Any, weights: Any = None) -> Architecture:
        """Load from a graph file path or dict; see :func:`morphsearch.arch.io.load`."""
        from morphsearch.arch.io import load

        return load(source, weights=weights)

    def save(self, path: Any) -> None:
        """Write ``path`` (graph JSON) and the weights as safetensors beside it."""
        from morphsearch.arch.io import save

        save(self, path)

    def __repr__(self) -> str:
        return (
            f"Architecture({len(self)} nodes, {self.num_params:,} params, "
            f"{self.flops:,} FLOPs, {self.input_shape} -> {self.output_shape})"
        )


# ------------------------------------------------------------------ helpers


def _normalised_graph(graph: nx.DiGraph) -> nx.DiGraph:
    """Copy ``graph`` with a :class:`NodeSpec` on every node, then freeze it."""
    out = nx.DiGraph()
    out.graph.update(graph.graph)
    for name, data in graph.nodes(data=True):
        if not isinstance(name, str) or not _NODE_NAME.match(name) or name in _RESERVED:
            raise InvalidArchitecture(
                f"node name {name!r} is not valid: use letters, digits and underscores, "
                f"starting with a letter (and not one of {', '.join(sorted(_RESERVED))})"
            )
        spec = data.get("spec")
        if spec is None:
            attrs = {k: v for k, v in data.items() if k not in ("op", "id")}
            if "op" not in data:
                raise InvalidArchitecture(f"node {name!r} has no 'op'; add e.g. \"op\": \"linear\"")
            try:
                spec = NodeSpec(data["op"], attrs)
            except InvalidArchitecture as exc:
                raise InvalidArchitecture(f"node {name!r}: {exc}") from None
        elif not isinstance(spec, NodeSpec):
            raise InvalidArchitecture(f"node {name!r}: 'spec' must be a NodeSpec")
        out.add_node(name, spec=spec)
    for src, dst, data in graph.edges(data=True):
        out.add_edge(src, dst, **({"port": data["port"]} if "port" in data else {}))
    return nx.freeze(out)


def _validated_order(graph: nx.DiGraph) -> tuple[str, ...]:
    """Check the graph's shape and return its nodes in lexicographic topological order.

    Written over plain dicts: an architecture is built for every morphism and growth
    step, and networkx views made this the larger part of construction time.
    """
    if graph.number_of_nodes() == 0:
        raise InvalidArchitecture("the graph has no nodes; it needs an input and an output")
    preds, succs = graph.pred, graph.succ
    order = _topological_order(graph)
    ops = {n: graph.nodes[n]["spec"].op for n in order}
    for role in ("input", "output"):
        found = sorted(n for n in order if ops[n] == role)
        if len(found) != 1:
            raise InvalidArchitecture(
                f"the graph needs exactly one {role} node, found {len(found)}"
                + (f": {', '.join(found)}" if found else "")
            )
    for name in order:
        _check_arity(name, ops[name], preds[name])
    source = next(n for n in order if ops[n] == "input")
    sink = next(n for n in order if ops[n] == "output")
    if succs[sink]:
        raise InvalidArchitecture(f"node {sink!r} (output) has consumers; the output must be last")
    reachable = {source}
    for name in order:  # topological: every input is decided before its consumer
        if any(src in reachable for src in preds[name]):
            reachable.add(name)
    leads_out = {sink}
    for name in reversed(order):
        if any(dst in leads_out for dst in succs[name]):
            leads_out.add(name)
    for name in sorted(order):
        if name not in reachable:
            raise InvalidArchitecture(f"node {name!r} is not reachable from the input {source!r}")
        if name not in leads_out:
            raise InvalidArchitecture(
                f"node {name!r} is dangling: it does not lead to the output {sink!r}; "
                "connect it or remove it"
            )
    return order


def _topological_order(graph: nx.DiGraph) -> tuple[str, ...]:
    """Kahn's algorithm, smallest name first among ready nodes (deterministic)."""
    indegree = {n: len(graph.pred[n]) for n in graph}
    ready = [n for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for dst in graph.succ[name]:
            indegree[dst] -= 1
            if indegree[dst] == 0:
                heapq.heappush(ready, dst)
    if len(order) != len(indegree):
        cycle = " -> ".join(src for src, _ in nx.find_cycle(graph))
        raise InvalidArchitecture(f"the graph has a cycle through nodes {cycle}; remove an edge")
    return tuple(order)


def _check_arity(name: str, op: str, inputs: Mapping[str, Mapping[str, Any]]) -> None:
    opdef = OPS[op]
    n = len(inputs)
    hi = opdef.max_inputs
    if n < opdef.min_inputs or (hi is not None and n > hi):
        want = f"{opdef.min_inputs}" if hi == opdef.min_inputs else (
            f"at least {opdef.min_inputs}" if hi is None else f"{opdef.min_inputs} to {hi}"
        )
        raise InvalidArchitecture(f"node {name!r} ({op}) takes {want} input(s), got {n}")
    given = [d["port"] for d in inputs.values() if "port" in d]
    if given and sorted(given) != list(range(n)):
        raise InvalidArchitecture(
            f"node {name!r}: input ports {sorted(given)} must be 0..{n - 1}, each once"
        )


def _ordered_inputs(graph: nx.DiGraph, name: str) -> tuple[str, ...]:
    inputs = graph.pred[name]
    if all("port" in d for d in inputs.values()):
        return tuple(sorted(inputs, key=lambda src: inputs[src]["port"]))
    return tuple(inputs)


def _checked_weights(arch: Architecture, weights: Weights) -> Mapping[str, Mapping[str, Any]]:
    extra = sorted(set(weights) - set(arch.nodes))
    if extra:
        raise InvalidArchitecture(f"weights given for {extra[0]!r}, which is not a node")
    checked: dict[str, Mapping[str, torch.Tensor]] = {}
    float_dtype: torch.dtype | None = None
    for node in arch.nodes:
        specs = arch.param_specs(node)
        given = weights.get(node, {})
        unknown = sorted(set(given) - set(specs))
        if unknown:
            raise InvalidArchitecture(
                f"node {node!r} ({arch.op(node)}) has no parameter {unknown[0]!r}; "
                f"expected: {', '.join(specs) or 'none'}"
            )
        params: dict[str, torch.Tensor] = {}
        for pname, pspec in specs.items():
            tensor = _checked_tensor(node, pname, pspec, given.get(pname))
            if tensor.is_floating_point():
                if float_dtype is None:
                    float_dtype = tensor.dtype
                elif tensor.dtype != float_dtype:
                    raise InvalidArchitecture(
                        f"node {node!r} weight {pname!r} is {tensor.dtype}, others are "
                        f"{float_dtype}; use Architecture.to(dtype) to cast them all"
                    )
            params[pname] = tensor
        if params:
            checked[node] = MappingProxyType(params)
    return MappingProxyType(checked)


def _checked_tensor(node: str, pname: str, pspec: ParamSpec, value: Any) -> torch.Tensor:
    where = f"node {node!r} weight {pname!r}"
    if value is None:
        raise InvalidArchitecture(f"{where} is missing; expected shape {list(pspec.shape)}")
    if not isinstance(value, torch.Tensor):
        raise InvalidArchitecture(f"{where} must be a torch.Tensor, got {type(value).__name__}")
    if tuple(value.shape) != pspec.shape:
        raise InvalidArchitecture(
            f"{where} has shape {list(value.shape)}, expected {list(pspec.shape)}"
        )
    if _OWNED.get(id(value)) is value:
        return value  # already an architecture's private, never-mutated copy: share it
    if pspec.integer:
        return _own(value.detach().to("cpu", torch.int64).clone())
    if not value.is_floating_point():
        raise InvalidArchitecture(f"{where} must be a float tensor, got {value.dtype}")
    tensor = value.detach().to("cpu").clone()
    if not bool(torch.isfinite(tensor).all()):
        raise InvalidArchitecture(
            f"{where} contains NaN or infinite values; re-export the weights from a healthy model"
        )
    return _own(tensor)


# Tensors that are some Architecture's private copy (id -> tensor). Architectures never
# mutate them, so a child built from its parent's weights shares the unchanged ones
# instead of copying every tensor at every morphism.
_OWNED: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()


def _own(tensor: torch.Tensor) -> torch.Tensor:
    _OWNED[id(tensor)] = tensor
    return tensor


def json_digest(obj: Any) -> str:
    """sha256 of a JSON value in canonical form."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()
