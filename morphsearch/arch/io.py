"""Graph files, weights files, canonical form and content hashes.

A graph file is networkx node-link JSON with a ``format`` field::

    {"format": 1, "directed": true, "multigraph": false, "graph": {"name": "mlp"},
     "nodes": [{"id": "x", "op": "input", "shape": [64]}, ...],
     "edges": [{"source": "x", "target": "fc1", "port": 0}, ...]}

so ``networkx.node_link_graph(data, edges="edges")`` reads it too. Weights live beside
it as safetensors (``model.json`` -> ``model.safetensors``), keyed ``<node>.<param>``,
with the structure hash in the metadata. Nothing here unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import networkx as nx
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from morphsearch.arch.ir import Architecture, json_digest
from morphsearch.errors import GraphFileError, InvalidArchitecture, WeightsError

__all__ = [
    "FORMAT",
    "MAX_GRAPH_BYTES",
    "load",
    "load_weights",
    "save",
    "save_weights",
    "structure_hash",
    "to_json",
    "weights_hash",
    "weights_from_bytes",
    "weights_path_for",
]

FORMAT = 1
MAX_GRAPH_BYTES = 16 * 1024 * 1024  # a graph of a few thousand layers is well under 1 MiB
_NODE_KEYS = ("id", "op")


def to_json(arch: Architecture) -> dict[str, Any]:
    """The graph file content of ``arch``, nodes in topological order."""
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


def from_dict(data: Any, *, where: str = "graph") -> nx.DiGraph:
    """Build the networkx graph of a graph-file dict, checking the file's own structure.

    Raises:
        GraphFileError: wrong format version or malformed node/edge entries.
    """
    if not isinstance(data, dict):
        raise GraphFileError(f"{where}: expected a JSON object, got {type(data).__name__}")
    version = data.get("format")
    if version != FORMAT:
        raise GraphFileError(
            f"{where}: graph format {version!r} is not supported (this morphsearch reads "
            f"format {FORMAT}); re-export the graph or upgrade morphsearch"
        )
    nodes, edges = data.get("nodes"), data.get("edges")
    if not isinstance(nodes, list) or not isinstance(edges, list):
        raise GraphFileError(f"{where}: needs 'nodes' and 'edges' lists")
    graph = nx.DiGraph()
    graph.graph.update(data.get("graph") or {})
    for i, entry in enumerate(nodes):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise GraphFileError(f"{where}: nodes[{i}] needs a string 'id'")
        if entry["id"] in graph:
            raise GraphFileError(f"{where}: node {entry['id']!r} is defined twice")
        graph.add_node(entry["id"], **{k: v for k, v in entry.items() if k != "id"})
    for i, edge in enumerate(edges):
        if not isinstance(edge, dict) or not {"source", "target"} <= set(edge):
            raise GraphFileError(f"{where}: edges[{i}] needs 'source' and 'target'")
        for end in ("source", "target"):
            if edge[end] not in graph:
                raise GraphFileError(
                    f"{where}: edges[{i}] {end} {edge[end]!r} is not a node; define it in 'nodes'"
                )
        extra = {"port": edge["port"]} if "port" in edge else {}
        graph.add_edge(edge["source"], edge["target"], **extra)
    return graph


def read_graph_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and parse a graph file, refusing oversized or non-JSON files."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise GraphFileError(f"{path}: no such graph file") from None
    if size > MAX_GRAPH_BYTES:
        raise GraphFileError(
            f"{path}: file is {size:,} bytes, over the {MAX_GRAPH_BYTES:,}-byte limit for "
            "graph files; weights belong in a .safetensors file beside it"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GraphFileError(f"{path}: not valid JSON ({exc}); fix or re-export the file") from None


def weights_path_for(path: str | os.PathLike[str]) -> Path:
    return Path(path).with_suffix(".safetensors")


def load(source: Any, weights: Any = None, *, seed: int = 0) -> Architecture:
    """Load an architecture from a graph file path or a graph-file dict.

    Args:
        source: path to a ``.json`` graph file, or its parsed dict.
        weights: a safetensors path, a ``{node: {param: tensor}}`` mapping, or None. With
            None and a path source, ``<stem>.safetensors`` beside it is used if present;
            otherwise weights are initialised from ``seed``.

    Raises:
        GraphFileError / InvalidArchitecture: naming the file, the node and the problem.
        WeightsError: the weights file is corrupted or belongs to another architecture.
    """
    if isinstance(source, dict):
        where, data = "graph", source
    else:
        where, data = str(source), read_graph_file(source)
        if weights is None and weights_path_for(source).exists():
            weights = weights_path_for(source)
    graph = from_dict(data, where=where)
    try:
        skeleton = Architecture(graph, seed=seed)
    except InvalidArchitecture as exc:
        raise InvalidArchitecture(f"{where}: {exc}") from None
    if weights is None:
        return skeleton
    if not isinstance(weights, Mapping):
        weights = load_weights(weights, skeleton)
    try:
        return skeleton.with_weights(weights)
    except InvalidArchitecture as exc:
        raise WeightsError(f"{where}: {exc} (in the weights file beside it)") from None


def save(arch: Architecture, path: str | os.PathLike[str]) -> None:
    """Write the graph file and ``<stem>.safetensors`` beside it (atomically each).

    The weights go first: an interrupted save leaves at worst weights without their graph
    file, never a graph file that would load with freshly initialised weights.
    """
    path = Path(path)
    save_weights(arch, weights_path_for(path))
    _atomic_write(path, (json.dumps(to_json(arch), indent=1) + "\n").encode())


def save_weights(
    arch: Architecture, path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> None:
    """Write the weights as safetensors with the structure hash in the metadata."""
    tensors = {
        f"{node}.{pname}": tensor.contiguous()
        for node, params in arch.weights.items()
        for pname, tensor in params.items()
    }
    meta = {"format": "morphsearch.weights/1", "structure_hash": arch.structure_hash}
    meta.update(metadata or {})
    _atomic_write(Path(path), st_save(tensors, metadata=meta))


def load_weights(path: str | os.PathLike[str], arch: Architecture) -> dict[str, dict[str, Any]]:
    """Read a safetensors weights file for ``arch``.

    Raises:
        WeightsError: missing, corrupted, or saved for a different structure.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such weights file") from None
    return weights_from_bytes(raw, arch, where=str(path))


def weights_from_bytes(raw: bytes, arch: Architecture, *, where: str) -> dict[str, dict[str, Any]]:
    """Decode safetensors bytes into ``{node: {param: tensor}}`` for ``arch``.

    Args:
        raw: the file's bytes. where: the file or URI, for error messages.

    Raises:
        WeightsError: not safetensors, or saved for a different structure.
    """
    try:
        tensors = st_load(raw)
        metadata = _safetensors_metadata(raw)
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise WeightsError(
            f"{where}: not a valid safetensors file ({exc}); it is damaged or was cut "
            f"short (size {len(raw):,} bytes): copy it again, or write it anew with "
            "morphsearch export or graph grow"
        ) from None
    saved_for = metadata.get("structure_hash")
    if saved_for and saved_for != arch.structure_hash:
        raise WeightsError(
            f"{where}: weights were saved for structure {saved_for[:12]}, but the graph is "
            f"{arch.structure_hash[:12]}; use the weights file written with this graph"
        )
    out: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        node, _, pname = key.rpartition(".")
        out.setdefault(node, {})[pname] = tensor
    return out


def _safetensors_metadata(raw: bytes) -> dict[str, str]:
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    return dict(header.get("__metadata__") or {})


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ------------------------------------------------------------------ hashing


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
    """Name-independent hash of the graph.

    The output's Merkle signature fixes the unfolded computation; the sorted multiset of
    all node signatures distinguishes a shared node from two identical copies of it.
    """
    sigs = node_signatures(arch)
    return json_digest([sigs[arch.output_node], sorted(sigs.values())])


def canonical_order(arch: Architecture) -> list[str]:
    sigs = node_signatures(arch)
    return sorted(arch.nodes, key=lambda n: (sigs[n], n))


def weights_hash(arch: Architecture) -> str:
    digest = hashlib.sha256()
    for node in canonical_order(arch):
        for pname in sorted(arch.weights.get(node, {})):
            tensor = arch.weights[node][pname]
            digest.update(f"{pname}|{tensor.dtype}|{list(tensor.shape)}|".encode())
            digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
