"""The artifact store: atomic writes, sha256 verified on read, architectures round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from morphsearch import artifacts, builders
from morphsearch.errors import WeightsError


def test_bytes_round_trip_with_sha(tmp_path: Path) -> None:
    ref = artifacts.write_bytes(str(tmp_path / "a" / "b.bin"), b"hello")
    assert ref.sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert artifacts.read_bytes(ref.uri, ref.sha256) == b"hello"
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]


def test_file_uri_is_local(tmp_path: Path) -> None:
    ref = artifacts.write_bytes(f"file://{tmp_path}/x.bin", b"x")
    assert (tmp_path / "x.bin").read_bytes() == b"x"
    assert artifacts.read_bytes(ref.uri) == b"x"


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    ref = artifacts.write_bytes(str(tmp_path / "w.bin"), b"weights")
    (tmp_path / "w.bin").write_bytes(b"weightz")
    with pytest.raises(WeightsError, match="sha256"):
        artifacts.read_bytes(ref.uri, ref.sha256)


def test_missing_artifact(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no such artifact"):
        artifacts.read_bytes(str(tmp_path / "none.bin"))


def test_architecture_round_trip(tmp_path: Path) -> None:
    arch = builders.mlp([6, 5, 3], seed=4)
    trained = arch.with_weights(
        {n: {p: t + 1.0 for p, t in ps.items()} for n, ps in arch.weights.items()}
    )
    ref = artifacts.write_architecture(trained, str(tmp_path), "child")
    back = artifacts.read_architecture(ref.uri, ref.sha256)
    assert back.structure_hash == trained.structure_hash
    assert back.weights_hash == trained.weights_hash != arch.weights_hash
    x = torch.randn(4, 6)
    assert torch.equal(back.to_module()(x), trained.to_module()(x))


def test_weights_for_another_graph_are_refused(tmp_path: Path) -> None:
    ref = artifacts.write_architecture(builders.mlp([6, 5, 3]), str(tmp_path), "a")
    other = artifacts.write_architecture(builders.mlp([6, 7, 3]), str(tmp_path), "b")
    Path(artifacts.graph_uri_for(ref.uri)).write_bytes(
        Path(artifacts.graph_uri_for(other.uri)).read_bytes()
    )
    with pytest.raises(WeightsError, match="structure"):
        artifacts.read_architecture(ref.uri)


def test_join() -> None:
    assert artifacts.join("s3://bucket/runs/", "x", "y.bin") == "s3://bucket/runs/x/y.bin"
    assert artifacts.join("/tmp/r", "x") == "/tmp/r/x"


def test_unreachable_remote_uri() -> None:
    with pytest.raises(WeightsError, match="nosuchscheme://"):
        artifacts.read_bytes("nosuchscheme://bucket/x")


def test_versioned_files_are_never_replaced(tmp_path: Path) -> None:
    arch = builders.mlp([6, 5, 3], seed=1)
    first = artifacts.write_architecture(arch, str(tmp_path), "c", versioned=True)
    other = arch.with_weights(
        {n: {p: t * 2 for p, t in ps.items()} for n, ps in arch.weights.items()}
    )
    second = artifacts.write_architecture(other, str(tmp_path), "c", versioned=True)
    assert first.uri != second.uri and first.sha256[:16] in first.uri
    assert artifacts.read_architecture(first.uri, first.sha256).weights_hash == arch.weights_hash
