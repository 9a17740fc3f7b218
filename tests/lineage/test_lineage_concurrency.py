"""Concurrent writer processes and a writer killed mid-transaction, on both backends."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
from _lineage_workers import METRICS, SEARCH, architecture, hang_inside_trial_write, write_trials
from sqlalchemy import create_engine, text

from morphsearch.errors import NotFound
from morphsearch.lineage import open_store

WORKERS, OWN, SHARED = 8, 6, 3


def count(url: str, table: str) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        value = connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
    engine.dispose()
    return int(value)


@pytest.mark.timeout(120)
def test_eight_writer_processes_lose_and_duplicate_nothing(db_url: str) -> None:
    # The database starts empty: the workers also race to create the schema.
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(target=write_trials, args=(db_url, w, OWN, SHARED)) for w in range(WORKERS)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=100)
    assert [p.exitcode for p in workers] == [0] * WORKERS

    trials = WORKERS * OWN + SHARED
    assert count(db_url, "searches") == 1
    assert count(db_url, "trials") == trials
    assert count(db_url, "architectures") == trials + 1  # + the seed
    assert count(db_url, "edges") == trials
    assert count(db_url, "metrics") == trials * len(METRICS)
    with open_store(db_url) as store:
        summary = store.summary(SEARCH)
        assert summary.n_trials == trials and summary.trials_by_status == {"RUNNING": trials}
        for worker in range(WORKERS):  # every chain intact, in order, down from the seed
            chain = store.ancestors(f"w{worker}-a{OWN - 1}")
            expected = [f"w{worker}-a{i}" for i in reversed(range(OWN))] + ["seed"]
            assert [node.arch_id for node in chain] == expected


@pytest.mark.timeout(120)
def test_writer_killed_mid_transaction_leaves_no_partial_rows(db_url: str, tmp_path: Path) -> None:
    marker = tmp_path / "inside-transaction"
    process = multiprocessing.get_context("spawn").Process(
        target=hang_inside_trial_write, args=(db_url, str(marker))
    )
    process.start()
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.is_alive() and time.monotonic() < deadline, "writer never reached its INSERT"
        time.sleep(0.05)
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=30)
    assert process.exitcode == -signal.SIGKILL

    assert (count(db_url, "trials"), count(db_url, "edges"), count(db_url, "architectures")) == (
        0,
        0,
        1,
    )
    with open_store(db_url, write=True) as store:
        with pytest.raises(NotFound):
            store.ancestors("doomed")
        # the dead writer's locks are gone: the same trial can be recorded (a resume)
        trial = store.record_trial(
            "killed", "doomed", "seed", architecture("doomed"), [{"name": "widen"}]
        )
        assert trial.child_id == "doomed" and count(db_url, "edges") == 1
