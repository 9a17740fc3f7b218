"""Reading and writing architectures: graph files, weights files and their bytes.

This is the one place that encodes and decodes: the graph file is the JSON of
:func:`~morphsearch.arch.canonical.to_json` (``graph_to_bytes``), the weights are
safetensors (``weights_to_bytes``/``weights_from_bytes``) keyed ``<node>.<param>``
with the structure hash in the metadata, kept beside the graph file
(``model.json`` -> ``model.safetensors``). :mod:`morphsearch.artifacts` and
:mod:`morphsearch.export` move these bytes; they do not encode. Nothing here
unpickles anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import networkx as nx
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from morphsearch.arch.canonical import FORMAT, to_json
from morphsearch.arch.ir import Architecture
from morphsearch.errors import GraphFileError, InvalidArchitecture, WeightsError

__all__ = [
    "FORMAT",
    "MAX_GRAPH_BYTES",
    "WEIGHTS_FORMAT",
    "architecture_from_bytes",
    "from_dict",
    "graph_from_bytes",
    "graph_to_bytes",
    "load",
    "load_weights",
    "read_graph_file",
    "save",
    "save_weights",
    "weights_from_bytes",
    "weights_metadata",
    "weights_path_for",
    "weights_to_bytes",
]

MAX_GRAPH_BYTES = 16 * 1024 * 1024  # a graph of a few thousand layers is well under 1 MiB
WEIGHTS_FORMAT = "morphsearch.weights/1"  # the "format" of a weights file's metadata


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
    return graph_from_bytes(path.read_bytes(), where=str(path))


def graph_to_bytes(arch: Architecture) -> bytes:
    """The graph file of ``arch``: its graph document as indented JSON."""
    return (json.dumps(to_json(arch), indent=1) + "\n").encode()


def graph_from_bytes(raw: bytes, *, where: str) -> dict[str, Any]:
    """Parse a graph file's bytes into its document (``where`` names it in errors).

    Raises:
        GraphFileError: not UTF-8 JSON.
    """
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GraphFileError(f"{where}: not valid JSON ({exc}); fix or re-export the file") from None


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
    _atomic_write(path, graph_to_bytes(arch))


def save_weights(
    arch: Architecture, path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> None:
    """Write the weights as safetensors with the structure hash in the metadata."""
    _atomic_write(Path(path), weights_to_bytes(arch, metadata))


def weights_to_bytes(arch: Architecture, metadata: Mapping[str, str] | None = None) -> bytes:
    """The safetensors bytes of ``arch``'s weights, keyed ``<node>.<param>``.

    The metadata holds the format and the structure hash (which
    :func:`weights_from_bytes` checks), plus ``metadata``.
    """
    tensors = {
        f"{node}.{pname}": tensor.detach().cpu().contiguous()
        for node, params in arch.weights.items()
        for pname, tensor in params.items()
    }
    meta = {"format": WEIGHTS_FORMAT, "structure_hash": arch.structure_hash}
    meta.update(metadata or {})
    return st_save(tensors, metadata=meta)


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


def architecture_from_bytes(graph: bytes, weights: bytes, *, where: str) -> Architecture:
    """The architecture of a graph file's and a weights file's bytes.

    Args:
        where: the weights file or URI, for error messages.

    Raises:
        GraphFileError / InvalidArchitecture: a malformed or invalid graph.
        WeightsError: weights that are not safetensors or belong to another structure.
    """
    skeleton = load(graph_from_bytes(graph, where=f"graph of {where}"))
    try:
        return skeleton.with_weights(weights_from_bytes(weights, skeleton, where=where))
    except InvalidArchitecture as exc:  # tensors that do not fit the graph
        raise WeightsError(f"{where}: {exc}") from None


def weights_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata of a weights file (format, structure hash, what the writer added),
    read from its header only."""
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def _safetensors_metadata(raw: bytes) -> dict[str, str]:
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    return dict(header.get("__metadata__") or {})


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
