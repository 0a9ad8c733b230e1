"""The CRM store: every contract table in a SQL database (SQLite embedded by default, PostgreSQL for
real deployments, any SQLAlchemy URL for reads and appends).

Writes are bulk and happen in one transaction: a ``sqlite3`` ``executemany`` on SQLite and ``COPY``
on PostgreSQL, the two engines we tune for. Timestamps are UTC: ``timestamp with time zone`` on
PostgreSQL, integer microseconds since the epoch on SQLite (compact and fast to read back; in the
``sqlite3`` shell ``datetime(col / 1e6, 'unixepoch')`` shows them).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pyarrow
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from kundenwert.errors import ConfigurationError, StoreError
from kundenwert.features.contract import MAX_ID_LENGTH, TABLE_ORDER, TABLES
from kundenwert.features.validate import ValidTable

_CHUNK = 100_000
MODES = ("append", "upsert", "replace")


class UtcTimestamp(sa.types.TypeDecorator):
    """A UTC instant: ``timestamptz`` on PostgreSQL, integer microseconds on SQLite."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.BigInteger())
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: object, dialect: sa.Dialect) -> object:
        if value is None or value is pd.NaT:
            return None
        ts = pd.Timestamp(value)
        ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
        if dialect.name == "sqlite":
            return int(ts.value // 1000)
        return ts.to_pydatetime()

    def process_result_value(self, value: object, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return pd.Timestamp(int(value), unit="us", tz="UTC").to_pydatetime()
        return value.astimezone(UTC)  # type: ignore[union-attr]


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
            args: list[object] = [c.name, _sql_type(c.kind)]
            if c.references == "customers":
                args.append(sa.ForeignKey("customers.customer_id"))
            cols.append(sa.Column(*args, primary_key=c.name in spec.key, nullable=c.nullable))
        if name != "customers":
            cols.append(
                sa.Column("extra", sa.Text(), nullable=True, comment="unknown columns of the input, as JSON")
            )
        out[name] = sa.Table(name, metadata, *cols)
    return out


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

# ------------------------------------------------------------------------------- the live change log
# Every change to a customer's consents or contacts leaves their id in ``kw_live_changes``, written
# by triggers in the database itself: whoever writes (an import, the service's feedback, a CRM job
# with its own SQL) cannot forget to. A service keeps customers' live rows in memory and asks, per
# request, only for the newest ``seq`` (one index probe); when it moved, it drops the customers
# named since. A bulk write (``Store.write``) does not log row by row (triggers made a
# million-row insert 2.6x slower, measured): it logs one row with no customer, "any may have changed".
# Sequence order is commit order: SQLite has one writer; on PostgreSQL every logging transaction
# first takes one advisory lock, held to its commit.
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
_PG_LOCK = 0x6B77_6C69  # advisory lock id of the change log ("kwli")


def _sqlite_triggers(table: str) -> list[str]:
    log = "INSERT INTO kw_live_changes(customer_id) VALUES"
    return [
        f"CREATE TRIGGER IF NOT EXISTS kw_live_{table}_insert AFTER INSERT ON {table} "
        f"BEGIN {log} (NEW.customer_id); END",
        f"CREATE TRIGGER IF NOT EXISTS kw_live_{table}_update AFTER UPDATE ON {table} "
        f"BEGIN {log} (NEW.customer_id); INSERT INTO kw_live_changes(customer_id) "
        "SELECT OLD.customer_id WHERE OLD.customer_id IS NOT NEW.customer_id; END",
        f"CREATE TRIGGER IF NOT EXISTS kw_live_{table}_delete AFTER DELETE ON {table} "
        f"BEGIN {log} (OLD.customer_id); END",
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


def _install_live_triggers(engine: Engine) -> None:
    """Create the change log's triggers where they are missing (idempotent, no lock when present)."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            for table in LIVE_TABLES:
                for ddl in _sqlite_triggers(table):
                    conn.exec_driver_sql(ddl)
        elif engine.dialect.name == "postgresql":
            present = set(
                conn.execute(sa.text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")).scalars()
            )
            missing = [t for t in LIVE_TABLES if f"kw_live_{t}" not in present]
            if missing:
                conn.exec_driver_sql(_PG_FUNCTION)
                for t in missing:
                    conn.exec_driver_sql(
                        f"CREATE TRIGGER kw_live_{t} AFTER INSERT OR UPDATE OR DELETE ON {t} "
                        "FOR EACH ROW EXECUTE FUNCTION kw_live_change()"
                    )
        # other databases: no triggers; a service on them reads live rows on every request


@contextmanager
def _logged_once(conn: Connection, touched: bool) -> Iterator[None]:
    """A bulk write logs one "any customer" change instead of one per row (see LIVE_CHANGES).
    On SQLite the triggers are dropped and created again inside the transaction (one writer: no
    other write can slip in between); on PostgreSQL a transaction-local setting silences them."""
    dialect = conn.dialect.name
    if not touched or dialect not in ("sqlite", "postgresql"):
        yield
        return
    if dialect == "sqlite":
        for table in LIVE_TABLES:
            for op in ("insert", "update", "delete"):
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS kw_live_{table}_{op}")
    else:
        conn.exec_driver_sql("SET LOCAL kundenwert.bulk_write = 'on'")
    yield
    if dialect == "sqlite":
        for table in LIVE_TABLES:
            for ddl in _sqlite_triggers(table):
                conn.exec_driver_sql(ddl)
    else:
        conn.exec_driver_sql("SET LOCAL kundenwert.bulk_write = 'off'")
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")  # held briefly: to the commit
    conn.execute(LIVE_CHANGES.insert().values(customer_id=None))
    _prune_live_changes(conn)


def _prune_live_changes(conn: Connection, keep: int = LIVE_CHANGES_KEPT) -> None:
    top = sa.select(sa.func.max(LIVE_CHANGES.c.seq)).scalar_subquery()
    conn.execute(LIVE_CHANGES.delete().where(LIVE_CHANGES.c.seq <= top - keep))


# Children before parents: the order to delete in.
_DELETE_ORDER = ("customer_attributes", "attribute_definitions", *reversed(TABLE_ORDER))


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cur = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA cache_size=-262144")  # 256 MiB page cache for bulk loads
    cur.close()


def make_engine(url: str) -> Engine:
    """Create an engine; for SQLite make the folder and switch on WAL and foreign keys."""
    try:
        u = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(f"KUNDENWERT_DATABASE_URL is not a database URL: {exc}") from None
    if u.drivername.startswith("postgresql") and u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    if u.drivername.startswith("sqlite"):
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(u)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if u.drivername.startswith("postgresql"):
        # Timestamps travel as UTC text (COPY); the session must read them as UTC.
        return sa.create_engine(u, pool_pre_ping=True, connect_args={"options": "-c timezone=UTC"})
    return sa.create_engine(u, pool_pre_ping=True)


class Store:
    """The database holding the CRM tables.

    Parameters
    ----------
    url:
        SQLAlchemy URL; default from ``KUNDENWERT_DATABASE_URL`` or ``sqlite:///var/kundenwert.db``.
    """

    def __init__(self, url: str | None = None) -> None:
        if url is None:
            from kundenwert.settings import get_settings

            url = get_settings().resolved_database_url()
        self.url = url
        self.engine = make_engine(url)
        self.last_read_was_columnar = False
        self.split_rows = 100_000  # unordered columnar reads split tables from this many rows
        try:
            metadata.create_all(self.engine)
            _install_live_triggers(self.engine)
        except sa.exc.OperationalError as exc:
            raise StoreError(f"cannot open the store at {self.engine.url!r}: {exc.orig}") from None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def prune_live_changes(self, keep: int = LIVE_CHANGES_KEPT) -> None:
        """Delete all but the newest ``keep`` entries of the change log (a service that fell
        further behind drops its whole live cache, so nothing it needs is pruned)."""
        with self.engine.begin() as conn:
            _prune_live_changes(conn, keep)

    def dispose(self) -> None:
        self.engine.dispose()

    # ----------------------------------------------------------------------------------- reading

    def counts(self) -> dict[str, int]:
        """Rows per contract table (and the custom attribute values)."""
        with self.engine.connect() as conn:
            out = {
                n: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for n, t in TABLE_DEFS.items()
            }
            out["customer_attributes"] = conn.execute(
                sa.select(sa.func.count()).select_from(CUSTOMER_ATTRIBUTES)
            ).scalar_one()
        return out

    def is_empty(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(TABLE_DEFS["customers"].c.customer_id).limit(1)).first() is None

    def attribute_kinds(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.select(ATTRIBUTE_DEFS.c.name, ATTRIBUTE_DEFS.c.kind)).all())

    def read_table(
        self,
        name: str,
        columns: Sequence[str] | None = None,
        *,
        attributes: bool = True,
        ordered: bool = True,
    ) -> pd.DataFrame:
        """One table as a typed DataFrame (timestamps UTC). ``customers`` includes custom attributes
        (when ``attributes`` and ``customer_id`` is among the columns). Rows come in key order
        unless ``ordered`` is false (storage order: faster, the same for the same database file).

        ``extra`` (unknown input columns) comes back as a JSON text column.
        """
        if name not in TABLE_DEFS:
            raise ConfigurationError(f"unknown table {name!r}; tables are: {', '.join(TABLE_DEFS)}")
        table = TABLE_DEFS[name]
        cols = [table.c[c] for c in columns] if columns else list(table.c)
        key = [table.c[k] for k in TABLES[name].key]
        with self.engine.connect() as conn:
            stmt = sa.select(*cols).order_by(*key) if ordered else sa.select(*cols)
            df = _read_select(conn, stmt, [c.name for c in cols])
            df = _typed(name, df, self.dialect)
            if name == "customers" and attributes and "customer_id" in df.columns:
                df = df.join(self._read_attributes(conn), on="customer_id")
        return df

    def read_for_customers(
        self, name: str, customer_ids: Sequence[str], columns: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """The rows of some customers only (``customer_id`` in ``customer_ids``), typed as
        ``read_table`` gives them; what a request needs (through the customer index)."""
        table = CUSTOMER_ATTRIBUTES if name == "customer_attributes" else TABLE_DEFS.get(name)
        if table is None or "customer_id" not in table.c:
            raise ConfigurationError(f"{name!r} is not a table with a customer_id")
        cols = [table.c[c] for c in columns] if columns else list(table.c)
        ids = list(dict.fromkeys(str(i) for i in customer_ids))
        parts = []
        with self.engine.connect() as conn:
            for start in range(0, max(len(ids), 1), 5_000):
                chunk = ids[start : start + 5_000]
                stmt = sa.select(*cols).where(table.c.customer_id.in_(chunk))
                parts.append(_read_select(conn, stmt, [c.name for c in cols]))
        frame = pd.concat(parts, ignore_index=True)
        return frame if name == "customer_attributes" else _typed(name, frame, self.dialect)

    def read_tables(
        self,
        names: list[str] | tuple[str, ...],
        columns: Mapping[str, Sequence[str]] | None = None,
        *,
        ordered: bool = True,
    ) -> dict[str, pd.DataFrame]:
        """Several tables, typed as ``read_table`` gives them (customers with attributes).

        ``columns`` may name the columns to read per table (all when a table is not named); fewer
        columns read faster; ``ordered`` as in ``read_table``. On a SQLite file the tables are read columnar in child processes (see
        ``arrow_reader``); if that is not possible the row-by-row reader gives the same frames.
        """
        columns = columns or {}
        wanted = {}
        for name in names:
            if name not in TABLE_DEFS:
                raise ConfigurationError(f"unknown table {name!r}; tables are: {', '.join(TABLE_DEFS)}")
            cols = list(columns.get(name) or [c.name for c in TABLE_DEFS[name].c])
            unknown = [c for c in cols if c not in TABLE_DEFS[name].c]
            if unknown:
                raise ConfigurationError(f"table {name!r} has no column(s) {', '.join(unknown)}")
            wanted[name] = cols
        database = self.engine.url.database
        fast = None
        if self.dialect == "sqlite" and database and database != ":memory:":
            from kundenwert.features.arrow_reader import read_columnar

            queries: dict[str, list[str]] = {}
            selects = {}
            for name in names:
                table = TABLE_DEFS[name]
                selects[name] = sa.select(*[table.c[c] for c in wanted[name]])
                if ordered:
                    selects[name] = selects[name].order_by(*[table.c[k] for k in TABLES[name].key])
            if "customers" in names:
                selects["customer_attributes"] = sa.select(
                    *[CUSTOMER_ATTRIBUTES.c[c] for c in ("customer_id", "name", "number", "text")]
                )
            counts = self.counts()
            with self.engine.connect() as conn:
                for name, stmt in selects.items():
                    # In storage order, big tables are read in rowid ranges by both children at once.
                    top = conn.exec_driver_sql(f"SELECT max(rowid) FROM {name}").scalar() or 0
                    cuts = [0, top] if ordered or counts[name] < self.split_rows else [0, top // 2, top]
                    queries[name] = [
                        self._literal(stmt.where(sa.text(f"{name}.rowid > {lo} AND {name}.rowid <= {hi}")))
                        if len(cuts) > 2
                        else self._literal(stmt)
                        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)
                    ]
            # Cost of a table: its rows times (stored columns, pages scanned + selected, decoded).
            weights = {
                q: counts[q] * (len(metadata.tables[q].c) + len(selects[q].selected_columns)) for q in queries
            }
            fast = read_columnar(database, queries, weights)
        if fast is None:
            return {name: self.read_table(name, wanted[name], ordered=ordered) for name in names}
        self.last_read_was_columnar = True
        out = {name: _arrow_typed(name, fast[name], wanted[name]) for name in names}
        if "customers" in out:
            long = fast["customer_attributes"]
            long_df = pd.DataFrame(
                {
                    "customer_id": pc.cast(long.column("customer_id"), pyarrow.string()).to_pandas(),
                    "name": pc.cast(long.column("name"), pyarrow.string()).to_pandas(),
                    "number": pc.cast(long.column("number"), pyarrow.float64()).to_pandas(),
                    "text": pc.cast(long.column("text"), pyarrow.string()).to_pandas(),
                }
            )
            with self.engine.connect() as conn:
                attrs = self._read_attributes(conn, long_df)
            out["customers"] = out["customers"].join(attrs, on="customer_id")
        return out

    def read_tables_for_customers(
        self,
        names: Sequence[str],
        customer_ids: Sequence[str],
        columns: Mapping[str, Sequence[str]] | None = None,
    ) -> dict[str, pd.DataFrame]:
        """``read_tables`` for some customers only (customers with their attributes): what
        scoring a few customers online needs, through the customer indexes."""
        columns = columns or {}
        out = {name: self.read_for_customers(name, customer_ids, columns.get(name)) for name in names}
        if "customers" in out:
            with self.engine.connect() as conn:
                long = self.read_for_customers(
                    "customer_attributes", customer_ids, ["customer_id", "name", "number", "text"]
                )
                attrs = self._read_attributes(conn, long)
            out["customers"] = out["customers"].join(attrs, on="customer_id")
        return out

    def _literal(self, stmt: sa.Select) -> str:
        return str(stmt.compile(dialect=self.engine.dialect, compile_kwargs={"literal_binds": True}))

    def _read_attributes(self, conn: Connection, long: pd.DataFrame | None = None) -> pd.DataFrame:
        kinds = dict(conn.execute(sa.select(ATTRIBUTE_DEFS.c.name, ATTRIBUTE_DEFS.c.kind)).all())
        if not kinds:
            return pd.DataFrame(index=pd.Index([], name="customer_id", dtype="str"))
        long = (
            long
            if long is not None
            else _read_select(
                conn,
                sa.select(
                    CUSTOMER_ATTRIBUTES.c.customer_id,
                    CUSTOMER_ATTRIBUTES.c.name,
                    CUSTOMER_ATTRIBUTES.c.number,
                    CUSTOMER_ATTRIBUTES.c.text,
                ),
                ["customer_id", "name", "number", "text"],
            )
        )
        # Wide by position: customers become codes 0..n-1 once, each attribute is placed by code
        # (aligning string indexes per attribute took seconds on 200,000 customers).
        codes, ids = pd.factorize(long["customer_id"].astype("str"))
        positions = pd.RangeIndex(len(ids))
        names = long["name"].to_numpy(dtype=object)
        out = {}
        for attr, kind in sorted(kinds.items()):
            mask = names == attr
            value = long["number"].astype("float64") if kind == "number" else long["text"].astype("str")
            out[attr] = pd.Series(value[mask].array, index=codes[mask]).reindex(positions).array
        return pd.DataFrame(out, index=pd.Index(ids, name="customer_id", dtype="str"))

    def customer_created(self) -> pd.Series:
        """created_at by customer_id of every stored customer."""
        df = self.read_table("customers", ["customer_id", "created_at"], attributes=False)
        return pd.Series(df["created_at"].array, index=pd.Index(df["customer_id"]), name="created_at")

    def product_categories(self) -> pd.Series:
        df = self.read_table("products", ["product_id", "category"])
        return pd.Series(df["category"].to_numpy(), index=pd.Index(df["product_id"]), name="category")

    def first_purchase(self, customer_ids: pd.Series) -> pd.Series:
        """Earliest stored purchase per customer, for the given customers."""
        p = TABLE_DEFS["purchases"]
        with self.engine.connect() as conn:
            df = _read_select(
                conn,
                sa.select(p.c.customer_id, sa.func.min(p.c.purchased_at).label("first")).group_by(
                    p.c.customer_id
                ),
                ["customer_id", "first"],
            )
        df = _typed_ts(df, ["first"], conn.dialect.name)
        s = pd.Series(df["first"].array, index=pd.Index(df["customer_id"]))
        return s[s.index.isin(customer_ids)]

    def clashing_keys(self, name: str, frame: pd.DataFrame) -> pd.Index:
        """Keys of ``frame`` that already exist in table ``name`` (a set-based join in the database)."""
        spec = TABLES[name]
        table = TABLE_DEFS[name]
        with self.engine.connect() as conn:
            if conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first() is None:
                return pd.Index([])
        keys = list(spec.key)
        tmp_name = f"kw_incoming_{name}"
        tmp = sa.Table(
            tmp_name, sa.MetaData(), *[sa.Column(k, table.c[k].type) for k in keys], prefixes=["TEMPORARY"]
        )
        with self.engine.begin() as conn:
            tmp.create(conn)
            try:
                _bulk_insert(conn, tmp, frame[keys], keys)
                join = sa.and_(*[tmp.c[k] == table.c[k] for k in keys])
                rows = _read_select(
                    conn, sa.select(*[tmp.c[k] for k in keys]).select_from(tmp.join(table, join)), keys
                )
            finally:
                tmp.drop(conn)
        rows = _typed(name, rows, self.dialect)
        if len(keys) == 1:
            return pd.Index(rows[keys[0]])
        return pd.MultiIndex.from_frame(rows[keys])

    def fingerprint(self) -> dict[str, tuple[int, str]]:
        """Row count and a content checksum per table: equal fingerprints mean equal contents."""
        out: dict[str, tuple[int, str]] = {}
        with self.engine.connect() as conn:
            for name, table in {
                **TABLE_DEFS,
                "customer_attributes": CUSTOMER_ATTRIBUTES,
                "attribute_definitions": ATTRIBUTE_DEFS,
            }.items():
                cols = list(table.c)
                order = [c for c in table.primary_key.columns]
                df = _read_select(conn, sa.select(*cols).order_by(*order), [c.name for c in cols])
                h = hashlib.sha256()
                h.update(pd.util.hash_pandas_object(df.astype(str), index=False).to_numpy().tobytes())
                out[name] = (len(df), h.hexdigest()[:16])
        return out

    # ----------------------------------------------------------------------------------- writing

    def write(self, tables: dict[str, ValidTable], mode: str) -> dict[str, int]:
        """Write validated tables in one transaction; all or nothing. Returns rows written per table."""
        if mode not in MODES:
            raise ConfigurationError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode == "upsert" and self.dialect not in ("sqlite", "postgresql"):
            raise ConfigurationError(
                f"--mode upsert needs SQLite or PostgreSQL; this store is {self.dialect}"
            )
        written: dict[str, int] = {}
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                # References were validated against file and store; SQLite's per-row foreign-key
                # lookups would only repeat that. The PRAGMA must come before the transaction.
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                conn.commit()
            touched = mode == "replace" or any(t in tables for t in LIVE_TABLES)
            try:
                with conn.begin(), _logged_once(conn, touched):
                    self._write(conn, tables, mode, written)
            finally:
                if self.dialect == "sqlite":
                    conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                    conn.commit()
        return written

    def _write(
        self, conn: Connection, tables: dict[str, ValidTable], mode: str, written: dict[str, int]
    ) -> None:
        if mode == "replace":
            for name in _DELETE_ORDER:
                conn.execute(metadata.tables[name].delete())
        for name in TABLE_ORDER:
            if name not in tables:
                continue
            vt = tables[name]
            frame = vt.frame
            columns = list(TABLES[name].column_names)
            if name != "customers":
                frame = frame.assign(extra=_extra_json(vt.extra))  # copy-on-write: no data copied
                columns.append("extra")
            with _indexes_rebuilt_after(conn, TABLE_DEFS[name], len(frame)):
                _bulk_write(
                    conn, TABLE_DEFS[name], frame, columns, list(TABLES[name].key), upsert=mode == "upsert"
                )
            written[name] = len(frame)
            if name == "customers" and vt.attributes is not None and len(vt.attributes.columns):
                written["customer_attributes"] = self._write_attributes(conn, vt, mode)
        conn.execute(
            IMPORTS.insert().values(
                imported_at=pd.Timestamp.now(tz="UTC"), mode=mode, rows=json.dumps(written, sort_keys=True)
            )
        )

    def _write_attributes(self, conn: Connection, vt: ValidTable, mode: str) -> int:
        existing = dict(conn.execute(sa.select(ATTRIBUTE_DEFS.c.name, ATTRIBUTE_DEFS.c.kind)).all())
        new = [{"name": n, "kind": k} for n, k in vt.attribute_kinds.items() if n not in existing]
        if new:
            conn.execute(ATTRIBUTE_DEFS.insert(), new)
        attrs = vt.attributes
        assert attrs is not None
        parts = []
        for name in attrs.columns:
            values = attrs[name]
            keep = values.notna().to_numpy()
            ids = attrs.index.to_numpy()[keep]
            part = pd.DataFrame({"customer_id": ids, "name": name})
            if vt.attribute_kinds[name] == "number":
                part["number"] = values.to_numpy()[keep].astype("float64")
                part["text"] = pd.Series([None] * len(part), dtype="str")
            else:
                part["number"] = np.nan
                part["text"] = values[keep].astype("str").to_numpy()
            parts.append(part)
        long = pd.concat(parts, ignore_index=True)
        if mode == "upsert":
            # The file's value wins for the attributes it has; an empty cell clears the stored value.
            ids = pd.DataFrame({"customer_id": attrs.index.to_numpy()})
            for name in attrs.columns:
                _delete_keys(conn, CUSTOMER_ATTRIBUTES, ids.assign(name=name), ["customer_id", "name"])
        cols = ["customer_id", "name", "number", "text"]
        _bulk_write(conn, CUSTOMER_ATTRIBUTES, long, cols, ["customer_id", "name"], upsert=False)
        return len(long)


# --------------------------------------------------------------------------------------- bulk helpers


@contextmanager
def _indexes_rebuilt_after(conn: Connection, table: sa.Table, incoming: int) -> Iterator[None]:
    """On SQLite, drop a table's secondary indexes for a large load and build them afterwards.

    Maintaining an index row by row in random key order is several times slower than building it
    once by sorting. Inside the caller's transaction, so a failure leaves the indexes as they were.
    """
    if conn.dialect.name != "sqlite" or not table.indexes:
        yield
        return
    existing = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    if incoming < max(10_000, existing // 4):
        yield
        return
    for index in table.indexes:
        index.drop(conn)
    yield
    for index in table.indexes:
        index.create(conn)


def _extra_json(extra: pd.DataFrame) -> pd.Series:
    if extra.shape[1] == 0:
        return pd.Series([None] * len(extra), index=extra.index, dtype="str")
    lines = extra.to_json(orient="records", lines=True, force_ascii=False).splitlines()
    return pd.Series(lines, index=extra.index, dtype="str")


def _python_values(series: pd.Series, dialect: str) -> list:
    """A column as Python values for a DBAPI executemany (None for missing)."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(dtype):
        values = (
            series.to_numpy(dtype="datetime64[us]")
            if isinstance(dtype, pd.DatetimeTZDtype)
            else series.to_numpy().astype("datetime64[us]")
        )
        missing = np.isnat(values)
        if dialect == "sqlite":
            out = values.view("int64").astype(object)
        else:
            out = pd.DatetimeIndex(values).tz_localize("UTC").to_pydatetime().astype(object)
        out[missing] = None
        return out.tolist()
    if pd.api.types.is_float_dtype(dtype):
        arr = series.to_numpy(dtype="float64")
        out = arr.astype(object)
        out[np.isnan(arr)] = None
        return out.tolist()
    return series.astype(object).where(series.notna(), None).tolist()  # text, booleans, integers


def _chunks(frame: pd.DataFrame, size: int = _CHUNK) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), size):
        yield frame.iloc[start : start + size]


def _bulk_insert(conn: Connection, table: sa.Table, frame: pd.DataFrame, columns: list[str]) -> None:
    _bulk_write(conn, table, frame, columns, [], upsert=False)


def _bulk_write(
    conn: Connection,
    table: sa.Table,
    frame: pd.DataFrame,
    columns: list[str],
    key: list[str],
    *,
    upsert: bool,
) -> None:
    if len(frame) == 0:
        return
    dialect = conn.dialect.name
    if dialect == "postgresql":
        _pg_copy(conn, table, frame, columns, key, upsert=upsert)
        return
    if dialect == "sqlite":
        _sqlite_insert(conn, table, frame, columns, key, upsert=upsert)
        return
    if upsert:
        raise ConfigurationError(f"--mode upsert needs SQLite or PostgreSQL; this store is {dialect}")
    for chunk in _chunks(frame[columns]):
        rows = [
            dict(zip(columns, r, strict=True))
            for r in zip(*[_python_values(chunk[c], dialect) for c in columns], strict=True)
        ]
        conn.execute(table.insert(), rows)


def _sqlite_insert(
    conn: Connection,
    table: sa.Table,
    frame: pd.DataFrame,
    columns: list[str],
    key: list[str],
    *,
    upsert: bool,
) -> None:
    """executemany with many rows per INSERT: SQLite's per-statement cost dominates single-row inserts.

    Columns that are empty throughout are left out (they default to NULL), which saves binding them.
    """
    columns = [c for c in columns if c in key or frame[c].notna().any()]
    if key and not (len(key) == 1 and frame[key[0]].is_monotonic_increasing):
        # B-tree inserts in key order append at the right edge instead of splitting pages at random.
        frame = frame.sort_values(key, kind="stable")
    width = len(columns)
    per = max(1, min(200, 32_000 // width))
    row_ph = "(" + ", ".join("?" for _ in columns) + ")"
    head = f'INSERT INTO "{table.name}" ({", ".join(columns)}) VALUES '
    tail = ""
    if upsert:
        updates = (
            ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
            or f"{key[0]} = excluded.{key[0]}"
        )
        tail = f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    many_sql = head + ", ".join([row_ph] * per) + tail
    one_sql = head + row_ph + tail
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        for chunk in _chunks(frame[columns]):
            n = len(chunk)
            flat: list = [None] * (n * width)
            for j, c in enumerate(columns):  # interleave column values row by row, at C speed
                flat[j::width] = _python_values(chunk[c], "sqlite")
            full = n // per * per
            step = per * width
            if full:
                cursor.executemany(many_sql, (flat[i : i + step] for i in range(0, full * width, step)))
            if full < n:
                rest = flat[full * width :]
                cursor.executemany(one_sql, (rest[i : i + width] for i in range(0, len(rest), width)))
    finally:
        cursor.close()


def _arrow_column(series: pd.Series) -> pyarrow.Array:
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return pyarrow.array(
            series.to_numpy(dtype="datetime64[us]"), type=pyarrow.timestamp("us"), from_pandas=True
        )
    if isinstance(dtype, pd.BooleanDtype):
        return pyarrow.array(series.astype(object).where(series.notna(), None).tolist(), type=pyarrow.bool_())
    if isinstance(dtype, pd.Int64Dtype):
        return pyarrow.array(series, type=pyarrow.int64(), from_pandas=True)
    if pd.api.types.is_float_dtype(dtype):
        return pyarrow.array(series.to_numpy(dtype="float64"), type=pyarrow.float64(), from_pandas=True)
    return pyarrow.array(series.astype(object).where(series.notna(), None).tolist(), type=pyarrow.string())


def _pg_copy(
    conn: Connection,
    table: sa.Table,
    frame: pd.DataFrame,
    columns: list[str],
    key: list[str],
    *,
    upsert: bool,
) -> None:
    """COPY the frame into ``table`` (through a temporary table when upserting)."""
    dbapi = conn.connection.dbapi_connection
    target = table.name
    if upsert:
        target = f"kw_upsert_{table.name}"
        conn.exec_driver_sql(
            f'CREATE TEMPORARY TABLE "{target}" (LIKE "{table.name}" INCLUDING DEFAULTS) ON COMMIT DROP'
        )
    cols = ", ".join(f'"{c}"' for c in columns)
    with dbapi.cursor() as cur:  # type: ignore[union-attr]
        with cur.copy(f'COPY "{target}" ({cols}) FROM STDIN WITH (FORMAT csv)') as copy:
            for chunk in _chunks(frame[columns], 200_000):
                at = pyarrow.table({c: _arrow_column(chunk[c]) for c in columns})
                buf = io.BytesIO()
                pacsv.write_csv(at, buf, write_options=pacsv.WriteOptions(include_header=False))
                # pyarrow writes naive timestamps without zone; they are UTC by construction.
                copy.write(buf.getvalue())
        if upsert:
            updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c not in key)
            keys = ", ".join(f'"{k}"' for k in key)
            cur.execute(
                f'INSERT INTO "{table.name}" ({cols}) SELECT {cols} FROM "{target}" '
                f"ON CONFLICT ({keys}) DO UPDATE SET {updates}"
            )
            cur.execute(f'DROP TABLE "{target}"')


def _delete_keys(conn: Connection, table: sa.Table, keys: pd.DataFrame, key_cols: list[str]) -> None:
    if len(keys) == 0:
        return
    if conn.dialect.name == "sqlite":
        where = " AND ".join(f"{k} = ?" for k in key_cols)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(
                f'DELETE FROM "{table.name}" WHERE {where}', keys[key_cols].itertuples(index=False, name=None)
            )
        finally:
            cursor.close()
        return
    stmt = table.delete().where(sa.and_(*[table.c[k] == sa.bindparam(f"k_{k}") for k in key_cols]))
    conn.execute(
        stmt,
        [
            {f"k_{k}": v for k, v in zip(key_cols, row, strict=True)}
            for row in keys[key_cols].itertuples(index=False, name=None)
        ],
    )


def _read_select(conn: Connection, stmt: sa.Select, names: list[str]) -> pd.DataFrame:
    """Run a select through the raw driver (fast) and return its rows as a frame of raw values."""
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(str(compiled))
        rows = cursor.fetchall()
    finally:
        cursor.close()
    if not rows:
        return pd.DataFrame({n: pd.Series([], dtype=object) for n in names})
    columns = list(zip(*rows, strict=True))
    del rows
    return pd.DataFrame({n: np.array(col, dtype=object) for n, col in zip(names, columns, strict=True)})


def _arrow_typed(name: str, table: pyarrow.Table, names: list[str]) -> pd.DataFrame:
    """Contract types from a columnar read of SQLite (timestamps are integer microseconds there)."""
    kinds = {c.name: c.kind for c in TABLES[name].columns}
    out = {}
    for col_name in names:
        col = table.column(col_name)
        kind = kinds.get(col_name, "text")
        if kind == "timestamp":
            values = pc.cast(pc.cast(col, pyarrow.int64()), pyarrow.timestamp("us", tz="UTC"))
            out[col_name] = values.to_pandas().astype("datetime64[us, UTC]")
        elif kind == "number":
            out[col_name] = pc.cast(col, pyarrow.float64()).to_pandas()
        elif kind == "int":
            out[col_name] = pd.array(
                pc.cast(col, pyarrow.int64()).to_pandas(types_mapper=pd.ArrowDtype), dtype="Int64"
            )
        elif kind == "bool":
            out[col_name] = pd.array(
                pc.cast(col, pyarrow.bool_()).to_pandas(types_mapper=pd.ArrowDtype), dtype="boolean"
            )
        else:
            out[col_name] = pc.cast(col, pyarrow.string()).to_pandas().astype("str")
    return pd.DataFrame(out)


def _typed_ts(df: pd.DataFrame, cols: list[str], dialect: str) -> pd.DataFrame:
    for c in cols:
        s = df[c]
        if dialect == "sqlite":  # integer microseconds
            df[c] = pd.to_datetime(pd.to_numeric(s, errors="coerce"), unit="us", utc=True).astype(
                "datetime64[us, UTC]"
            )
        else:
            df[c] = pd.to_datetime(s, utc=True).astype("datetime64[us, UTC]")
    return df


def _typed(name: str, df: pd.DataFrame, dialect: str) -> pd.DataFrame:
    """Give raw database values their contract types."""
    spec = TABLES[name]
    for c in spec.columns:
        if c.name not in df.columns:
            continue
        if c.kind == "timestamp":
            _typed_ts(df, [c.name], dialect)
        elif c.kind == "number":
            df[c.name] = pd.to_numeric(df[c.name], errors="coerce").astype("float64")
        elif c.kind == "int":
            df[c.name] = pd.to_numeric(df[c.name], errors="coerce").astype("Int64")
        elif c.kind == "bool":
            df[c.name] = df[c.name].astype("boolean")
        else:
            df[c.name] = df[c.name].astype("str")
    if "extra" in df.columns:
        df["extra"] = df["extra"].astype("str")
    return df
