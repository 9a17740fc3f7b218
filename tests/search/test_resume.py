"""Kill -9 the driver mid-search, resume it, and find every trial in lineage once."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from morphsearch.lineage import LineageStore
from tests.search.conftest import TINY

pytestmark = pytest.mark.slow


def _write_config(tmp_path: Path, trials: int = 4) -> Path:
    data = {
        **TINY,
        "name": "resumable",
        "database": f"sqlite:///{tmp_path}/lineage.db",
        "storage": str(tmp_path / "runs"),
        # every trial trains 2 epochs (children too), so each one's epochs can be counted
        "budget": {**TINY["budget"], "trials": trials, "epochs_per_trial": 2,
                   "child_epochs": 2},
    }
    path = tmp_path / "resumable.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _recorded(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return int(con.execute("select count(*) from trials").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _driver(config: Path, log: str, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "morphsearch", "search", str(config), *extra]
    # a file, not a pipe: nobody reads the first driver's output, and a full pipe blocks it
    with open(config.parent / log, "wb") as out:
        # own session: the local Ray it starts is ours to clean up afterwards
        return subprocess.Popen(
            cmd, cwd=config.parent, start_new_session=True, stdout=out, stderr=subprocess.STDOUT
        )


def _stop_session(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _assert_budget_spent_once(db: Path, trials: int) -> None:
    """Lineage holds exactly the budget's trials, all finished, one child each, and
    every epoch of every trial once."""
    with LineageStore(f"sqlite:///{db}") as store:
        summary = store.summary("resumable")
        assert summary.n_trials == trials
        assert summary.trials_by_status == {"TERMINATED": trials}
        nodes = store.descendants("resumable/seed")
        assert len(nodes) == trials + 1 and len({n.arch_id for n in nodes}) == trials + 1
    with sqlite3.connect(db) as con:
        per_trial = con.execute(
            "select count(*) from metrics where name = 'val_accuracy' group by trial_id"
        ).fetchall()
    assert sorted(c for (c,) in per_trial) == [2] * trials  # every epoch once, none twice


def test_kill_and_resume(tmp_path: Path) -> None:
    config = _write_config(tmp_path)
    db = tmp_path / "lineage.db"
    first = _driver(config, "first.log")
    try:
        deadline = time.monotonic() + 180
        while _recorded(db) < 1 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert first.poll() is None, "the search finished before it could be killed"
        assert _recorded(db) >= 1
        os.kill(first.pid, signal.SIGKILL)  # the driver only, as a crash would
        first.wait(10)
    finally:
        _stop_session(first)
    killed_at = _recorded(db)
    assert killed_at < 4
    time.sleep(2)  # let the orphaned local Ray notice its driver is gone

    second = _driver(config, "second.log", "--resume")
    try:
        second.wait(timeout=240)
    finally:
        _stop_session(second)
    assert second.returncode == 0, (tmp_path / "second.log").read_text()[-3000:]
    _assert_budget_spent_once(db, 4)


SNAPSHOT = ("experiment_state", "searcher-state", "search_gen_state", "callback-states")


def _snapshot(folder: Path) -> list[Path]:
    """Tune's experiment snapshot in ``folder``: all four files, or nothing yet."""
    files = [f for part in SNAPSHOT for f in folder.glob(f"{part}-*")]
    return files if len(files) == len(SNAPSHOT) else []


def test_resume_from_a_snapshot_that_missed_finished_trials(tmp_path: Path) -> None:
    """Tune snapshots its experiment from time to time, lineage is written at once: a
    driver killed between a trial's end and the next snapshot leaves that trial in
    lineage only. Made certain here: Tune's first snapshot is kept and put back after the
    kill. The resumed search keeps those trials, closes their rows, runs no replacement
    for them and spends the budget exactly."""
    config = _write_config(tmp_path, trials=6)
    db = tmp_path / "lineage.db"
    folder, kept = tmp_path / "runs" / "resumable", tmp_path / "first-snapshot"
    first = _driver(config, "first.log")
    try:
        deadline = time.monotonic() + 180
        while not (found := _snapshot(folder)) and time.monotonic() < deadline:
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
            time.sleep(0.05)
        assert found, "Tune wrote no experiment snapshot in 180 s"
        kept.mkdir()
        for f in found:
            shutil.copy2(f, kept / f.name)
        # trials recorded after this copy are missing from the kept snapshot
        after = _recorded(db) + 2
        while _recorded(db) < after and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert first.poll() is None, "the search finished before it could be killed"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        _stop_session(first)
    assert after <= _recorded(db) < 6
    for f in folder.glob("*-state*"):  # this session's snapshots: back to the first one
        f.unlink()
    for f in folder.glob("experiment_state-*"):
        f.unlink()
    for f in kept.iterdir():
        shutil.copy2(f, folder / f.name)
    time.sleep(2)

    second = _driver(config, "second.log", "--resume")
    try:
        second.wait(timeout=240)
    finally:
        _stop_session(second)
    log = (tmp_path / "second.log").read_text()
    assert second.returncode == 0, log[-3000:]
    assert "finished after Tune's last snapshot" in log
    assert "6 trials" in log  # the summary counts lineage's trials, lost ones included
    _assert_budget_spent_once(db, 6)  # no replacement for the lost trials
