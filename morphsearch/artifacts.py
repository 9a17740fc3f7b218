"""Weights as safetensors files on a filesystem URI, with sha256 integrity.

A URI is a local path (``./runs``, ``/shared/nfs/runs``, ``file:///...``) or, when
``pyarrow`` is installed, any URI ``pyarrow.fs`` understands (``s3://bucket/prefix``,
``gs://...``). Writes are atomic (a reader never sees half a file: local writes go
through a temporary file and ``os.replace``; object stores publish a PUT whole), and
every write returns the sha256 of the bytes, which the reader verifies.

Architectures are stored as two files with one stem: ``<stem>.json`` (the graph) and
``<stem>.safetensors`` (the weights, structure hash in the metadata). This module moves
bytes; :mod:`morphsearch.arch.io` encodes and decodes them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from morphsearch.errors import WeightsError

__all__ = [
    "ArtifactRef",
    "graph_uri_for",
    "join",
    "load_optimizer",
    "optimizer_uri_for",
    "read_architecture",
    "read_bytes",
    "save_optimizer",
    "sha256_of",
    "write_architecture",
    "write_bytes",
]


@dataclass(frozen=True)
class ArtifactRef:
    """Where an artifact was written and the sha256 of its bytes."""

    uri: str
    sha256: str


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_local(uri: str) -> bool:
    scheme = urlparse(uri).scheme
    # one-letter schemes are Windows drive letters
    return scheme in ("", "file") or len(scheme) == 1


def _local_path(uri: str) -> Path:
    return Path(urlparse(uri).path) if uri.startswith("file://") else Path(uri)


def join(base: str, *parts: str) -> str:
    """Join path parts onto a base URI (local path or ``scheme://``)."""
    if _is_local(base):
        return str(_local_path(base).joinpath(*parts))
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def _remote_fs(uri: str) -> tuple[Any, str]:
    try:
        from pyarrow import fs as pafs
    except ImportError:  # pragma: no cover - pyarrow ships with ray
        raise WeightsError(
            f"{uri}: remote storage needs pyarrow; install it with: pip install pyarrow"
        ) from None
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError subclasses
        raise WeightsError(f"{uri}: cannot open this storage URI ({exc})") from None


def write_bytes(uri: str, data: bytes) -> ArtifactRef:
    """Write ``data`` to ``uri`` atomically, creating parent folders.

    Returns:
        The URI and the sha256 of ``data``.

    Raises:
        WeightsError: the storage cannot be written (names the URI).
    """
    digest = sha256_of(data)
    try:
        if _is_local(uri):
            _write_local(_local_path(uri), data)
        else:
            filesystem, path = _remote_fs(uri)
            filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
            with filesystem.open_output_stream(path) as stream:
                stream.write(data)
    except OSError as exc:
        raise WeightsError(f"{uri}: cannot write ({exc}); check the storage path") from None
    return ArtifactRef(uri, digest)


def _write_local(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            # NFS and crashes: the bytes must be on disk before the rename publishes them
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_bytes(uri: str, sha256: str | None = None) -> bytes:
    """Read ``uri``; with ``sha256``, verify the bytes.

    Raises:
        WeightsError: missing, unreadable, or the sha256 does not match.
    """
    try:
        if _is_local(uri):
            data = _local_path(uri).read_bytes()
        else:
            filesystem, path = _remote_fs(uri)
            with filesystem.open_input_stream(path) as stream:
                data = stream.read()
    except FileNotFoundError:
        raise WeightsError(f"{uri}: no such artifact; check the storage path") from None
    except OSError as exc:
        raise WeightsError(f"{uri}: cannot read ({exc})") from None
    if sha256 is not None and sha256_of(data) != sha256:
        raise WeightsError(
            f"{uri}: sha256 {sha256_of(data)[:12]} does not match the recorded "
            f"{sha256[:12]}; the file was changed or truncated, re-run the trial that wrote it"
        )
    return data


def graph_uri_for(weights_uri: str) -> str:
    """The graph JSON that sits beside a weights file."""
    stem = (
        weights_uri[: -len(".safetensors")] if weights_uri.endswith(".safetensors") else weights_uri
    )
    return stem + ".json"


def optimizer_uri_for(weights_uri: str) -> str:
    """The optimizer state saved beside a weights file (``<stem>.optim.pt``)."""
    return graph_uri_for(weights_uri)[: -len(".json")] + ".optim.pt"


def save_optimizer(weights_uri: str, state: dict[str, Any]) -> ArtifactRef:
    """Write an optimizer's state (``torch.save`` of plain tensors and numbers) beside
    the weights at ``weights_uri``, so a child grown from them can continue it.
    """
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return write_bytes(optimizer_uri_for(weights_uri), buffer.getvalue())


def load_optimizer(weights_uri: str) -> dict[str, Any] | None:
    """The optimizer state saved beside ``weights_uri``; ``None`` when there is none
    (the seed before training, or weights written without one).

    Raises:
        WeightsError: the file exists but cannot be read.
    """
    import io

    import torch

    uri = optimizer_uri_for(weights_uri)
    if _is_local(uri) and not _local_path(uri).exists():
        return None
    try:
        data = read_bytes(uri)
    except WeightsError:
        if _is_local(uri):
            raise
        return None  # remote: a missing object reads as an error
    try:
        state = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # torch raises pickle/runtime errors for corrupt files
        raise WeightsError(f"{uri}: not an optimizer state ({exc}); re-run its trial") from None
    return state if isinstance(state, dict) else None


def write_architecture(arch: Any, base: str, name: str, *, versioned: bool = False) -> ArtifactRef:
    """Write ``arch`` as ``<base>/<name>.json`` and ``<base>/<name>.safetensors``.

    Args:
        arch: a :class:`morphsearch.arch.Architecture`.
        base: the folder URI.
        name: the file stem (e.g. the architecture id).
        versioned: put the weights' sha256 in the stem (``<name>.<sha16>``), so a
            retried writer never replaces a file someone already recorded.

    Returns:
        The weights URI and its sha256 (what lineage records).
    """
    # deferred: torch (the driver's lineage callback imports this module without torch)
    from morphsearch.arch import io as arch_io

    data = arch_io.weights_to_bytes(arch)
    stem = f"{name}.{sha256_of(data)[:16]}" if versioned else name
    weights_uri = join(base, f"{stem}.safetensors")
    write_bytes(graph_uri_for(weights_uri), arch_io.graph_to_bytes(arch))
    return write_bytes(weights_uri, data)


def read_architecture(weights_uri: str, sha256: str | None = None) -> Any:
    """Read an architecture written by :func:`write_architecture`, verifying the weights.

    Returns:
        The :class:`morphsearch.arch.Architecture` with its stored weights.

    Raises:
        WeightsError: missing files, sha256 mismatch, or weights for another structure.
    """
    # deferred: torch (the driver's lineage callback imports this module without torch)
    from morphsearch.arch import io as arch_io

    graph, weights = read_bytes(graph_uri_for(weights_uri)), read_bytes(weights_uri, sha256)
    return arch_io.architecture_from_bytes(graph, weights, where=weights_uri)
