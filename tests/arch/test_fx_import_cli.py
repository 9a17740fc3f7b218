"""``morphsearch graph import FACTORY --input-shape DIMS --out FILE``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from morphsearch._cli.graph import summary
from morphsearch.arch import load
from morphsearch.cli import main
from tests.arch import fx_models


def test_import_writes_the_graph_and_weights_and_shows_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.json"
    code = main(["graph", "import", "tests.arch.fx_models:small_mlp", "--input-shape", "40",
                 "--out", str(out), "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    arch = load(out)  # the weights from model.safetensors beside it
    assert doc == summary(arch)
    assert [layer["op"] for layer in doc["layers"]] == ["input", "linear", "relu", "linear",
                                                        "output"]
    module = fx_models.small_mlp().eval()  # the factory seeds its initialisation
    x = torch.randn(7, 40)
    with torch.no_grad():
        torch.testing.assert_close(arch.to_module().eval()(x), module(x), rtol=0, atol=1e-6)
    assert main(["graph", "import", "tests.arch.fx_models:small_mlp", "--input-shape", "40",
                 "--out", str(out)]) == 0
    assert "linear_0" in capsys.readouterr().out  # the `graph show` table


def test_import_refusal_is_one_line_exit_2_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lstm.json"
    code = main(["graph", "import", "tests.arch.fx_models:lstm_net", "--input-shape", "40",
                 "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("morphsearch: error: cannot import node 'lstm' (nn.LSTM 'lstm'")
    assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "expected"), [
    (["--input-shape", "4,x"], "--input-shape '4,x': give positive ints separated by commas"),
    (["--input-shape", "0"], "--input-shape '0': give positive ints"),
    (["--input-shape", "40", "--out", "model.onnx"], "give a .json graph file path"),
])
def test_import_checks_its_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     args: list[str], expected: str) -> None:
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "m.json")]
    assert main(["graph", "import", "tests.arch.fx_models:small_mlp", *args]) == 2
    assert expected in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
