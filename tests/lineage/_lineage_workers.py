"""Writer processes for the concurrency tests (a module, so ``spawn`` can import it)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

from morphsearch.lineage import ArchitectureIn, open_store

SEARCH = "concurrent"
METRICS = ("val_acc", "loss")


def architecture(arch_id: str, params: int = 10) -> ArchitectureIn:
    return ArchitectureIn(arch_id, {"nodes": [arch_id]}, f"h-{arch_id}", params, 2 * params)


def write_trials(url: str, worker: int, own: int, shared: int) -> None:
    """Open a (possibly still empty) database and record ``own`` + ``shared`` trials.

    Own trials form a chain under the seed; shared trials are recorded by every
    worker with the same ids, as a resumed search would replay them.
    """
    store = open_store(url, write=True)
    store.create_search(SEARCH, {"metric": "val_acc"})
    store.record_seed(SEARCH, architecture("seed"))
    parent = "seed"
    for i in range(own):
        child = f"w{worker}-a{i}"
        store.record_trial(
            SEARCH, f"w{worker}-t{i}", parent, architecture(child, 10 + i), [{"name": "widen"}]
        )
        store.record_metrics(f"w{worker}-t{i}", 1, {name: float(i) for name in METRICS})
        parent = child
    for i in range(shared):
        store.record_trial(
            SEARCH, f"shared-t{i}", "seed", architecture(f"shared-a{i}"), [{"name": "deepen"}]
        )
        store.record_metrics(f"shared-t{i}", 1, {name: float(worker) for name in METRICS})
    store.close()


def hang_inside_trial_write(url: str, marker: str) -> None:
    """Record a trial but stop for good right after its edge INSERT, before COMMIT."""
    store = open_store(url, write=True)
    store.create_search("killed", {})
    store.record_seed("killed", architecture("seed"))

    @event.listens_for(Engine, "after_cursor_execute")
    def _hang(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO EDGES"):
            Path(marker).write_text("architecture, trial and edge inserted, not committed")
            time.sleep(600)

    store.record_trial("killed", "doomed", "seed", architecture("doomed"), [{"name": "widen"}])
