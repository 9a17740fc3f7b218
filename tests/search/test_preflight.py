"""A search that cannot run fails before Ray starts, in one line, and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from morphsearch.cli import main
from morphsearch.lineage import open_store
from tests.search.conftest import refuse_cluster, tiny_config_file


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to start Ray fails the test: every check must come before it."""
    refuse_cluster(monkeypatch, "Ray was started before the inputs were checked")


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("morphsearch: error:"), err
    for needle in needles:
        assert needle in err, err
    return err


def _written(tmp_path: Path) -> set[str]:
    return {p.name for p in tmp_path.iterdir()} - {"tiny.yaml", "graph.json", "data.npz"}


def test_missing_npz_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny_config_file(tmp_path, dataset={"name": "npz", "path": str(tmp_path / "absent.npz")})
    _fails(["search", str(config)], capsys, "dataset.path", "absent.npz")
    assert _written(tmp_path) == set()


def test_a_file_that_is_no_graph_names_seed_graph_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = tmp_path / "graph.json"
    graph.write_text('{"nodes": "not a graph"}')
    config = tiny_config_file(tmp_path, seed_graph={"path": str(graph)})
    _fails(["search", str(config)], capsys, "seed_graph.path")
    assert _written(tmp_path) == set()


def test_seed_graph_for_another_input_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from morphsearch import builders

    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps(builders.mlp([20, 8, 10]).to_json()))  # digits: 64 features
    config = tiny_config_file(tmp_path, seed_graph={"path": str(graph)})
    _fails(["search", str(config)], capsys, "seed_graph", "input shape")
    assert _written(tmp_path) == set()


def test_db_not_a_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["search", str(tiny_config_file(tmp_path)), "--db", "notaurl"], capsys, "malformed database URL")
    assert _written(tmp_path) == set()


def test_storage_that_cannot_be_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    argv = ["search", str(tiny_config_file(tmp_path)), "--storage", str(blocker / "runs")]
    _fails(argv, capsys, "storage", "is a file", "--storage")
    assert _written(tmp_path) == {"afile"}


def test_read_only_storage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # /proc refuses new files even to root, for whom chmod 0500 would not
    _fails(
        ["search", str(tiny_config_file(tmp_path)), "--storage", "/proc/morphsearch-runs"],
        capsys,
        "storage",
        "cannot write",
    )
    assert _written(tmp_path) == set()


def test_second_run_of_a_name_names_resume_and_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_config_file(tmp_path)
    with open_store(f"sqlite:///{tmp_path}/lineage.db", write=True) as store:
        store.create_search("tiny", {})
        before = store.summary("tiny")
    _fails(["search", str(config)], capsys, "'tiny' already exists", "--resume", "--name")
    with open_store(f"sqlite:///{tmp_path}/lineage.db") as store:
        assert store.summary("tiny") == before
    assert _written(tmp_path) == {"lineage.db"}


def test_runs_folder_of_the_name_already_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    _fails(["search", str(tiny_config_file(tmp_path))], capsys, "already exists", "--resume", "--name")
    assert not (tmp_path / "lineage.db").exists()


def test_resume_with_nothing_to_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["search", str(tiny_config_file(tmp_path)), "--resume"], capsys, "nothing to resume")
    assert _written(tmp_path) == set()
