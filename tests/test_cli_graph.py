"""``morphsearch graph``: long graphs stay fast to show and draw, and validate says what
it checked."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from morphsearch import builders
from morphsearch.arch import save
from morphsearch.cli import main


def _chain(path: Path, n: int) -> Path:
    """An input, ``n`` relus in a row, an output: a long graph without weights to load."""
    nodes = [{"id": "x", "op": "input", "shape": [2]}]
    nodes += [{"id": f"r{i}", "op": "relu"} for i in range(n)] + [{"id": "out", "op": "output"}]
    ids = [node["id"] for node in nodes]
    edges = [{"source": a, "target": b, "port": 0} for a, b in itertools.pairwise(ids)]
    doc = {"format": 1, "directed": True, "multigraph": False, "graph": {"name": "chain"},
           "nodes": nodes, "edges": edges}  # fmt: skip
    path.write_text(json.dumps(doc))
    return path


def _seconds(capsys: pytest.CaptureFixture[str], *argv: str) -> float:
    started = time.perf_counter()
    code = main(list(argv))
    elapsed = time.perf_counter() - started
    capsys.readouterr()
    assert code == 0, argv
    return elapsed


@pytest.mark.slow
def test_show_of_a_long_chain_costs_about_what_loading_it_costs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small, large = _chain(tmp_path / "small.json", 2_000), _chain(tmp_path / "large.json", 20_000)
    _seconds(capsys, "graph", "show", str(small))  # warm the imports
    show_small = min(_seconds(capsys, "graph", "show", str(small)) for _ in range(2))
    show_large = min(_seconds(capsys, "graph", "show", str(large)) for _ in range(2))
    validate_large = min(_seconds(capsys, "graph", "validate", str(large)) for _ in range(2))
    # linear in the node count (10x the nodes, well under 100x the time) ...
    assert show_large < 30 * show_small + 0.5, (show_small, show_large)
    # ... and the table adds little to loading: rich laid out every row (8x the load)
    assert show_large < 3 * validate_large + 0.5, (validate_large, show_large)


def test_show_table_of_a_long_graph_shows_its_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _chain(tmp_path / "c.json", 500)
    assert main(["graph", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "r0 " in out and "r499" in out and "r250 " not in out
    assert "302 more layers (--all or --json lists them)" in out
    assert main(["graph", "show", str(path), "--all"]) == 0
    assert "r250 " in capsys.readouterr().out


def test_draw_refuses_a_graph_too_long_to_read_before_loading_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _chain(tmp_path / "c.json", 20_000)
    started = time.perf_counter()
    assert main(["graph", "draw", str(path), "--out", str(tmp_path / "c.png")]) == 2
    assert time.perf_counter() - started < 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot draw 20,002 layers" in err and "graph show" in err
    assert not (tmp_path / "c.png").exists()


def test_validate_says_whether_it_checked_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arch = builders.mlp([4, 3, 2])
    save(arch, tmp_path / "g.json")
    assert main(["graph", "validate", str(tmp_path / "g.json")]) == 0
    assert f"weights {tmp_path / 'g.safetensors'} checked" in capsys.readouterr().out
    (tmp_path / "g.safetensors").unlink()
    assert main(["graph", "validate", str(tmp_path / "g.json")]) == 0
    assert "no weights file" in capsys.readouterr().out


def test_drawing_is_titled_with_the_network_not_its_seeds_name(tmp_path: Path) -> None:
    from morphsearch import morphisms
    from morphsearch.viz import describe

    seed = builders.mlp([64, 8, 10])
    child = morphisms.apply("widen.split", seed, "fc1", k=39).child
    assert child.graph.graph.get("name") == "mlp-64-8-10"  # the name a child inherits
    assert describe(child) == "64-47-10"
    assert describe(builders.mlp([4, 3, 2])) == "4-3-2"


@pytest.mark.parametrize("keep", [0, 5, 60], ids=["empty", "header-cut", "data-cut"])
def test_truncated_weights_say_how_to_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], keep: int
) -> None:
    save(builders.mlp([4, 3, 2]), tmp_path / "g.json")
    weights = tmp_path / "g.safetensors"
    weights.write_bytes(weights.read_bytes()[:keep])
    assert main(["graph", "validate", str(tmp_path / "g.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(weights) in err
    assert f"cut short (size {keep:,} bytes)" in err and "copy it again" in err


def test_grow_takes_an_npz_file_as_its_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(40, 4)).astype("float32"),
        "y_train": rng.integers(0, 2, 40),
        "x_test": rng.normal(size=(10, 4)).astype("float32"),
        "y_test": rng.integers(0, 2, 10),
    }
    np.savez(tmp_path / "data.npz", **arrays)
    save(builders.mlp([4, 3, 2]), tmp_path / "g.json")
    argv = ["graph", "grow", str(tmp_path / "g.json"), "widen.gradmax", "--site", "fc1",
            "--out", str(tmp_path / "child.json")]  # fmt: skip
    assert main([*argv, "--data", f"npz:{tmp_path / 'data.npz'}"]) == 0
    assert (tmp_path / "child.json").exists()
    capsys.readouterr()
    assert main([*argv, "--data", "npz"]) == 2
    assert "--data npz:PATH" in capsys.readouterr().err
