"""Export: files, parity of ONNX and torch.export with PyTorch, safetensors round trip,
refusal of corrupted weights, the CLI, and ``morphsearch.load_module``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import morphsearch
from morphsearch import artifacts, builders, morphisms
from morphsearch.arch import Architecture
from morphsearch.cli import main
from morphsearch.errors import ExportError, WeightsError
from morphsearch.export import (
    TOLERANCE,
    export_architecture,
    export_from_store,
    load_architecture,
    parse_formats,
)
from morphsearch.lineage import ArchitectureIn, LineageStore

SEARCH = "demo"
CONFIG = {
    "objectives": [{"metric": "val_accuracy", "mode": "max"}],
    "dataset": {"name": "digits", "options": {"test_size": 0.2}},
    "budget": {"trials": 3},
}


def _arch_in(arch_id: str, arch: Architecture, ref: artifacts.ArtifactRef) -> ArchitectureIn:
    return ArchitectureIn(arch_id, arch.to_json(), arch.structure_hash, arch.num_params,
                          arch.flops, arch.weights_hash, ref.uri, ref.sha256)  # fmt: skip


def _trained(arch: Architecture, seed: int) -> Architecture:
    """Perturbed weights, so a round trip cannot pass by re-initialising."""
    generator = torch.Generator().manual_seed(seed)
    weights = {
        node: {p: t + 0.01 * torch.randn(t.shape, generator=generator, dtype=t.dtype)
               if t.is_floating_point() else t for p, t in params.items()}
        for node, params in arch.weights.items()
    }  # fmt: skip
    return arch.with_weights(weights)


def make_lineage(tmp_path: Path) -> dict[str, Any]:
    """A search with real architectures and weights: seed -> a (widen.split) -> c (deepen.skip),
    seed -> b (deepen.identity). val_accuracy: seed 0.5, a 0.7/0.8, b 0.6, c 0.9 (best)."""
    db = f"sqlite:///{tmp_path / 'lineage.db'}"
    store_dir = str(tmp_path / "runs")
    seed = _trained(builders.mlp([64, 8, 10]), 0)
    a_result = morphisms.apply("widen.split", seed, "fc1", k=4)
    a = _trained(a_result.child, 1)
    b_result = morphisms.apply("deepen.identity", seed, "relu1")
    c_result = morphisms.apply("deepen.skip", a, "relu1")
    archs = {"seed": seed, "a": a, "b": _trained(b_result.child, 2), "c": c_result.child}
    records = {
        "a": [a_result.record.to_json()],
        "b": [b_result.record.to_json()],
        "c": [c_result.record.to_json()],
    }
    trials = {"t1": ("seed", "a", {1: 0.7, 2: 0.8}), "t2": ("seed", "b", {1: 0.6}),
              "t3": ("a", "c", {1: 0.85, 2: 0.9}), "t0": (None, "seed", {1: 0.5})}  # fmt: skip
    with LineageStore(db, write=True) as store:
        store.create_search(SEARCH, CONFIG)
        refs = {k: artifacts.write_architecture(v, store_dir, k) for k, v in archs.items()}
        store.record_seed(SEARCH, _arch_in("seed", seed, refs["seed"]))
        for trial_id, (parent, child, values) in trials.items():
            if parent is not None:
                store.record_trial(SEARCH, trial_id, parent, _arch_in(child, archs[child],
                                   refs[child]), records[child], status="TERMINATED")  # fmt: skip
            else:
                store.record_trial(SEARCH, trial_id, None, _arch_in("seed", seed, refs["seed"]),
                                   status="TERMINATED")  # fmt: skip
            for evaluation, value in values.items():
                store.record_metrics(trial_id, evaluation, {"val_accuracy": value}, arch_id=child)
        # scored on the test split at the search's end: the exported one and another
        store.record_metrics("t3", 2, {"test_accuracy": 0.77}, arch_id="c")
        store.record_metrics("t1", 2, {"test_accuracy": 0.66}, arch_id="a")
    return {"db": db, "archs": archs, "refs": refs}


@pytest.fixture(scope="module")
def lineage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_lineage(tmp_path_factory.mktemp("lineage"))


@pytest.fixture(scope="module")
def best_export(lineage: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "best"
    result = export_from_store(out, db=lineage["db"], search=SEARCH)
    assert result.files == (
        "MODEL_CARD.md", "graph.json", "model.onnx", "model.pt2", "weights.safetensors"
    )  # fmt: skip
    return out


def _batches(arch: Architecture) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(123)
    return [torch.randn((n, *arch.input_shape), generator=generator) for n in (1, 2, 5, 33)]


def _assert_parity(out: Path, arch: Architecture) -> tuple[float, float]:
    """Max |onnxruntime - torch| and |torch.export - torch| on fresh batches of 4 sizes."""
    import onnxruntime as ort

    module = arch.to_module().eval()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    program = torch.export.load(str(out / "model.pt2")).module()
    worst_onnx = worst_pt2 = 0.0
    with torch.no_grad():
        for x in _batches(arch):
            want = module(x).numpy()
            got_onnx = session.run(None, {"x": x.numpy()})[0]
            got_pt2 = program(x).numpy()
            assert got_onnx.shape == want.shape == got_pt2.shape
            worst_onnx = max(worst_onnx, float(np.abs(got_onnx - want).max()))
            worst_pt2 = max(worst_pt2, float(np.abs(got_pt2 - want).max()))
    assert worst_onnx <= TOLERANCE and worst_pt2 <= TOLERANCE
    return worst_onnx, worst_pt2


def test_best_export_matches_pytorch_and_round_trips(
    best_export: Path, lineage: dict[str, Any]
) -> None:
    best = lineage["archs"]["c"]
    _assert_parity(best_export, best)
    loaded = load_architecture(best_export)
    assert loaded.structure_hash == best.structure_hash
    assert loaded.weights_hash == best.weights_hash
    for node, params in best.weights.items():
        for name, tensor in params.items():
            assert torch.equal(loaded.weights[node][name], tensor)
    from safetensors import safe_open

    with safe_open(str(best_export / "weights.safetensors"), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["structure_hash"] == best.structure_hash
    assert (meta["search"], meta["arch_id"]) == (SEARCH, "c")


def test_model_card_has_the_lineage_path(best_export: Path) -> None:
    card = (best_export / "MODEL_CARD.md").read_text()
    assert card.startswith("# Model card: c")
    lineage_rows = [line for line in card.splitlines() if line.startswith("| ") and "`" in line]
    path = [row.split("|")[2].strip(" `") for row in lineage_rows if row.split("|")[1].strip()
            .isdigit()]  # fmt: skip
    assert path == ["seed", "a", "c"]
    assert "widen.split@fc1 (k=4" in card and "deepen.skip@relu1" in card
    assert "0.9 (evaluation 2)" in card and "0.8 (evaluation 2)" in card
    tested = [line for line in card.splitlines() if line.startswith("| test_accuracy")]
    assert tested == ["| test_accuracy (scored once at the search's end, never used to "
                      "select) | 0.77 (evaluation 2) |"]  # its own score, not a's
    # the word is explained
    assert "evaluation: the index of the evaluation at which the trial measured" in card
    assert '"name": "digits"' in card and "test_size" in card


@pytest.mark.parametrize("kind", ["cnn", "resnet"])
def test_cnn_and_residual_exports_match(kind: str, tmp_path: Path) -> None:
    arch = _trained(builders.cnn() if kind == "cnn" else builders.resnet(), 7)
    result = export_architecture(arch, tmp_path / kind)
    assert set(result.parity) == {"onnx", "pt2"}
    assert max(result.parity.values()) <= TOLERANCE
    _assert_parity(tmp_path / kind, arch)
    module = morphsearch.load_module(tmp_path / kind)
    x = torch.randn(6, *arch.input_shape)
    with torch.no_grad():
        assert torch.equal(module(x), arch.to_module().eval()(x))


def test_load_from_store_equals_the_stored_module(lineage: dict[str, Any]) -> None:
    module = morphsearch.load_module(db=lineage["db"], arch_id="a")
    stored = lineage["archs"]["a"].to_module()
    assert not module.training
    assert module.state_dict().keys() == stored.state_dict().keys()
    for key, tensor in stored.state_dict().items():
        assert torch.equal(module.state_dict()[key], tensor)


def test_corrupted_weights_are_refused(best_export: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("graph.json", "weights.safetensors"):
        (copy / name).write_bytes((best_export / name).read_bytes())
    raw = bytearray((copy / "weights.safetensors").read_bytes())
    raw[-3] ^= 0xFF  # flip bits inside a tensor: the file still parses
    (copy / "weights.safetensors").write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match=r"weights hash .* does not match"):
        morphsearch.load_module(copy)
    (copy / "weights.safetensors").write_bytes(bytes(raw[:40]))  # truncated
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        morphsearch.load_module(copy)


def test_mismatched_weights_are_refused(best_export: Path, lineage: dict[str, Any]) -> None:
    other = lineage["archs"]["a"]
    folder = best_export.parent / "mismatch"
    folder.mkdir()
    (folder / "graph.json").write_text(json.dumps(other.to_json()))
    (folder / "weights.safetensors").write_bytes((best_export / "weights.safetensors").read_bytes())
    with pytest.raises(WeightsError, match="saved for structure"):
        morphsearch.load_module(folder)


def test_tampered_store_artifact_is_refused(tmp_path: Path) -> None:
    data = make_lineage(tmp_path)
    path = Path(data["refs"]["b"].uri)
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(WeightsError, match="sha256"):
        export_from_store(tmp_path / "out", db=data["db"], arch_id="b", formats=["safetensors"])
    assert not (tmp_path / "out").exists()


def test_failed_parity_writes_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import morphsearch.export as export

    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # any difference, even 0, fails
    with pytest.raises(ExportError, match=r"differs from PyTorch.*nothing was written"):
        export_architecture(builders.mlp([4, 3, 2]), tmp_path / "out", formats=["pt2"])
    assert list(tmp_path.iterdir()) == []


def test_parse_formats() -> None:
    assert parse_formats(None) == ("onnx", "pt2", "safetensors")
    assert parse_formats("pt2, SAFETENSORS") == ("pt2", "safetensors")
    with pytest.raises(ExportError, match="unknown export format tflite"):
        parse_formats("onnx,tflite")


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_export_and_errors(
    lineage: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = lineage["db"]
    code, out, _ = _cli(capsys, "export", "--db", db, "--arch", "b", "--out",
                        str(tmp_path / "b"), "--format", "safetensors")  # fmt: skip
    assert code == 0 and "weights.safetensors" in out
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "MODEL_CARD.md", "graph.json", "weights.safetensors"
    ]  # fmt: skip
    cases = {
        ("--arch", "nope"): "nope",
        ("--best", "--search", "missing"): "missing",
        ("--arch", "b", "--format", "onnx,tflite"): "tflite",
        ("--best", "--metric", "val_loss"): "no val_loss values",
        ("--arch", "b", "--search", "other"): "belongs to search",
        ("--arch", "b", "--refit"): "no trial with a recorded learning rate",
        ("--arch", "b", "--refit", "--refit-steps", "0"): "--refit-steps 0 must be at least 1",
        ("--arch", "b", "--refit-steps", "5"): "--refit-steps sets the refit's length: add --refit",
    }
    for extra, named in cases.items():
        code, out, err = _cli(capsys, "export", "--db", db, "--out", str(tmp_path / "x"), *extra)
        assert code == 2, extra
        assert err.count("\n") == 1 and err.startswith("morphsearch: error:") and named in err
    assert not (tmp_path / "x").exists()


def test_re_export_keeps_the_users_files_and_a_plain_folder_mode(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import morphsearch.export as export

    arch = builders.mlp([4, 3, 2])
    out = tmp_path / "out"
    export_architecture(arch, out, formats=["pt2", "safetensors"])
    (tmp_path / "plain").mkdir()
    assert out.stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777
    (out / "keep.txt").write_text("mine")
    export_architecture(_trained(arch, 3), out, formats=["safetensors"])
    names = sorted(p.name for p in out.iterdir())
    assert names == ["graph.json", "keep.txt", "weights.safetensors"]  # stale model.pt2 gone
    assert (out / "keep.txt").read_text() == "mine"
    weights = (out / "weights.safetensors").read_bytes()
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # a failed export changes nothing
    with pytest.raises(ExportError):
        export_architecture(arch, out, formats=["pt2", "safetensors"])
    assert sorted(p.name for p in out.iterdir()) == names
    assert (out / "weights.safetensors").read_bytes() == weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "plain"]
