"""Exploration with logged propensities: every decision keeps the candidates each channel could
have shown and its exploration share (``kw_decisions.candidates``, JSON), so that off-policy
evaluation can weigh its outcome by the probability of what it showed. Decisions recorded before
have none (NULL): ``kundenwert evaluate-policy`` leaves them out and says how many.

Frozen: types copied here, not imported.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("kw_decisions")}
    if "candidates" not in have:
        with op.batch_alter_table("kw_decisions") as batch:
            batch.add_column(
                sa.Column(
                    "candidates", sa.Text(), nullable=True, comment="eligible candidates per channel (JSON)"
                )
            )


def downgrade() -> None:
    with op.batch_alter_table("kw_decisions") as batch:
        batch.drop_column("candidates")
