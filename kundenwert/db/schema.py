"""Every table of the store in one ``MetaData``: the CRM contract tables, custom attributes,
``imports``, the live change log and the service's ``kw_*`` tables.

One definition per table: the modules that read or write a table import it from here, and the
Alembic migrations (``kundenwert/db/migrations``) are checked against this ``metadata`` in the tests.
A scoring run's wide table (``kw_scores_<run>``) is made per run and is not listed here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kundenwert.features.contract import MAX_ID_LENGTH, TABLE_ORDER, TABLES


class UtcTimestamp(sa.types.TypeDecorator):
    """A UTC instant: ``timestamptz`` on PostgreSQL, integer microseconds on SQLite (the backend
    of the dialect decides: ``kundenwert.db.backends``)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine:
        from kundenwert.db.backends import backend_for

        return dialect.type_descriptor(backend_for(dialect).timestamp_type())

    def process_bind_param(self, value: object, dialect: sa.Dialect) -> object:
        from kundenwert.db.backends import backend_for

        return backend_for(dialect).timestamp_to_db(value)

    def process_result_value(self, value: object, dialect: sa.Dialect) -> datetime | None:
        from kundenwert.db.backends import backend_for

        return backend_for(dialect).timestamp_from_db(value)


def _sql_type(kind: str) -> sa.types.TypeEngine:
    return {
        "id": sa.String(MAX_ID_LENGTH),
        "text": sa.Text(),
        "timestamp": UtcTimestamp(),
        "number": sa.Float(),
        "int": sa.Integer(),
        "bool": sa.Boolean(),
    }[kind]


metadata = sa.MetaData()


def _build_tables() -> dict[str, sa.Table]:
    out: dict[str, sa.Table] = {}
    for name, spec in TABLES.items():
        cols: list[sa.Column] = []
        for c in spec.columns:
            args: list[Any] = [c.name, _sql_type(c.kind)]
            if c.references == "customers":
                args.append(sa.ForeignKey("customers.customer_id"))
            cols.append(sa.Column(*args, primary_key=c.name in spec.key, nullable=c.nullable))
        if name != "customers":
            cols.append(
                sa.Column("extra", sa.Text(), nullable=True, comment="unknown columns of the input, as JSON")
            )
        out[name] = sa.Table(name, metadata, *cols)
    return out


# ------------------------------------------------------------------------------ the CRM contract
TABLE_DEFS = _build_tables()
sa.Index(
    "ix_purchases_customer_time",
    TABLE_DEFS["purchases"].c.customer_id,
    TABLE_DEFS["purchases"].c.purchased_at,
)
sa.Index(
    "ix_contacts_customer_time", TABLE_DEFS["contacts"].c.customer_id, TABLE_DEFS["contacts"].c.contacted_at
)
sa.Index("ix_complaints_customer", TABLE_DEFS["complaints"].c.customer_id)
sa.Index("ix_offers_customer", TABLE_DEFS["offers"].c.customer_id)

ATTRIBUTE_DEFS = sa.Table(
    "attribute_definitions",
    metadata,
    sa.Column("name", sa.String(MAX_ID_LENGTH), primary_key=True),
    sa.Column("kind", sa.String(10), nullable=False),  # number | text
)
CUSTOMER_ATTRIBUTES = sa.Table(
    "customer_attributes",
    metadata,
    sa.Column(
        "customer_id", sa.String(MAX_ID_LENGTH), sa.ForeignKey("customers.customer_id"), primary_key=True
    ),
    sa.Column(
        "name", sa.String(MAX_ID_LENGTH), sa.ForeignKey("attribute_definitions.name"), primary_key=True
    ),
    sa.Column("number", sa.Float(), nullable=True),
    sa.Column("text", sa.Text(), nullable=True),
)
IMPORTS = sa.Table(
    "imports",
    metadata,
    sa.Column("import_id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("imported_at", UtcTimestamp(), nullable=False),
    sa.Column("mode", sa.String(10), nullable=False),
    sa.Column("rows", sa.Text(), nullable=False, comment="rows written per table, JSON"),
)

# Children before parents: the order to delete in.
DELETE_ORDER = ("customer_attributes", "attribute_definitions", *reversed(TABLE_ORDER))

# ------------------------------------------------------------------------------- the live change log
# Every change to a customer's consents or contacts leaves their id in ``kw_live_changes``, written
# by triggers in the database itself: whoever writes (an import, the service's feedback, a CRM job
# with its own SQL) cannot forget to. A service keeps customers' live rows in memory and asks, per
# request, only for the newest ``seq`` (one index probe); when it moved, it drops the customers
# named since. A bulk write (``Store.write``) does not log row by row (triggers made a
# million-row insert 2.6x slower, measured): it logs one row with no customer, "any may have changed".
# Sequence order is commit order: SQLite has one writer; on PostgreSQL every logging transaction
# first takes one advisory lock, held to its commit. The triggers are the backends' business
# (``Backend.install_live_triggers``).
LIVE_TABLES = ("consents", "contacts")
LIVE_CHANGES = sa.Table(
    "kw_live_changes",
    metadata,
    sa.Column(
        "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("customer_id", sa.String(MAX_ID_LENGTH), nullable=True, comment="NULL: any customer"),
    sqlite_autoincrement=True,  # a seq is never used twice, even after pruning
)
LIVE_CHANGES_KEPT = 100_000  # the newest entries kept by pruning

# ------------------------------------------------------------------------------ the service's tables
SCORE_RUNS = sa.Table(
    "kw_score_runs",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("scored_at", sa.String(32), nullable=False),
    sa.Column("cutoff", sa.String(32), nullable=False),
    sa.Column("customers", sa.Integer, nullable=False),
    sa.Column("models", sa.Text, nullable=False),  # JSON: model -> version
    sa.Column("table_name", sa.String(64), nullable=False),
)

DECISIONS = sa.Table(
    "kw_decisions",
    metadata,
    sa.Column("decision_id", sa.String(32), primary_key=True),
    # no index on customer_id: with one, every commit wrote a random page per decision (85 us
    # per decision against 15 us without, measured); nothing reads by customer, and an erasure
    # request may scan the table
    sa.Column("customer_id", sa.String(MAX_ID_LENGTH), nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("score_run", sa.String(32), nullable=False),
    sa.Column("suggestions", sa.Text, nullable=False),  # JSON: [{action_id, channel, score, rank, ...}]
    # JSON: {channel: {"epsilon": share, "candidates": [[action_id, score, propensity, uplift,
    # value, cost], ...] best-scored first}}: every eligible candidate (serving.exploration)
    sa.Column("candidates", sa.Text, nullable=True, comment="eligible candidates per channel (JSON)"),
)

FEEDBACK = sa.Table(
    "kw_feedback",
    metadata,
    sa.Column("event_id", sa.String(128), primary_key=True),
    sa.Column("payload_sha256", sa.String(64), nullable=False),
    sa.Column("decision_id", sa.String(32), nullable=True, index=True, comment="NULL: a list member's event"),
    sa.Column("action_id", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("occurred_at", sa.String(40), nullable=False),
    sa.Column("received_at", sa.String(40), nullable=False),
    sa.Column("list_id", sa.String(32), nullable=True, index=True, comment="a target list's member event"),
    sa.Column("customer_id", sa.String(MAX_ID_LENGTH), nullable=True, comment="the list member"),
)

TARGET_LISTS = sa.Table(
    "kw_target_lists",
    metadata,
    sa.Column("list_id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("request", sa.Text, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
)
TARGET_LIST_MEMBERS = sa.Table(
    "kw_target_list_members",
    metadata,
    sa.Column("list_id", sa.String(32), nullable=False, index=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("customer_id", sa.String(MAX_ID_LENGTH), nullable=False),
    sa.Column("group", sa.String(8), nullable=False),
    sa.Column("action_id", sa.String(64), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("propensity", sa.Float, nullable=False),
    sa.Column("expected_value", sa.Float, nullable=False),
    sa.Column("cost", sa.Float, nullable=False),
    sa.Column("uplift", sa.Float, nullable=True, comment="predicted uplift when the list was made"),
)

API_KEYS = sa.Table(
    "kw_api_keys",
    metadata,
    sa.Column("key_id", sa.String(16), primary_key=True),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("name", sa.String(200), nullable=False, default=""),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
    sa.Column("expires_at", sa.String(32), nullable=True, comment="ISO instant; NULL: never"),
    sa.Column("revoked_at", sa.String(32), nullable=True),
)

# ------------------------------------------------------------------------------ data protection
# Erased customers (GDPR Art. 17): only a keyed hash of each id (HMAC-SHA256 with the erasure
# key, which is kept outside the store), so that a later import of the same id can be refused
# without the register naming anyone. ``key_id`` tells which key made the hash.
ERASED = sa.Table(
    "kw_erased",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.String(16), nullable=False),
    sa.Column("erased_at", sa.String(32), nullable=False),
)

# Who did what to which object, and how many rows: list creations and exports, erasures, keys.
# Never a secret, never a customer id in clear.
AUDIT = sa.Table(
    "kw_audit",
    metadata,
    sa.Column("audit_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(32), nullable=False, comment="ISO instant, UTC"),
    sa.Column("key_id", sa.String(16), nullable=True, comment="the API key; NULL: the command line"),
    sa.Column("role", sa.String(32), nullable=False, comment="the key's role, or cli"),
    sa.Column("actor", sa.String(200), nullable=False, comment="key id and role, or cli and OS user"),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("object_type", sa.String(40), nullable=False),
    sa.Column("object_id", sa.String(200), nullable=True),
    sa.Column("rows", sa.Integer, nullable=True),
    sa.Column("detail", sa.Text, nullable=True, comment="JSON"),
)
