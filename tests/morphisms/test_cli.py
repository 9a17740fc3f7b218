"""``morphsearch graph morphisms FILE`` and ``graph grow FILE MORPHISM`` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from morphsearch import builders, morphisms
from morphsearch.arch import load, save
from morphsearch.arch.compile import evaluate
from morphsearch.cli import main
from morphsearch.data import load_dataset

GRAPHS = Path(__file__).parents[2] / "graphs"


def test_morphisms_lists_every_morphism_with_its_sites(capsys: pytest.CaptureFixture[str]) -> None:
    path = GRAPHS / "tiny_resnet.json"
    assert main(["graph", "morphisms", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    arch = load(path)
    assert [m["name"] for m in doc] == morphisms.list_morphisms()
    for entry in doc:
        assert entry["sites"] == morphisms.sites(entry["name"], arch)
        assert entry["params"] == morphisms.get(entry["name"]).param_defaults()
    assert main(["graph", "morphisms", str(path)]) == 0
    table = capsys.readouterr().out
    assert "widen.gradmax" in table and "deepen.skip" in table


def test_grow_writes_the_child_apply_would_build(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    parent_path = tmp_path / "parent.json"
    save(builders.mlp([64, 8, 10], seed=5), parent_path)  # trained-looking weights beside it
    parent = load(parent_path)
    before = parent_path.read_bytes(), (tmp_path / "parent.safetensors").read_bytes()
    out = tmp_path / "child.json"
    code = main(["graph", "grow", str(parent_path), "widen.gradmax", "--data", "digits",
                 "--batch-size", "100", "--param", "k=3", "--seed", "4", "--out", str(out)])
    assert code == 0
    line = capsys.readouterr().out
    assert "widen.gradmax at fc1 (k=3" in line and "610 -> 835 params" in line
    child = load(out)  # its weights from child.safetensors beside it
    digits = load_dataset("digits", image=False)  # the MLP parent takes 64 features
    batch = (digits.x_train[:100], digits.y_train[:100])
    expected = morphisms.apply("widen.gradmax", parent, "fc1", batch=batch, seed=4, k=3).child
    assert (child.structure_hash, child.weights_hash) == (expected.structure_hash,
                                                          expected.weights_hash)
    x = digits.x_val
    torch.testing.assert_close(evaluate(child, x), evaluate(parent, x), rtol=0, atol=1e-5)
    assert (parent_path.read_bytes(), (tmp_path / "parent.safetensors").read_bytes()) == before


def test_grow_reshapes_flat_samples_for_an_image_input(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cnn.json"
    assert main(["graph", "grow", str(GRAPHS / "digits_cnn.json"), "widen.gradmax", "--data",
                 "digits", "--site", "conv2", "--out", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["site"] == "conv2" and record["preservation_error"] < 1e-5
    assert load(out).spec("conv2")["out_channels"] == load(GRAPHS / "digits_cnn.json").spec(
        "conv2")["out_channels"] + 1


@pytest.mark.parametrize(("args", "message"), [
    (["widen.gradmx"], "unknown morphism 'widen.gradmx'; valid morphisms: "
                       + ", ".join(morphisms.list_morphisms())),
    (["widen.gradmax"], "widen.gradmax needs a data batch: pass --data DATASET"),
    (["widen.gradmax", "--data", "digits", "--site", "relu1"],
     "does not apply at 'relu1' (node 'relu1' is not a linear, conv1d or conv2d layer); valid sites: fc1"),
    (["widen.gradmax", "--data", "teacher_student"],
     "batch inputs (256, 20) with 256 targets do not fit the network's input shape (1, 8, 8)"),
    (["widen.random", "--param", "q=1"], "has no parameter 'q'; valid parameters: eps, k, scale"),
    (["widen.random", "--param", "k"], "--param 'k': write NAME=VALUE"),
    (["widen.random", "--param", "k=0"], "k=0 must be a positive int"),
    (["widen.random", "--data", "mnist"], "unknown dataset 'mnist'; valid datasets:"),
    (["widen.random", "--batch-size", "0"], "--batch-size 0: give at least 1 sample"),
])
def test_grow_refuses_with_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "child.json"
    code = main(["graph", "grow", str(GRAPHS / "digits_mlp.json"), *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_grow_refuses_an_out_path_it_cannot_write(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    graph = str(GRAPHS / "digits_mlp.json")
    assert main(["graph", "grow", graph, "widen.random", "--out", str(tmp_path / "a.txt")]) == 2
    assert "give a .json graph file path" in capsys.readouterr().err
    missing = tmp_path / "nope" / "a.json"
    assert main(["graph", "grow", graph, "widen.random", "--out", str(missing)]) == 2
    assert "does not exist; create it first" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
