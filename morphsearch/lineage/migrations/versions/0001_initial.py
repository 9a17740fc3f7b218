"""Searches, architectures, trials, morphism edges and metrics.

Revision ID: 0001_initial
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "searches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_searches"),
        sa.UniqueConstraint("name", name="uq_searches_name"),
    )
    op.create_table(
        "architectures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("arch_id", sa.String(200), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("graph", sa.JSON(), nullable=False),
        sa.Column("structure_hash", sa.String(128), nullable=False),
        sa.Column("weights_hash", sa.String(128), nullable=True),
        sa.Column("params", sa.BigInteger(), nullable=False),
        sa.Column("flops", sa.BigInteger(), nullable=False),
        sa.Column("weights_uri", sa.Text(), nullable=True),
        sa.Column("weights_sha256", sa.String(64), nullable=True),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("created", TZ, nullable=False),
        sa.ForeignKeyConstraint(["search_id"], ["searches.id"], name="fk_architectures_search_id_searches"),
        sa.PrimaryKeyConstraint("id", name="pk_architectures"),
        sa.UniqueConstraint("arch_id", name="uq_architectures_arch_id"),
    )
    op.create_index("ix_architectures_search_id", "architectures", ["search_id"])
    op.create_index("ix_architectures_structure_hash", "architectures", ["structure_hash"])
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.String(200), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("child_id", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(200), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started", TZ, nullable=True),
        sa.Column("ended", TZ, nullable=True),
        sa.ForeignKeyConstraint(["child_id"], ["architectures.id"], name="fk_trials_child_id_architectures"),
        sa.ForeignKeyConstraint(["parent_id"], ["architectures.id"], name="fk_trials_parent_id_architectures"),
        sa.ForeignKeyConstraint(["search_id"], ["searches.id"], name="fk_trials_search_id_searches"),
        sa.PrimaryKeyConstraint("id", name="pk_trials"),
        sa.UniqueConstraint("trial_id", name="uq_trials_trial_id"),
    )
    op.create_index("ix_trials_child_id", "trials", ["child_id"])
    op.create_index("ix_trials_search_id_status", "trials", ["search_id", "status"])
    op.create_table(
        "edges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=False),
        sa.Column("child_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("morphisms", sa.JSON(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["child_id"], ["architectures.id"], name="fk_edges_child_id_architectures"),
        sa.ForeignKeyConstraint(["parent_id"], ["architectures.id"], name="fk_edges_parent_id_architectures"),
        sa.ForeignKeyConstraint(["trial_id"], ["trials.id"], name="fk_edges_trial_id_trials"),
        sa.PrimaryKeyConstraint("id", name="pk_edges"),
        sa.UniqueConstraint("child_id", name="uq_edges_child_id"),
    )
    op.create_index("ix_edges_parent_id", "edges", ["parent_id"])
    op.create_index("ix_edges_trial_id", "edges", ["trial_id"])
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("arch_id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("budget", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["arch_id"], ["architectures.id"], name="fk_metrics_arch_id_architectures"),
        sa.ForeignKeyConstraint(["search_id"], ["searches.id"], name="fk_metrics_search_id_searches"),
        sa.ForeignKeyConstraint(["trial_id"], ["trials.id"], name="fk_metrics_trial_id_trials"),
        sa.PrimaryKeyConstraint("id", name="pk_metrics"),
        sa.UniqueConstraint("trial_id", "budget", "name", name="uq_metrics_trial_id_budget_name"),
    )
    op.create_index("ix_metrics_search_id_name_value", "metrics", ["search_id", "name", "value"])
    op.create_index(
        "ix_metrics_search_id_name_budget_value", "metrics", ["search_id", "name", "budget", "value"]
    )
    op.create_index(
        "ix_metrics_search_id_name_arch_id_value", "metrics", ["search_id", "name", "arch_id", "value"]
    )


def downgrade() -> None:
    for table in ("metrics", "edges", "trials", "architectures", "searches"):
        op.drop_table(table)
