"""A PostgreSQL server restarted under a writer: writes wait for it, nothing is lost or
written twice (issue 18: faults a cluster meets, on a real server)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
from _lineage_pg import PostgresServer, find_pg_bin

from morphsearch.errors import DatabaseUnreachable
from morphsearch.lineage import ArchitectureIn, LineageStore

pytestmark = pytest.mark.postgres


@pytest.fixture()
def server() -> Iterator[PostgresServer]:
    """A server of this test's own: the test stops and starts it."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests: apt-get install -y postgresql")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    with PostgresServer(bin_dir) as running:
        yield running


def _child(arch_id: str) -> ArchitectureIn:
    return ArchitectureIn(arch_id, {"nodes": []}, f"h-{arch_id}", params=10, flops=20)


def _metrics(store: LineageStore, trial: str) -> list[tuple[int, str, float]]:
    return sorted((m.evaluation, m.name, m.value) for m in store.metrics(trial))


def test_writes_wait_for_a_restarted_server_and_land_once(server: PostgresServer) -> None:
    url = server.url("postgres")
    store = LineageStore(url, write=True, retry_s=60)
    store.create_search("s")
    store.record_trial("s", "t1", None, _child("s/t1"), status="running")
    store.record_metrics_many("t1", [(1, {"val_accuracy": 0.5})])
    server.stop("fast")  # a restart: the pooled connections now point at nothing
    restart = threading.Timer(1.5, server.start)
    restart.start()
    started = time.monotonic()
    store.record_metrics_many("t1", [(2, {"val_accuracy": 0.6}), (1, {"val_accuracy": 0.5})])
    store.update_trial("t1", "finished")
    waited = time.monotonic() - started
    restart.join()
    assert waited >= 1.0  # it did wait for the server
    with LineageStore(url) as reader:
        assert _metrics(reader, "t1") == [(1, "val_accuracy", 0.5), (2, "val_accuracy", 0.6)]
        assert reader.trial("t1").status == "finished"
    store.close()


def test_without_retry_an_absent_server_is_one_line_at_once(server: PostgresServer) -> None:
    url = server.url("postgres")
    store = LineageStore(url, write=True)
    store.create_search("s")
    server.stop("fast")
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnreachable, match="cannot reach the lineage database") as err:
            store.create_search("t")
        assert time.monotonic() - started < 10 and "\n" not in str(err.value)
    finally:
        server.start()
        store.close()
