"""A real two-node Ray cluster on loopback: trials run on both nodes; submit works.

Each node is a ``ray start`` process with one CPU and its own temp dir; token
authentication is disabled for the test cluster and its clients (RAY_AUTH_MODE).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from morphsearch.cli import main
from tests.search.conftest import TINY

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # the job's `python` is ours
    return env


def _ray(*args: str) -> None:
    subprocess.run(
        [str(BIN / "ray"), *args], env=_env(), check=True, capture_output=True, timeout=120
    )


@pytest.fixture(scope="module")
def cluster(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    port, dashboard = _free_port(), _free_port()
    head_tmp = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    worker_tmp = tempfile.mkdtemp(prefix="rw", dir="/tmp")
    for key, value in _env().items():
        monkeypatch_module.setenv(key, value)
    try:
        _ray(
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            f"--temp-dir={head_tmp}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--disable-usage-stats",
        )
        _ray(
            "start",
            f"--address=127.0.0.1:{port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            f"--temp-dir={worker_tmp}",
            "--disable-usage-stats",
        )
        yield {"address": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dashboard}"}
    finally:
        subprocess.run(
            [str(BIN / "ray"), "stop", "--force"], env=_env(), capture_output=True, timeout=120
        )


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _config(tmp_path: Path, name: str, trials: int) -> Path:
    data = {
        **TINY,
        "name": name,
        "database": f"sqlite:///{tmp_path}/lineage.db",
        "storage": str(tmp_path / "runs"),
        "budget": {**TINY["budget"], "trials": trials, "epochs_per_trial": 2},
        # two trials from the start (the seed and a child of its initial weights), so that
        # both one-CPU nodes are busy at once
        "selection": {**TINY["selection"], "seed_first": False},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _nodes(db: Path, search: str) -> list[str]:
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "select t.node from trials t join searches s on s.id = t.search_id "
            "where s.name = ? and t.status = 'TERMINATED'",
            (search,),
        ).fetchall()
    return [r[0] for r in rows]


def test_trials_run_on_both_nodes(tmp_path: Path, cluster: dict[str, str]) -> None:
    config = _config(tmp_path, "twonodes", trials=3)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "morphsearch",
            "search",
            str(config),
            "--address",
            cluster["address"],
        ],
        env=_env(),
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    nodes = _nodes(tmp_path / "lineage.db", "twonodes")
    assert len(nodes) == 3
    assert len(set(nodes)) == 2  # one CPU per node, two concurrent trials: both nodes work


def test_submit_through_jobs_api(
    tmp_path: Path, cluster: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, "submitted", trials=2)
    code = main(
        [
            "submit",
            str(config),
            "--address",
            cluster["dashboard"],
            "--follow",
            "--db",
            f"sqlite:///{tmp_path}/lineage.db",
            "--storage",
            str(tmp_path / "runs"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out[-2000:]
    assert out.splitlines()[0].startswith("raysubmit_")
    assert "SUCCEEDED" in out
    assert len(_nodes(tmp_path / "lineage.db", "submitted")) == 2
