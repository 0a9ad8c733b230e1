"""The CRM store: every contract table in a SQL database (SQLite embedded by default, PostgreSQL for
real deployments, any SQLAlchemy URL for reads and appends).

``Store`` is the facade the rest of kundenwert uses; the tables are defined in
``kundenwert.db.schema`` and everything that depends on the database (bulk writes, triggers,
instants, columnar reads) is the business of its backend class in ``kundenwert.db.backends``.
Writes are bulk and happen in one transaction: a ``sqlite3`` ``executemany`` on SQLite and ``COPY``
on PostgreSQL, the two engines we tune for. Timestamps are UTC: ``timestamp with time zone`` on
PostgreSQL, integer microseconds since the epoch on SQLite (compact and fast to read back; in the
``sqlite3`` shell ``datetime(col / 1e6, 'unixepoch')`` shows them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pyarrow as pyarrow
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kundenwert.db.backends import Backend, backend_for, make_engine, prune_live_changes
from kundenwert.db.erasure import refuse_erased
from kundenwert.db.errors import map_exceptions
from kundenwert.db.schema import (
    ATTRIBUTE_DEFS,
    CUSTOMER_ATTRIBUTES,
    DELETE_ORDER,
    IMPORTS,
    LIVE_CHANGES,
    LIVE_CHANGES_KEPT,
    LIVE_TABLES,
    TABLE_DEFS,
    UtcTimestamp,
    metadata,
)
from kundenwert.errors import ConfigurationError
from kundenwert.features.contract import IMPORT_MODES, MARKETING_CHANNELS, TABLE_ORDER, TABLES
from kundenwert.features.snapshot_spec import SnapshotConfig, SnapshotSpec
from kundenwert.features.validate import ValidTable

__all__ = [
    "ATTRIBUTE_DEFS",
    "CUSTOMER_ATTRIBUTES",
    "IMPORTS",
    "LIVE_CHANGES",
    "LIVE_CHANGES_KEPT",
    "LIVE_TABLES",
    "MODES",
    "spec_from_store",
    "TABLE_DEFS",
    "Store",
    "UtcTimestamp",
    "make_engine",
    "metadata",
]

MODES = IMPORT_MODES


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
        self.backend: Backend = backend_for(self.engine)
        from kundenwert.db.migrate import open_schema

        where = self.engine.url.render_as_string(hide_password=True)
        with map_exceptions(f"opening the store at {where}"):
            open_schema(self.engine)

    def prune_live_changes(self, keep: int = LIVE_CHANGES_KEPT) -> None:
        """Delete all but the newest ``keep`` entries of the change log (a service that fell
        further behind drops its whole live cache, so nothing it needs is pruned)."""
        with map_exceptions("pruning the change log", "kw_live_changes"), self.engine.begin() as conn:
            prune_live_changes(conn, keep)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _reading(self, what: str, table: str | None = None) -> Iterator[Connection]:
        """A connection to read on; driver errors leave as our ``StoreError`` classes (one line)."""
        with map_exceptions(what, table), self.engine.connect() as conn:
            yield conn

    # ----------------------------------------------------------------------------------- reading

    def counts(self) -> dict[str, int]:
        """Rows per contract table (and the custom attribute values)."""
        with self._reading("counting rows") as conn:
            out = {
                n: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for n, t in TABLE_DEFS.items()
            }
            out["customer_attributes"] = conn.execute(
                sa.select(sa.func.count()).select_from(CUSTOMER_ATTRIBUTES)
            ).scalar_one()
        return out

    def is_empty(self) -> bool:
        with self._reading("reading customers", "customers") as conn:
            return conn.execute(sa.select(TABLE_DEFS["customers"].c.customer_id).limit(1)).first() is None

    def attribute_kinds(self) -> dict[str, str]:
        with self._reading("reading attribute definitions", "attribute_definitions") as conn:
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
        with self._reading(f"reading {name}", name) as conn:
            stmt = sa.select(*cols).order_by(*key) if ordered else sa.select(*cols)
            df = self.backend.read_select(conn, stmt, [c.name for c in cols])
            df = _typed(name, df, self.backend)
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
        with self._reading(f"reading {name}", name) as conn:
            for start in range(0, max(len(ids), 1), 5_000):
                chunk = ids[start : start + 5_000]
                stmt = sa.select(*cols).where(table.c.customer_id.in_(chunk))
                parts.append(self.backend.read_select(conn, stmt, [c.name for c in cols]))
        frame = pd.concat(parts, ignore_index=True)
        return frame if name == "customer_attributes" else _typed(name, frame, self.backend)

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
        ``kundenwert.db.arrow_reader``); if that is not possible the row-by-row reader gives the same frames.
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
        fast = None
        if self.backend.name == "sqlite":
            counts = self.counts()
            # Cost of a table: its rows times (stored columns, pages scanned + selected, decoded).
            weights = {
                q: counts[q] * (len(metadata.tables[q].c) + len(selects[q].selected_columns)) for q in selects
            }
            fast = self.backend.read_columnar(
                self.engine, selects, counts, weights, ordered=ordered, split_rows=self.split_rows
            )
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
            with self._reading("reading attribute definitions", "attribute_definitions") as conn:
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
            long = self.read_for_customers(
                "customer_attributes", customer_ids, ["customer_id", "name", "number", "text"]
            )
            with self._reading("reading attribute definitions", "attribute_definitions") as conn:
                attrs = self._read_attributes(conn, long)
            out["customers"] = out["customers"].join(attrs, on="customer_id")
        return out

    def _read_attributes(self, conn: Connection, long: pd.DataFrame | None = None) -> pd.DataFrame:
        kinds = dict(conn.execute(sa.select(ATTRIBUTE_DEFS.c.name, ATTRIBUTE_DEFS.c.kind)).all())
        if not kinds:
            return pd.DataFrame(index=pd.Index([], name="customer_id", dtype="str"))
        long = (
            long
            if long is not None
            else self.backend.read_select(
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
        with self._reading("reading purchases", "purchases") as conn:
            df = self.backend.read_select(
                conn,
                sa.select(p.c.customer_id, sa.func.min(p.c.purchased_at).label("first")).group_by(
                    p.c.customer_id
                ),
                ["customer_id", "first"],
            )
        df = _typed_ts(df, ["first"], self.backend)
        s = pd.Series(df["first"].array, index=pd.Index(df["customer_id"]))
        return s[s.index.isin(customer_ids)]

    def clashing_keys(self, name: str, frame: pd.DataFrame) -> pd.Index:
        """Keys of ``frame`` that already exist in table ``name`` (a set-based join in the database)."""
        spec = TABLES[name]
        table = TABLE_DEFS[name]
        with self._reading(f"reading {name}", name) as conn:
            if conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first() is None:
                return pd.Index([])
        keys = list(spec.key)
        with map_exceptions(f"checking keys of {name}", name), self.engine.begin() as conn:
            rows = self.backend.existing_keys(conn, table, frame, keys)
        rows = _typed(name, rows, self.backend)
        if len(keys) == 1:
            return pd.Index(rows[keys[0]])
        return pd.MultiIndex.from_frame(rows[keys])

    def fingerprint(self) -> dict[str, tuple[int, str]]:
        """Row count and a content checksum per table: equal fingerprints mean equal contents."""
        out: dict[str, tuple[int, str]] = {}
        with self._reading("fingerprinting the store") as conn:
            for name, table in {
                **TABLE_DEFS,
                "customer_attributes": CUSTOMER_ATTRIBUTES,
                "attribute_definitions": ATTRIBUTE_DEFS,
            }.items():
                cols = list(table.c)
                order = [c for c in table.primary_key.columns]
                df = self.backend.read_select(conn, sa.select(*cols).order_by(*order), [c.name for c in cols])
                h = hashlib.sha256()
                h.update(pd.util.hash_pandas_object(df.astype(str), index=False).to_numpy().tobytes())
                out[name] = (len(df), h.hexdigest()[:16])
        return out

    # ----------------------------------------------------------------------------------- writing

    def write(
        self, tables: dict[str, ValidTable], mode: str, *, allow_erased: bool = False
    ) -> dict[str, int]:
        """Write validated tables in one transaction; all or nothing. Returns rows written per table.

        Customers erased before (GDPR Art. 17, ``kundenwert.db.erasure``) are refused
        (``ErasedCustomers``) unless ``allow_erased``: then they are new records, and their ids
        leave the register of erased customers in the same transaction.
        """
        if mode not in MODES:
            raise ConfigurationError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode == "upsert" and not self.backend.supports_upsert:
            raise ConfigurationError(
                f"--mode upsert needs SQLite or PostgreSQL; this store is {self.backend.name}"
            )
        written: dict[str, int] = {}
        touched = mode == "replace" or any(t in tables for t in LIVE_TABLES)
        what = f"writing {', '.join(tables) or 'nothing'} ({mode})"
        with (
            map_exceptions(what),
            self.engine.connect() as conn,
            self.backend.bulk_session(conn),  # outside the transaction
            conn.begin(),
        ):
            if self.backend.single_writer:
                # SQLite's driver would begin the transaction only at the first INSERT/DELETE:
                # the triggers ``logged_once`` drops came back only after a successful write.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            self.backend.unlimited(conn)  # an import's COPY may take longer than a request may
            # Only customers can bring an erased id back: every other table's rows must name
            # a customer of the file or the store, and an erased one is in neither.
            if "customers" in tables:
                ids = tables["customers"].frame["customer_id"]
                refuse_erased(conn, "customers", ids.to_numpy(dtype=object), allow_erased=allow_erased)
            with self.backend.logged_once(conn, touched):
                self._write(conn, tables, mode, written)
        return written

    def _write(
        self, conn: Connection, tables: dict[str, ValidTable], mode: str, written: dict[str, int]
    ) -> None:
        if mode == "replace":
            for name in DELETE_ORDER:
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
            with self.backend.indexes_rebuilt_after(conn, TABLE_DEFS[name], len(frame)):
                self.backend.bulk_write(
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
        long = _attributes_long(attrs, vt.attribute_kinds)
        if mode == "upsert":
            # The file's value wins for the attributes it has; an empty cell clears the stored value.
            ids = pd.DataFrame({"customer_id": attrs.index.to_numpy()})
            for name in attrs.columns:
                self.backend.delete_keys(
                    conn, CUSTOMER_ATTRIBUTES, ids.assign(name=name), ["customer_id", "name"]
                )
        cols = ["customer_id", "name", "number", "text"]
        self.backend.bulk_write(conn, CUSTOMER_ATTRIBUTES, long, cols, ["customer_id", "name"], upsert=False)
        return len(long)


def _attributes_long(attrs: pd.DataFrame, kinds: Mapping[str, str]) -> pd.DataFrame:
    """Custom attributes (a column per attribute, a row per customer) as rows of
    ``customer_attributes``, the missing values left out, in key order (customer_id, name): the
    bulk write then needs no sort. Plain object columns: no round trip through Arrow strings."""
    ids = attrs.index.to_numpy(dtype=object)
    order = np.argsort(ids, kind="stable")  # code point order, SQLite's BINARY order of UTF-8 text
    names = sorted(attrs.columns)
    n, k = len(ids), len(names)
    number = np.full((n, k), np.nan)
    text = np.full((n, k), None, dtype=object)
    keep = np.zeros((n, k), dtype=bool)
    for j, name in enumerate(names):
        values = attrs[name]
        keep[:, j] = values.notna().to_numpy()[order]
        if kinds[name] == "number":
            number[:, j] = values.to_numpy(dtype="float64", na_value=np.nan)[order]
        else:
            text[:, j] = values.astype(object).to_numpy()[order]
    rows = keep.ravel()
    return pd.DataFrame(
        {
            "customer_id": pd.Series(np.repeat(ids[order], k)[rows], dtype=object),
            "name": pd.Series(np.tile(np.array(names, dtype=object), n)[rows], dtype=object),
            "number": number.ravel()[rows],
            "text": pd.Series(text.ravel()[rows], dtype=object),
        }
    )


def _extra_json(extra: pd.DataFrame) -> pd.Series:
    if extra.shape[1] == 0:
        return pd.Series([None] * len(extra), index=extra.index, dtype="str")
    lines = extra.to_json(orient="records", lines=True, force_ascii=False).splitlines()
    return pd.Series(lines, index=extra.index, dtype="str")


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


def _typed_ts(df: pd.DataFrame, cols: list[str], backend: Backend) -> pd.DataFrame:
    for c in cols:
        df[c] = backend.timestamps(df[c])
    return df


def _typed(name: str, df: pd.DataFrame, backend: Backend) -> pd.DataFrame:
    """Give raw database values their contract types."""
    spec = TABLES[name]
    for c in spec.columns:
        if c.name not in df.columns:
            continue
        if c.kind == "timestamp":
            _typed_ts(df, [c.name], backend)
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


def spec_from_store(store: Store, config: SnapshotConfig | None = None) -> SnapshotSpec:
    """``spec_for`` of everything in the store, from three small queries instead of the tables:
    what scoring a few customers needs to give them the columns the models were trained on."""
    purchases, contacts = TABLE_DEFS["purchases"], TABLE_DEFS["contacts"]
    with store._reading("reading the store's categories, channels and attributes") as conn:
        cats = tuple(
            sorted(
                conn.execute(
                    sa.select(purchases.c.category).where(purchases.c.category.is_not(None)).distinct()
                ).scalars()
            )
        )
        outbound = conn.execute(
            sa.select(contacts.c.channel)
            .where(contacts.c.direction == "outbound", contacts.c.channel.is_not(None))
            .distinct()
        ).scalars()
        chans = tuple(sorted(set(MARKETING_CHANNELS) | set(outbound)))
        attrs = tuple(sorted(conn.execute(sa.select(ATTRIBUTE_DEFS.c.name)).scalars()))
    return SnapshotSpec(config=config or SnapshotConfig(), categories=cats, channels=chans, attributes=attrs)
