"""Growth events inside a trial (each one is an edge pre-growth -> post-growth).

Revision ID: 0002_growth_events
Revises: 0001_initial
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_growth_events"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "growth_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("edge_id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(64), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("loss_before", sa.Double(), nullable=True),
        sa.Column("loss_after", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(["edge_id"], ["edges.id"], name="fk_growth_events_edge_id_edges"),
        sa.ForeignKeyConstraint(["trial_id"], ["trials.id"], name="fk_growth_events_trial_id_trials"),
        sa.PrimaryKeyConstraint("id", name="pk_growth_events"),
        sa.UniqueConstraint("edge_id", name="uq_growth_events_edge_id"),
    )
    op.create_index("ix_growth_events_trial_id", "growth_events", ["trial_id"])


def downgrade() -> None:
    op.drop_table("growth_events")
