"""Migration 0003: a database written by schema 0002 (metrics.budget) is upgraded by
``morphsearch db upgrade``, its rows read back as ``evaluation``; the downgrade works."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from _lineage_data import migrate_to
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect, text

from morphsearch.cli import main
from morphsearch.errors import SchemaOutdated
from morphsearch.lineage import HEAD_REVISION, open_store
from morphsearch.lineage.models import Base
from morphsearch.lineage.schema import alembic_config

OLD = "0002_growth_events"
NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)
VALUES = {(1, "val_acc"): 0.5, (2, "val_acc"): 0.75, (2, "loss"): 0.25}  # (budget, name)


def _write_old_rows(url: str) -> None:
    """A search with a seed, one trial, its child and three metrics, as 0002 stored them."""
    engine = create_engine(url)
    with engine.begin() as connection:
        tables = MetaData()
        tables.reflect(connection)
        connection.execute(
            tables.tables["searches"].insert(),
            [{"id": 1, "name": "old", "config": {}, "status": "finished", "created": NOW}],
        )
        connection.execute(
            tables.tables["architectures"].insert(),
            [
                {"id": pk, "arch_id": arch, "search_id": 1, "graph": {}, "structure_hash": arch,
                 "params": params, "flops": params, "depth": depth, "created": NOW}
                for pk, arch, params, depth in ((1, "S", 10, 0), (2, "A", 20, 1))
            ],
        )
        connection.execute(
            tables.tables["trials"].insert(),
            [{"id": 1, "trial_id": "t1", "search_id": 1, "parent_id": 1, "child_id": 2,
              "status": "TERMINATED", "config": {}}],
        )
        connection.execute(
            tables.tables["edges"].insert(),
            [{"id": 1, "parent_id": 1, "child_id": 2, "kind": "trial", "morphisms": [],
              "trial_id": 1}],
        )
        connection.execute(
            tables.tables["metrics"].insert(),
            [
                {"trial_id": 1, "arch_id": 2, "search_id": 1, "budget": budget, "name": name,
                 "value": value}
                for (budget, name), value in VALUES.items()
            ],
        )
    engine.dispose()


def _columns_and_indexes(url: str) -> tuple[set[str], set[str], set[str]]:
    engine = create_engine(url)
    with engine.connect() as connection:
        found = inspect(connection)
        columns = {c["name"] for c in found.get_columns("metrics")}
        indexes = {str(i["name"]) for i in found.get_indexes("metrics")}
        uniques = {str(u["name"]) for u in found.get_unique_constraints("metrics")}
    engine.dispose()
    return columns, indexes, uniques


def test_an_old_database_is_upgraded_and_read_with_the_new_name(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate_to(db_url, OLD)
    _write_old_rows(db_url)
    with pytest.raises(SchemaOutdated, match="morphsearch db upgrade"):
        open_store(db_url)

    assert main(["db", "upgrade", "--db", db_url]) == 0
    assert capsys.readouterr().out.strip().endswith(f"is at schema {HEAD_REVISION}")
    columns, indexes, uniques = _columns_and_indexes(db_url)
    assert "evaluation" in columns and "budget" not in columns
    assert "ix_metrics_search_id_name_evaluation_value" in indexes
    assert "uq_metrics_trial_id_evaluation_name" in uniques
    engine = create_engine(db_url)
    with engine.connect() as connection:  # exactly the schema of the models
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()

    with open_store(db_url) as store:
        read = {(m.evaluation, m.name): m.value for m in store.metrics("t1")}
        assert read == VALUES
        best = store.best("old", "val_acc", "max", evaluation=1)
        assert [(b.arch_id, b.evaluation, b.value) for b in best] == [("A", 1, 0.5)]
    with open_store(db_url, write=True) as store:  # the unique key still upserts
        store.record_metrics("t1", 2, {"val_acc": 0.8})
        assert len(store.metrics("t1")) == 3
        assert store.best("old", "val_acc")[0].value == 0.8


def test_downgrade_restores_the_old_column(db_url: str) -> None:
    migrate_to(db_url, OLD)
    _write_old_rows(db_url)
    migrate_to(db_url, HEAD_REVISION)
    engine = create_engine(db_url)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), OLD)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT budget, name, value FROM metrics")).all()
    engine.dispose()
    assert {(b, n): v for b, n, v in rows} == VALUES
    columns, indexes, uniques = _columns_and_indexes(db_url)
    assert "budget" in columns and "evaluation" not in columns
    assert "ix_metrics_search_id_name_budget_value" in indexes
    assert "uq_metrics_trial_id_budget_name" in uniques
