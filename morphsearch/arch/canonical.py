"""The canonical forms of an architecture: its graph document and its content hashes.

These are functions of an :class:`~morphsearch.arch.ir.Architecture` that need no
constructor, so :mod:`morphsearch.arch.ir` imports this module (for its
``structure_hash``, ``weights_hash`` and ``to_json`` conveniences) while this module
imports the IR for typing only. Reading documents back into architectures, and the
bytes of files, live in :mod:`morphsearch.arch.io`.

The graph document is networkx node-link JSON with a ``format`` field::

    {"format": 1, "directed": true, "multigraph": false, "graph": {"name": "mlp"},
     "nodes": [{"id": "x", "op": "input", "shape": [64]}, ...],
     "edges": [{"source": "x", "target": "fc1", "port": 0}, ...]}

so ``networkx.node_link_graph(data, edges="edges")`` reads it too.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import torch

from morphsearch.arch.spec import json_digest

if TYPE_CHECKING:
    from morphsearch.arch.ir import Architecture

__all__ = [
    "FORMAT",
    "canonical_order",
    "node_signatures",
    "structure_hash",
    "to_json",
    "weights_hash",
]

FORMAT = 1  # the graph document's version


def to_json(arch: Architecture) -> dict[str, Any]:
    """The graph document of ``arch`` (no weights), nodes in topological order."""
    nodes = [{"id": n, **arch.spec(n).to_dict()} for n in arch.nodes]
    edges = [
        {"source": src, "target": node, "port": port}
        for node in arch.nodes
        for port, src in enumerate(arch.inputs(node))
    ]
    return {
        "format": FORMAT,
        "directed": True,
        "multigraph": False,
        "graph": dict(arch.graph.graph),
        "nodes": nodes,
        "edges": edges,
    }


def node_signatures(arch: Architecture) -> dict[str, str]:
    """Merkle signature of each node: its spec and, in port order, its inputs' signatures.

    Two nodes compute the same function of the input (up to weights) exactly when their
    signatures agree, whatever their names.
    """
    sigs: dict[str, str] = {}
    for node in arch.nodes:
        spec = arch.spec(node)
        sigs[node] = json_digest([spec.op, dict(spec.attrs), [sigs[s] for s in arch.inputs(node)]])
    return sigs


def structure_hash(arch: Architecture) -> str:
    """Name-independent sha256 of the graph.

    The output's Merkle signature fixes the unfolded computation; the sorted multiset of
    all node signatures distinguishes a shared node from two identical copies of it.
    """
    sigs = node_signatures(arch)
    return json_digest([sigs[arch.output_node], sorted(sigs.values())])


def canonical_order(arch: Architecture) -> list[str]:
    """The nodes by signature (name-independent), names breaking ties."""
    sigs = node_signatures(arch)
    return sorted(arch.nodes, key=lambda n: (sigs[n], n))


def weights_hash(arch: Architecture) -> str:
    """sha256 of the weights in canonical node order (dtype and shape included)."""
    digest = hashlib.sha256()
    for node in canonical_order(arch):
        for pname in sorted(arch.weights.get(node, {})):
            tensor = arch.weights[node][pname]
            digest.update(f"{pname}|{tensor.dtype}|{list(tensor.shape)}|".encode())
            digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
