"""Data protection: the register of erased customers (keyed hashes only), the audit log, expiry
and revocation time of API keys; customer ids in decisions and target-list members as long as
the contract allows (200, was 64: PostgreSQL refused a longer id there).

Frozen: types copied here, not imported.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _has(table: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(table)


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    if not _has("kw_erased"):
        op.create_table(
            "kw_erased",
            sa.Column("id_hash", sa.String(length=64), nullable=False),
            sa.Column("key_id", sa.String(length=16), nullable=False),
            sa.Column("erased_at", sa.String(length=32), nullable=False),
            sa.PrimaryKeyConstraint("id_hash"),
        )
    if not _has("kw_audit"):
        op.create_table(
            "kw_audit",
            sa.Column("audit_id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("at", sa.String(length=32), nullable=False, comment="ISO instant, UTC"),
            sa.Column(
                "key_id", sa.String(length=16), nullable=True, comment="the API key; NULL: the command line"
            ),
            sa.Column("role", sa.String(length=32), nullable=False, comment="the key's role, or cli"),
            sa.Column(
                "actor", sa.String(length=200), nullable=False, comment="key id and role, or cli and OS user"
            ),
            sa.Column("action", sa.String(length=40), nullable=False),
            sa.Column("object_type", sa.String(length=40), nullable=False),
            sa.Column("object_id", sa.String(length=200), nullable=True),
            sa.Column("rows", sa.Integer(), nullable=True),
            sa.Column("detail", sa.Text(), nullable=True, comment="JSON"),
            sa.PrimaryKeyConstraint("audit_id"),
        )
    have = _columns("kw_api_keys")
    with op.batch_alter_table("kw_api_keys") as batch:
        if "expires_at" not in have:
            batch.add_column(
                sa.Column(
                    "expires_at", sa.String(length=32), nullable=True, comment="ISO instant; NULL: never"
                )
            )
        if "revoked_at" not in have:
            batch.add_column(sa.Column("revoked_at", sa.String(length=32), nullable=True))
    for table in ("kw_decisions", "kw_target_list_members"):
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                "customer_id",
                existing_type=sa.String(length=64),
                type_=sa.String(length=200),
                existing_nullable=False,
            )


def downgrade() -> None:
    for table in ("kw_decisions", "kw_target_list_members"):
        with op.batch_alter_table(table) as batch:
            batch.alter_column("customer_id", existing_type=sa.String(length=200), type_=sa.String(length=64))
    with op.batch_alter_table("kw_api_keys") as batch:
        batch.drop_column("revoked_at")
        batch.drop_column("expires_at")
    op.drop_table("kw_audit")
    op.drop_table("kw_erased")
