"""Campaign results: feedback may name a target list's member (list id and customer id instead
of a decision id), and a target list keeps the uplift predicted for each member when it was made
(the Qini of a list's results measures that prediction).

Frozen: types copied here, not imported.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    have = _columns("kw_feedback")
    with op.batch_alter_table("kw_feedback") as batch:
        batch.alter_column(
            "decision_id",
            existing_type=sa.String(length=32),
            nullable=True,
            comment="NULL: a list member's event",
        )
        if "list_id" not in have:
            batch.add_column(
                sa.Column(
                    "list_id", sa.String(length=32), nullable=True, comment="a target list's member event"
                )
            )
            batch.create_index("ix_kw_feedback_list_id", ["list_id"])
        if "customer_id" not in have:
            batch.add_column(
                sa.Column("customer_id", sa.String(length=200), nullable=True, comment="the list member")
            )
    if "uplift" not in _columns("kw_target_list_members"):
        with op.batch_alter_table("kw_target_list_members") as batch:
            batch.add_column(
                sa.Column(
                    "uplift", sa.Float(), nullable=True, comment="predicted uplift when the list was made"
                )
            )


def downgrade() -> None:
    with op.batch_alter_table("kw_target_list_members") as batch:
        batch.drop_column("uplift")
    op.execute("DELETE FROM kw_feedback WHERE decision_id IS NULL")
    with op.batch_alter_table("kw_feedback") as batch:
        batch.drop_index("ix_kw_feedback_list_id")
        batch.drop_column("customer_id")
        batch.drop_column("list_id")
        batch.alter_column("decision_id", existing_type=sa.String(length=32), nullable=False)
