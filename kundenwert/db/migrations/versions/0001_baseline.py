"""Baseline: the schema of the store as kundenwert wrote it before migrations (``create_all`` of the
six MetaData objects of that time, plus the live change log"s triggers).

A store written before migrations has no ``alembic_version``; this revision adopts it: it creates
only the tables and indexes that are missing (the service"s ``kw_*`` tables were made on first use,
so an older store may lack some), installs the triggers where missing and drops the index on
``kw_decisions.customer_id`` of earlier versions. On an empty database it creates everything.

Frozen: the types and trigger texts are copied here, not imported, so later changes of the
code cannot change what this revision does.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# A UTC instant: integer microseconds on SQLite, timestamptz elsewhere (kundenwert.db.schema.UtcTimestamp).
INSTANT = sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")

LIVE_TABLES = ("consents", "contacts")
_PG_LOCK = 0x6B77_6C69

_SQLITE_LOG = "INSERT INTO kw_live_changes(customer_id) VALUES"


def _sqlite_triggers(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER IF NOT EXISTS kw_live_{table}_insert AFTER INSERT ON {table} "
        f"BEGIN {_SQLITE_LOG} (NEW.customer_id); END",
        f"CREATE TRIGGER IF NOT EXISTS kw_live_{table}_update AFTER UPDATE ON {table} "
        f"BEGIN {_SQLITE_LOG} (NEW.customer_id); INSERT INTO kw_live_changes(customer_id) "
        "SELECT OLD.customer_id WHERE OLD.customer_id IS NOT NEW.customer_id; END",
        f"CREATE TRIGGER IF NOT EXISTS kw_live_{table}_delete AFTER DELETE ON {table} "
        f"BEGIN {_SQLITE_LOG} (OLD.customer_id); END",
    ]


_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION kw_live_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('kundenwert.bulk_write', true) = 'on' THEN
        RETURN NULL;  -- Store.write logs once for the whole transaction
    END IF;
    PERFORM pg_advisory_xact_lock({_PG_LOCK});  -- sequence order = commit order
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO kw_live_changes(customer_id) VALUES (OLD.customer_id);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.customer_id IS DISTINCT FROM OLD.customer_id) THEN
        INSERT INTO kw_live_changes(customer_id) VALUES (NEW.customer_id);
    END IF;
    RETURN NULL;
END $$"""


def _inspector() -> sa.Inspector:
    return sa.inspect(op.get_bind())


def _create_table(name: str, *columns, **kw) -> None:
    if not _inspector().has_table(name):
        op.create_table(name, *columns, **kw)


def _create_index(name: str, table: str, columns: list[str]) -> None:
    if name not in {i["name"] for i in _inspector().get_indexes(table)}:
        op.create_index(name, table, columns, unique=False)


def _install_triggers() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for table in LIVE_TABLES:
            for ddl in _sqlite_triggers(table):
                op.execute(ddl)
    elif bind.dialect.name == "postgresql":
        present = set(bind.execute(sa.text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")).scalars())
        missing = [t for t in LIVE_TABLES if f"kw_live_{t}" not in present]
        if missing:
            op.execute(_PG_FUNCTION)
            for t in missing:
                op.execute(
                    f"CREATE TRIGGER kw_live_{t} AFTER INSERT OR UPDATE OR DELETE ON {t} "
                    "FOR EACH ROW EXECUTE FUNCTION kw_live_change()"
                )


def upgrade() -> None:
    _create_table(
        "attribute_definitions",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    _create_table(
        "customers",
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("customer_type", sa.Text(), nullable=False),
        sa.Column("birth_year", sa.Integer(), nullable=True),
        sa.Column("gender", sa.Text(), nullable=True),
        sa.Column("postal_code", sa.Text(), nullable=True),
        sa.Column("region", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("customer_id"),
    )
    _create_table(
        "imports",
        sa.Column("import_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("imported_at", INSTANT, nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("rows", sa.Text(), nullable=False, comment="rows written per table, JSON"),
        sa.PrimaryKeyConstraint("import_id"),
    )
    _create_table(
        "kw_api_keys",
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    _create_table(
        "kw_decisions",
        sa.Column("decision_id", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("score_run", sa.String(length=32), nullable=False),
        sa.Column("suggestions", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("decision_id"),
    )
    _create_table(
        "kw_feedback",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("payload_sha256", sa.String(length=64), nullable=False),
        sa.Column("decision_id", sa.String(length=32), nullable=False),
        sa.Column("action_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("occurred_at", sa.String(length=40), nullable=False),
        sa.Column("received_at", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    _create_index("ix_kw_feedback_decision_id", "kw_feedback", ["decision_id"])

    _create_table(
        "kw_live_changes",
        sa.Column(
            "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("customer_id", sa.String(length=200), nullable=True, comment="NULL: any customer"),
        sa.PrimaryKeyConstraint("seq"),
        sqlite_autoincrement=True,
    )
    _create_table(
        "kw_score_runs",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("scored_at", sa.String(length=32), nullable=False),
        sa.Column("cutoff", sa.String(length=32), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("models", sa.Text(), nullable=False),
        sa.Column("table_name", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("run_id"),
    )
    _create_table(
        "kw_target_list_members",
        sa.Column("list_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("group", sa.String(length=8), nullable=False),
        sa.Column("action_id", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("propensity", sa.Float(), nullable=False),
        sa.Column("expected_value", sa.Float(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
    )
    _create_index("ix_kw_target_list_members_list_id", "kw_target_list_members", ["list_id"])

    _create_table(
        "kw_target_lists",
        sa.Column("list_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("list_id"),
    )
    _create_table(
        "products",
        sa.Column("product_id", sa.String(length=200), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("price", sa.Float(), nullable=True),
        sa.Column("extra", sa.Text(), nullable=True, comment="unknown columns of the input, as JSON"),
        sa.PrimaryKeyConstraint("product_id"),
    )
    _create_table(
        "complaints",
        sa.Column("complaint_id", sa.String(length=200), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("opened_at", INSTANT, nullable=False),
        sa.Column("closed_at", INSTANT, nullable=True),
        sa.Column("category", sa.Text(), nullable=True),
        sa.Column("severity", sa.Integer(), nullable=True),
        sa.Column("extra", sa.Text(), nullable=True, comment="unknown columns of the input, as JSON"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
        ),
        sa.PrimaryKeyConstraint("complaint_id"),
    )
    _create_index("ix_complaints_customer", "complaints", ["customer_id"])

    _create_table(
        "consents",
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("recorded_at", INSTANT, nullable=False),
        sa.Column("double_opt_in", sa.Boolean(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("extra", sa.Text(), nullable=True, comment="unknown columns of the input, as JSON"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
        ),
        sa.PrimaryKeyConstraint("customer_id", "channel", "recorded_at"),
    )
    _create_table(
        "contacts",
        sa.Column("contact_id", sa.String(length=200), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("contacted_at", INSTANT, nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("campaign_id", sa.String(length=200), nullable=True),
        sa.Column("action_id", sa.String(length=200), nullable=True),
        sa.Column("is_control", sa.Boolean(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("topic", sa.Text(), nullable=True),
        sa.Column("extra", sa.Text(), nullable=True, comment="unknown columns of the input, as JSON"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
        ),
        sa.PrimaryKeyConstraint("contact_id"),
    )
    _create_index("ix_contacts_customer_time", "contacts", ["customer_id", "contacted_at"])

    _create_table(
        "customer_attributes",
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("number", sa.Float(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
        ),
        sa.ForeignKeyConstraint(
            ["name"],
            ["attribute_definitions.name"],
        ),
        sa.PrimaryKeyConstraint("customer_id", "name"),
    )
    _create_table(
        "offers",
        sa.Column("offer_id", sa.String(length=200), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("created_at", INSTANT, nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("closed_at", INSTANT, nullable=True),
        sa.Column("lost_reason", sa.Text(), nullable=True),
        sa.Column("extra", sa.Text(), nullable=True, comment="unknown columns of the input, as JSON"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
        ),
        sa.PrimaryKeyConstraint("offer_id"),
    )
    _create_index("ix_offers_customer", "offers", ["customer_id"])

    _create_table(
        "purchases",
        sa.Column("purchase_id", sa.String(length=200), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("purchased_at", INSTANT, nullable=False),
        sa.Column("product_id", sa.String(length=200), nullable=True),
        sa.Column("category", sa.Text(), nullable=True),
        sa.Column("quantity", sa.Float(), nullable=True),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("margin", sa.Float(), nullable=True),
        sa.Column("discount", sa.Float(), nullable=True),
        sa.Column("sales_channel", sa.Text(), nullable=True),
        sa.Column("extra", sa.Text(), nullable=True, comment="unknown columns of the input, as JSON"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
        ),
        sa.PrimaryKeyConstraint("purchase_id"),
    )
    _create_index("ix_purchases_customer_time", "purchases", ["customer_id", "purchased_at"])
    _install_triggers()
    op.execute("DROP INDEX IF EXISTS ix_kw_decisions_customer_id")  # of earlier versions


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for t in LIVE_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS kw_live_{t} ON {t}")
        op.execute("DROP FUNCTION IF EXISTS kw_live_change()")
    for name in TABLES_CHILDREN_FIRST:
        op.execute(f'DROP TABLE IF EXISTS "{name}"')  # its indexes and SQLite triggers with it


TABLES_CHILDREN_FIRST = (
    "purchases",
    "offers",
    "customer_attributes",
    "contacts",
    "consents",
    "complaints",
    "products",
    "kw_target_lists",
    "kw_target_list_members",
    "kw_score_runs",
    "kw_live_changes",
    "kw_feedback",
    "kw_decisions",
    "kw_api_keys",
    "imports",
    "customers",
    "attribute_definitions",
)
