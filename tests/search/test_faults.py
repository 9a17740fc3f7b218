"""Faults a cluster meets, on real components (issue 18): a Ray worker process killed
in the middle of a trial is retried (``retries``), the failure is recorded, and the
search completes with every trial in lineage once."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from morphsearch.lineage import LineageStore
from morphsearch.search.space import seed_arch_id
from tests.search.conftest import tiny_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _descendants(root: int) -> list[int]:
    """Every process below ``root`` (the test's own Ray: raylet, workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class WorkerKiller(threading.Thread):
    """Kills the first worker of this process's Ray seen running a trial, once."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.killed: int | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set() and self.killed is None:
            for pid in _descendants(os.getpid()):
                if "ImplicitFunc.train" in _title(pid):  # Ray's title while it runs a trial
                    time.sleep(0.3)  # inside the trial, past its start
                    if "ImplicitFunc.train" not in _title(pid):
                        continue  # that trial ended meanwhile: wait for a running one
                    os.kill(pid, signal.SIGKILL)
                    self.killed = pid
                    return
            time.sleep(0.05)


def test_a_worker_killed_mid_trial_is_retried_and_the_search_completes(tmp_path: Path) -> None:
    import ray

    from morphsearch.search.runner import run_search

    if ray.is_initialized():
        ray.shutdown()
    config = tiny_config(tmp_path, trials=3, epochs_per_trial=120, max_concurrent=1)
    config = config.model_copy(update={"retries": 1})
    killer = WorkerKiller()
    killer.start()
    try:
        result = run_search(config)
    finally:
        killer.done.set()
        ray.shutdown()
    assert killer.killed is not None, "no trial worker was seen running"
    assert result.trials == 3
    with LineageStore(config.database) as store:
        assert store.summary("tiny").n_trials == 3
        ids = [n.trial_id for n in store.descendants(seed_arch_id("tiny")) if n.trial_id]
        records = [store.trial(t) for t in ids]
    assert len(records) == 3 and {r.status for r in records} == {"TERMINATED"}
    retried = [r for r in records if r.error]
    assert len(retried) == 1, [r.error for r in records]
    assert "retried after a failed attempt" in (retried[0].error or "")
