"""Graph files, weights files and the bad-input corpus, through the API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from morphsearch import builders
from morphsearch.arch import load, load_weights, save, save_weights
from morphsearch.arch.io import MAX_GRAPH_BYTES
from morphsearch.cli import main
from morphsearch.errors import GraphFileError, InvalidArchitecture, WeightsError

BAD = Path(__file__).parent.parent / "data" / "bad_graphs"
GRAPHS = Path(__file__).parents[2] / "graphs"

# file -> what the one-line error must say (the file name is always in it too)
CORPUS = {
    "cycle.json": "cycle through nodes fc1 -> relu1 -> fc2; remove an edge",
    "two_inputs.json": "exactly one input node, found 2: x, x2",
    "dangling.json": "node 'side' is dangling",
    "shape_mismatch.json": "node 'skip' (add): add needs inputs of one shape",
    "unknown_op.json": "node 'fc1': unknown op 'linearr'; valid ops:",
    "missing_attribute.json": "node 'fc1': linear is missing attribute 'out_features'",
    "wrong_weight_shape.json": "node 'fc1' weight 'weight' has shape [3, 5], expected [3, 4]",
    "nan_weights.json": "node 'fc2' weight 'bias' contains NaN",
    "truncated.json": "not valid JSON",
    "wrong_format.json": "graph format 2 is not supported",
    "edge_to_nowhere.json": "target 'ghost' is not a node",
    "corrupted_weights.json": "not a valid safetensors file",
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_bad_graph_gives_one_line_and_exit_2(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["graph", "validate", str(BAD / name)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("morphsearch: error: ")
    assert Path(name).stem in err
    assert CORPUS[name] in err


def test_corpus_is_complete() -> None:
    assert {p.name for p in BAD.glob("*.json")} == set(CORPUS)


def test_oversized_file_is_refused_before_parsing(tmp_path: Path, capsys) -> None:
    big = tmp_path / "big.json"
    with big.open("wb") as fh:
        fh.truncate(MAX_GRAPH_BYTES + 1)
    assert main(["graph", "show", str(big)]) == 2
    err = capsys.readouterr().err
    assert "over the 16,777,216-byte limit" in err and "big.json" in err


def test_missing_file(capsys) -> None:
    assert main(["graph", "validate", "nope.json"]) == 2
    assert "nope.json: no such graph file" in capsys.readouterr().err


def test_cli_error_has_no_traceback_in_a_real_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "morphsearch", "graph", "validate", str(BAD / "cycle.json")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]


@pytest.mark.parametrize("path", sorted(GRAPHS.glob("*.json")), ids=lambda p: p.name)
def test_shipped_seed_graphs_validate(path: Path) -> None:
    arch = load(path)
    assert arch.num_params > 0


def test_weights_for_another_structure_are_refused(tmp_path: Path) -> None:
    a, b = builders.mlp([4, 3, 2]), builders.mlp([4, 5, 2])
    save_weights(a, tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match="saved for structure"):
        load_weights(tmp_path / "w.safetensors", b)


def test_weights_metadata_and_exact_round_trip(tmp_path: Path) -> None:
    arch = builders.resnet().to(torch.float64)
    save_weights(arch, tmp_path / "w.safetensors", metadata={"search": "s1"})
    from safetensors import safe_open

    with safe_open(str(tmp_path / "w.safetensors"), "pt") as fh:
        assert fh.metadata()["structure_hash"] == arch.structure_hash
        assert fh.metadata()["search"] == "s1"
    again = arch.with_weights(load_weights(tmp_path / "w.safetensors", arch))
    assert again.weights_hash == arch.weights_hash


def test_explicit_weights_path_and_random_init(tmp_path: Path) -> None:
    arch = builders.mlp([4, 3, 2], seed=5)
    (tmp_path / "g.json").write_text(json.dumps(arch.to_json()))
    fresh = load(tmp_path / "g.json", seed=5)
    assert fresh.weights_hash == arch.weights_hash  # same seed, same init
    save_file({f"{n}.{p}": t for n, ps in arch.weights.items() for p, t in ps.items()},
              tmp_path / "elsewhere.safetensors")
    assert load(tmp_path / "g.json", weights=tmp_path / "elsewhere.safetensors").weights_hash == arch.weights_hash


def test_dict_source_and_error_types() -> None:
    arch = builders.mlp([4, 3, 2])
    assert load(arch.to_json()).structure_hash == arch.structure_hash
    with pytest.raises(GraphFileError):
        load({"format": 1, "nodes": "x", "edges": []})
    bad = arch.to_json()
    bad["nodes"][1]["out_features"] = -1
    with pytest.raises(InvalidArchitecture, match="graph: node 'fc1'"):
        load(bad)


def test_show_json_lists_layers_params_and_flops(capsys) -> None:
    assert main(["graph", "show", str(GRAPHS / "digits_cnn.json"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["params"] == sum(layer["params"] for layer in doc["layers"])
    assert doc["flops"] == sum(layer["flops"] for layer in doc["layers"])
    assert doc["input_shape"] == [1, 8, 8] and doc["output_shape"] == [10]
    assert doc["layers"][0]["id"] == "x"


def test_show_table_and_draw_png(tmp_path: Path, capsys) -> None:
    assert main(["graph", "show", str(GRAPHS / "tiny_resnet.json")]) == 0
    out = capsys.readouterr().out
    assert "b1_add" in out and "total" in out and "2,586" in out
    png = tmp_path / "resnet.png"
    assert main(["graph", "draw", str(GRAPHS / "tiny_resnet.json"), "--out", str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert main(["graph", "draw", str(GRAPHS / "tiny_resnet.json"), "--out", str(tmp_path / "x.gif")]) == 2


def test_an_interrupted_save_never_leaves_a_graph_without_its_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a graph file alone would load with freshly initialised weights: weights go first
    from morphsearch.arch import io

    real = io._atomic_write

    def crash_on_weights(path: Path, data: bytes) -> None:
        if path.suffix == ".safetensors":
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(io, "_atomic_write", crash_on_weights)
    with pytest.raises(OSError, match="disk full"):
        save(builders.mlp([4, 3, 2]), tmp_path / "a.json")
    assert list(tmp_path.iterdir()) == []


def test_bytes_round_trip_and_one_home_for_the_encoding() -> None:
    from pathlib import Path

    import morphsearch
    from morphsearch.arch import io

    arch = builders.mlp([4, 3, 2], seed=2)
    back = io.architecture_from_bytes(io.graph_to_bytes(arch), io.weights_to_bytes(arch),
                                      where="mem")  # fmt: skip
    assert (back.structure_hash, back.weights_hash) == (arch.structure_hash, arch.weights_hash)
    with pytest.raises(WeightsError, match="mem: not a valid safetensors"):
        io.weights_from_bytes(b"garbage", arch, where="mem")
    from safetensors.torch import save

    wider = builders.mlp([4, 5, 2])  # a foreign file (no morphsearch metadata) of other shapes
    flat = {f"{n}.{k}": t for n, p in wider.weights.items() for k, t in p.items()}
    with pytest.raises(WeightsError, match=r"mem: node 'fc1' weight 'weight' has shape \[5, 4\]"):
        io.architecture_from_bytes(io.graph_to_bytes(arch), save(flat), where="mem")
    root = Path(morphsearch.__file__).parent
    holders = [p.relative_to(root).as_posix() for p in root.rglob("*.py")
               if io.WEIGHTS_FORMAT in p.read_text(encoding="utf-8")]  # fmt: skip
    assert holders == ["arch/io.py"]


def test_the_compiled_forward_is_cached_outside_the_architecture() -> None:
    from morphsearch.arch.compile import forward_function

    arch = builders.mlp([4, 3, 2])
    fn = forward_function(arch)
    assert forward_function(arch) is fn and "_forward_fn" not in vars(arch)
