"""A hand-built lineage with known answers, shared by the store and CLI tests.

Search ``alpha`` (metric ``val_acc``, max)::

    S  seed                 params 100
    ├── A   t1 widen        params 150   val_acc 0.50 @1, 0.60 @2
    │   ├── C   t3 deepen   params 300   val_acc 0.80 @1, 0.85 @2
    │   │   └── E   t5      params 400   val_acc 0.70 @1, 0.75 @2
    │   │       └── E2 growth in t5 at step 10, params 450, val_acc 0.90 @3
    │   └── D   t4 chain    params 200   val_acc 0.65 @1, 0.70 @2
    └── B   t2 widen        params 120   val_acc 0.55 @1, 0.40 @2   (ERROR)

Search ``beta``: seed T, child F (t6, params 90, val_acc 0.3 @1).
"""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import create_engine, inspect

from morphsearch.lineage import ArchitectureIn, LineageStore
from morphsearch.lineage.schema import alembic_config

PARAMS = {"S": 100, "A": 150, "B": 120, "C": 300, "D": 200, "E": 400, "E2": 450, "T": 50, "F": 90}
TRIALS = {  # trial -> (parent, child, status, {evaluation: val_acc})
    "t1": ("S", "A", "TERMINATED", {1: 0.50, 2: 0.60}),
    "t2": ("S", "B", "ERROR", {1: 0.55, 2: 0.40}),
    "t3": ("A", "C", "TERMINATED", {1: 0.80, 2: 0.85}),
    "t4": ("A", "D", "TERMINATED", {1: 0.65, 2: 0.70}),
    "t5": ("C", "E", "TERMINATED", {1: 0.70, 2: 0.75}),
}


def morphism(name: str, site: str, **params: Any) -> dict[str, Any]:
    return {"name": name, "site": site, "params": params, "seed": 0, "preservation_error": 1e-12}


MORPHISMS = {
    "A": [morphism("widen.gradmax", "fc1", k=2)],
    "B": [morphism("widen.random", "fc1", k=1)],
    "C": [morphism("deepen.identity", "fc1")],
    "D": [morphism("widen.split", "fc1", k=2), morphism("widen.split", "fc2", k=1)],
    "E": [morphism("widen.gradmax", "fc2", k=4)],
    "E2": [morphism("widen.gradmax", "fc2", k=2)],
    "F": [morphism("widen.random", "fc1", k=3)],
}


def arch(arch_id: str) -> ArchitectureIn:
    params = PARAMS[arch_id]
    graph = {
        "nodes": [{"id": "in", "op": "input"}, {"id": "fc1", "op": "linear", "features": params}]
    }
    return ArchitectureIn(
        arch_id=arch_id,
        graph=graph,
        structure_hash=f"h-{arch_id}",
        params=params,
        flops=2 * params + (7 if arch_id == "C" else 0),
        weights_hash=f"w-{arch_id}",
        weights_uri=f"/runs/{arch_id}.safetensors",
        weights_sha256="0" * 64,
    )


def build(store: LineageStore) -> None:
    """Write the lineage above (every write is idempotent, so building twice is safe)."""
    store.create_search("alpha", {"metric": "val_acc", "mode": "max", "lr": 0.1})
    store.record_seed("alpha", arch("S"))
    for trial_id, (parent, child, status, metrics) in TRIALS.items():
        store.record_trial(
            "alpha", trial_id, parent, arch(child), MORPHISMS[child],
            node="node-1", status=status, config={"lr": 0.1, "trial": trial_id},
            error="CUDA OOM" if status == "ERROR" else None,
        )  # fmt: skip
        for evaluation, value in metrics.items():
            store.record_metrics(trial_id, evaluation, {"val_acc": value, "loss": 1 - value})
    store.record_growth(
        "t5", "E", arch("E2"), MORPHISMS["E2"], step=10, trigger="plateau",
        scores={"fc2": 3.5}, loss_before=0.31, loss_after=0.31,
    )  # fmt: skip
    store.record_metrics("t5", 3, {"val_acc": 0.90}, arch_id="E2")
    store.create_search("beta", {"metric": "val_acc"})
    store.record_seed("beta", arch("T"))
    store.record_trial("beta", "t6", "T", arch("F"), MORPHISMS["F"], status="TERMINATED")
    store.record_metrics("t6", 1, {"val_acc": 0.3})


def tables(url: str) -> set[str]:
    """The table names in the database at ``url``."""
    engine = create_engine(url)
    with engine.connect() as connection:
        names = set(inspect(connection).get_table_names())
    engine.dispose()
    return names


def migrate_to(url: str, revision: str) -> None:
    """Bring the database at ``url`` to ``revision`` (e.g. an old one, to test refusal)."""
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)
    engine.dispose()
