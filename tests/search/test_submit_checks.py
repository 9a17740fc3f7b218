"""``submit`` refuses everything ``search`` refuses, with the same line, before it
contacts the cluster; a good config is staged and submitted. No Ray is started."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from morphsearch.cli import main
from morphsearch.lineage import open_store
from tests.search.conftest import refuse_cluster, tiny_config_file

NOBODY = "http://127.0.0.1:1"  # no Jobs API listens here


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting Ray or making a Jobs API client fails the test: checks come first."""
    refuse_cluster(monkeypatch, "Ray or the cluster was contacted before the config was checked")


def _graph(tmp_path: Path, text: str) -> dict[str, Any]:
    (tmp_path / "graph.json").write_text(text)
    return {"seed_graph": {"path": str(tmp_path / "graph.json")}}


def _narrow_graph(tmp_path: Path) -> dict[str, Any]:
    from morphsearch import builders

    return _graph(tmp_path, json.dumps(builders.mlp([20, 8, 10]).to_json()))


def _taken_name(tmp_path: Path) -> dict[str, Any]:
    with open_store(f"sqlite:///{tmp_path}/lineage.db", write=True) as store:
        store.create_search("tiny", {})
    return {}


def _runs_folder_there(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    return {}


def _old_schema(tmp_path: Path) -> dict[str, Any]:
    from morphsearch.lineage.database import Database
    from morphsearch.lineage.schema import upgrade

    db = Database(f"sqlite:///{tmp_path}/lineage.db", write=True)
    upgrade(db, "0001_initial")
    db.dispose()
    return {}


Setup = Callable[[Path], dict[str, Any]]
# id -> (config changes, extra argv (tmp_path formatted in), a part of the expected line)
BAD: dict[str, tuple[Setup, list[str], str]] = {
    "unknown field": (lambda t: {"unknown_thing": 1}, [], "unknown_thing"),
    "unknown morphism": (
        lambda t: {"morphisms": {"deepen.magic": {}}}, [], "morphisms.deepen.magic"
    ),
    "unknown growth morphism": (
        lambda t: {"growth": {"enabled": True, "morphism": "widen.magic"}}, [], "growth.morphism"
    ),
    "unknown growth trigger": (
        lambda t: {"growth": {"enabled": True, "trigger": "sometimes"}}, [], "growth.trigger"
    ),
    "missing npz": (
        lambda t: {"dataset": {"name": "npz", "path": str(t / "absent.npz")}}, [], "dataset.path"
    ),
    "file that is no graph": (
        lambda t: _graph(t, '{"nodes": "not a graph"}'), [], "seed_graph.path"
    ),
    "seed graph of another input shape": (_narrow_graph, [], "input shape"),
    "malformed database URL": (lambda t: {}, ["--db", "notaurl"], "malformed database URL"),
    "database folder missing": (
        lambda t: {}, ["--db", "sqlite:///{tmp}/absent/l.db"], "absent"
    ),
    "database server unreachable": (
        lambda t: {}, ["--db", "postgresql://u:s3cret@127.0.0.1:1/lineage"], "127.0.0.1:1"
    ),
    "outdated schema": (_old_schema, [], "morphsearch db upgrade"),
    "storage under a file": (
        lambda t: (t / "afile").write_text("x") and {}, ["--storage", "{tmp}/afile/runs"],
        "is a file",
    ),
    "name already recorded": (_taken_name, [], "'tiny' already exists"),
    "runs folder already there": (_runs_folder_there, [], "already exists"),
    "nothing to resume": (lambda t: {}, ["--resume"], "nothing to resume"),
}


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2, argv
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("morphsearch: error:"), err
    assert captured.out == ""  # no job id: nothing was submitted
    return err


# the cluster's resources: search refuses them here; submit leaves them to the job, on
# the cluster (its database and storage may not be reachable from the submitting machine)
CLUSTER_SIDE = {"database folder missing", "database server unreachable", "outdated schema",
                "storage under a file", "name already recorded", "runs folder already there",
                "nothing to resume"}  # fmt: skip


@pytest.mark.parametrize("case", [c for c in BAD if c not in CLUSTER_SIDE])
def test_submit_refuses_what_search_refuses_with_the_same_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup, extra, needle = BAD[case]
    config = tiny_config_file(tmp_path, **setup(tmp_path))
    extra = [arg.format(tmp=tmp_path) for arg in extra]
    before = sorted(p.name for p in tmp_path.iterdir())
    searched = _error(["search", str(config), *extra], capsys)
    submitted = _error(["submit", str(config), "--address", NOBODY, *extra], capsys)
    assert submitted == searched and needle in submitted, (searched, submitted)
    assert "s3cret" not in submitted
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


@pytest.mark.parametrize("case", sorted(CLUSTER_SIDE))
def test_submit_leaves_the_clusters_resources_to_the_job(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import ray.job_submission

    setup, extra, needle = BAD[case]
    config = tiny_config_file(tmp_path, **setup(tmp_path))
    extra = [arg.format(tmp=tmp_path) for arg in extra]
    assert needle in _error(["search", str(config), *extra], capsys)  # refused here
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", _Client)
    assert main(["submit", str(config), "--address", "http://head:8265", *extra]) == 0
    assert capsys.readouterr().out.strip() == "raysubmit_1"
    assert "search tiny.yaml" in _Client.seen["entrypoint"]  # the job runs the checks


class _Client:
    """A Jobs API client that records what it was given; the job's files included."""

    seen: dict[str, Any] = {}

    def __init__(self, address: str) -> None:
        _Client.seen = {"address": address}

    def submit_job(self, **job: Any) -> str:
        folder = Path(job["runtime_env"]["working_dir"])
        _Client.seen["files"] = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.*"))
        _Client.seen["entrypoint"] = job["entrypoint"]
        return "raysubmit_1"


def test_a_good_config_is_staged_and_submitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray.job_submission

    from morphsearch import builders

    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", _Client)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "graphs").mkdir()
    digits_mlp = builders.mlp([64, 8, 10], input_shape=(1, 8, 8))
    (tmp_path / "graphs" / "seed.json").write_text(json.dumps(digits_mlp.to_json()))
    config = tiny_config_file(tmp_path, seed_graph={"path": "graphs/seed.json"})
    argv = ["submit", str(config), "--address", "http://head:8265", "--name", "n2", "--seed", "3"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == "raysubmit_1"
    assert _Client.seen == {
        "address": "http://head:8265",
        "files": ["graphs/seed.json", "tiny.yaml"],
        "entrypoint": "python -m morphsearch search tiny.yaml --name n2 --seed 3 --address auto",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graphs", "tiny.yaml"]  # no db, runs


def test_a_relative_npz_travels_with_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np
    import ray.job_submission

    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", _Client)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data" / "mine.npz", x_train=rng.normal(size=(60, 3)),
             y_train=np.arange(60) % 3, x_test=rng.normal(size=(9, 3)), y_test=np.arange(9) % 3)
    config = tiny_config_file(tmp_path, dataset={"name": "npz", "path": "data/mine.npz"})
    assert main(["submit", str(config), "--address", "http://head:8265"]) == 0
    assert _Client.seen["files"] == ["data/mine.npz", "tiny.yaml"]
    assert _Client.seen["entrypoint"].endswith("search tiny.yaml --address auto")
