"""metrics.budget renamed metrics.evaluation, with the index and unique constraint on it.

"budget" meant a spending limit in the search config and the index of an evaluation in
lineage; lineage now says "evaluation" (a trial's epoch, or its n-th block of
``budget.eval_every_steps`` optimizer steps). The values are unchanged.

Revision ID: 0003_metrics_evaluation
Revises: 0002_growth_events
Create Date: 2025-01-03
"""

from __future__ import annotations

from alembic import op

revision = "0003_metrics_evaluation"
down_revision = "0002_growth_events"
branch_labels = None
depends_on = None


def _rename(old: str, new: str) -> None:
    index_old = f"ix_metrics_search_id_name_{old}_value"
    index_new = f"ix_metrics_search_id_name_{new}_value"
    unique_old = f"uq_metrics_trial_id_{old}_name"
    unique_new = f"uq_metrics_trial_id_{new}_name"
    # both backends rename a column in place (SQLite since 3.25), indexes and constraints
    # on it included; only the names of the index and the constraint still say `old`
    op.execute(f"ALTER TABLE metrics RENAME COLUMN {old} TO {new}")
    if op.get_context().dialect.name == "postgresql":
        # catalog changes only: no table rewrite and no index rebuild
        op.execute(f"ALTER INDEX {index_old} RENAME TO {index_new}")
        op.execute(f"ALTER TABLE metrics RENAME CONSTRAINT {unique_old} TO {unique_new}")
        return
    # SQLite cannot rename an index, and keeps a constraint's name in the table's
    # definition: rebuild the index, copy the table once
    op.drop_index(index_old, table_name="metrics")
    with op.batch_alter_table("metrics", recreate="always") as batch:
        batch.drop_constraint(unique_old, type_="unique")
        batch.create_unique_constraint(unique_new, ["trial_id", new, "name"])
    op.create_index(index_new, "metrics", ["search_id", "name", new, "value"])


def upgrade() -> None:
    _rename("budget", "evaluation")


def downgrade() -> None:
    _rename("evaluation", "budget")
