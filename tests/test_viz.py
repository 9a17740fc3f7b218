"""Lineage pictures: the search tree coloured by metric and the Pareto front are real
plots (decoded, sized, not blank), and ``lineage tree|pareto --png`` never imports torch."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from morphsearch.cli import main
from morphsearch.errors import MorphSearchError
from morphsearch.lineage import ArchNode
from morphsearch.viz import draw_pareto, draw_search_tree
from tests.test_export import make_lineage


def assert_real_plot(png: bytes | Path, min_size: tuple[int, int] = (300, 250)) -> np.ndarray:
    """Decode a PNG and check it is a sizeable, non-blank, multi-coloured picture."""
    import matplotlib.image as mpimg

    source = io.BytesIO(png) if isinstance(png, bytes) else str(png)
    image = mpimg.imread(source, format="png")
    height, width = image.shape[:2]
    assert width >= min_size[0] and height >= min_size[1], image.shape
    rgb = image[..., :3].reshape(-1, 3)
    assert float(rgb.std()) > 0.05  # not a blank canvas
    non_white = (rgb < 0.95).any(axis=1).mean()
    assert 0.01 < non_white < 0.9
    assert len(np.unique((rgb * 255).astype(np.uint8), axis=0)) > 20  # colour map, text, lines
    return image


@pytest.fixture(scope="module")
def lineage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_lineage(tmp_path_factory.mktemp("viz"))


def _nodes() -> list[ArchNode]:
    return [
        ArchNode("s", None, 0, 100, 200, "seed"),
        ArchNode("a", "s", 1, 150, 300, "trial", ({"name": "widen.split", "site": "fc1"},)),
        ArchNode("b", "s", 1, 120, 240, "trial"),
        ArchNode("c", "a", 2, 300, 600, "trial"),
        ArchNode("c2", "c", 3, 350, 700, "growth"),
    ]


def test_tree_positions_centre_parents_over_children() -> None:
    from morphsearch.viz import _tree_positions

    pos = _tree_positions(_nodes())
    assert pos["c2"][1] == -3 and pos["s"][1] == 0
    assert pos["s"][0] == (pos["a"][0] + pos["b"][0]) / 2
    assert len({p for p in pos.values()}) == 5  # no two architectures on one spot


def test_tree_and_pareto_pictures_are_real_plots(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    draw_search_tree(_nodes(), {"s": 0.5, "a": 0.7, "c": 0.9}, buffer, metric="acc",
                     highlight="c")  # fmt: skip
    tree = assert_real_plot(buffer.getvalue())
    # viridis marks: some pixels are strongly yellow-green (high) and some purple (low)
    rgb = tree[..., :3].reshape(-1, 3)
    assert ((rgb[:, 1] > 0.8) & (rgb[:, 2] < 0.3)).any()
    points = [("s", 100.0, 0.5), ("a", 150.0, 0.7), ("b", 120.0, 0.4), ("c", 300.0, 0.9)]
    draw_pareto(points, [points[0], points[1], points[3]], tmp_path / "p.png", metric="acc")
    pareto = assert_real_plot(tmp_path / "p.png")
    prgb = pareto[..., :3].reshape(-1, 3)
    assert ((prgb[:, 0] > 0.75) & (prgb[:, 1] < 0.3) & (prgb[:, 2] < 0.3)).any()  # red front


def test_pictures_refuse_bad_input(tmp_path: Path) -> None:
    with pytest.raises(MorphSearchError, match="no architectures"):
        draw_search_tree([], {}, tmp_path / "t.png", metric="acc")
    with pytest.raises(MorphSearchError, match=r"\.png"):
        draw_search_tree(_nodes(), {}, tmp_path / "t.gif", metric="acc")
    with pytest.raises(MorphSearchError, match="no architecture has a acc value"):
        draw_pareto([], [], tmp_path / "p.png", metric="acc")


def test_lineage_cli_png_options_without_torch(lineage: dict[str, Any], tmp_path: Path) -> None:
    tree, pareto = tmp_path / "tree.png", tmp_path / "pareto.png"
    script = (
        "import sys\n"
        "from morphsearch.cli import main\n"
        f"a = main(['lineage', 'tree', '--db', {lineage['db']!r}, '--png', {str(tree)!r}])\n"
        f"b = main(['lineage', 'pareto', '--db', {lineage['db']!r}, '--metric', 'val_accuracy',"
        f" '--png', {str(pareto)!r}, '--json'])\n"
        "assert (a, b) == (0, 0)\n"
        "heavy = [m for m in ('torch', 'ray') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"wrote {tree}" in done.stderr and '"arch_id": "c"' in done.stdout
    assert_real_plot(tree)
    assert_real_plot(pareto)


def test_lineage_cli_png_bad_suffix(lineage: dict[str, Any], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    code = main(["lineage", "tree", "--db", lineage["db"], "--png", str(tmp_path / "t.bmp")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "t.bmp" in err
