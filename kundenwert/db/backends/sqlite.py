"""SQLite, the embedded default: one writer, WAL, instants as integer microseconds, multi-row
``executemany`` for bulk writes, triggers dropped and made again around a bulk write."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from kundenwert.db.backends.base import Backend, _quoted, chunks, prune_live_changes
from kundenwert.db.schema import LIVE_CHANGES, LIVE_TABLES


class SqliteBackend(Backend):
    """SQLite, the embedded default: one writer, WAL, instants as integer microseconds."""

    name = "sqlite"
    single_writer = True
    has_change_log = True
    supports_upsert = True
    _PER_STATEMENT = 150  # the decision log: 750 parameters, under SQLite's oldest limit of 999

    def create_engine(self, url: sa.URL) -> Engine:
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        from kundenwert.settings import get_settings

        # how long a write waits for another writer's lock (sqlite3's own default is 5 s)
        engine = sa.create_engine(url, connect_args={"timeout": get_settings().busy_timeout})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    def timestamp_type(self) -> sa.types.TypeEngine:
        return sa.BigInteger()

    def timestamp_to_db(self, value: object) -> object:
        if value is None or value is pd.NaT:
            return None
        ts = pd.Timestamp(value)
        ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
        return int(ts.value // 1000)

    def timestamp_from_db(self, value: object) -> datetime | None:
        if value is None:
            return None
        return pd.Timestamp(int(value), unit="us", tz="UTC").to_pydatetime()  # type: ignore[call-overload]

    def timestamps(self, s: pd.Series) -> pd.Series:
        return pd.to_datetime(pd.to_numeric(s, errors="coerce"), unit="us", utc=True).astype(
            "datetime64[us, UTC]"
        )

    def _instants(self, values: np.ndarray) -> np.ndarray:
        return values.view("int64").astype(object)

    @contextmanager
    def write_transaction(self, engine: Engine, *, durable: bool = False) -> Iterator[Connection]:
        """``BEGIN IMMEDIATE``: the write lock is taken first, waiting its turn (a transaction
        that read first and then writes fails at once when another writer got in between).
        ``durable``: committed with ``synchronous=FULL`` (the WAL synced at the commit; the
        engine's NORMAL may lose the last commits on a power loss, never corrupts), on this
        connection only and set back before it returns to the pool."""
        with engine.connect() as conn:
            if durable:
                conn.exec_driver_sql("PRAGMA synchronous=FULL")  # before the transaction
                conn.commit()
            try:
                with conn.begin():
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    yield conn
            finally:
                if durable:
                    try:
                        conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
                        conn.commit()
                    except Exception:  # noqa: BLE001  a broken connection leaves the pool instead
                        conn.invalidate()

    @contextmanager
    def bulk_session(self, conn: Connection) -> Iterator[None]:
        # References were validated against file and store; SQLite's per-row foreign-key
        # lookups would only repeat that. The PRAGMA must come before the transaction.
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.commit()
        try:
            yield
        finally:
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            conn.commit()

    @contextmanager
    def logged_once(self, conn: Connection, touched: bool) -> Iterator[None]:
        """The triggers are dropped and created again inside the transaction (one writer: no
        other write can slip in between)."""
        if not touched:
            yield
            return
        for table in LIVE_TABLES:
            for op in ("insert", "update", "delete"):
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS kw_live_{table}_{op}")
        yield
        for table in LIVE_TABLES:
            for ddl in sqlite_triggers(table):
                conn.exec_driver_sql(ddl)
        conn.execute(LIVE_CHANGES.insert().values(customer_id=None))
        prune_live_changes(conn)

    @contextmanager
    def indexes_rebuilt_after(self, conn: Connection, table: sa.Table, incoming: int) -> Iterator[None]:
        """Drop a table's secondary indexes for a large load and build them afterwards.

        Maintaining an index row by row in random key order is several times slower than building it
        once by sorting. Inside the caller's transaction, so a failure leaves the indexes as they were.
        """
        if not table.indexes:
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

    def _bulk_write(
        self,
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
        if key and not _in_key_order(frame, key):
            # B-tree inserts in key order append at the right edge instead of splitting pages at random.
            frame = frame.sort_values(key, kind="stable")
        width = len(columns)
        per = max(1, min(200, 32_000 // width))
        row_ph = "(" + ", ".join("?" for _ in columns) + ")"
        head = f'INSERT INTO "{table.name}" ({_quoted(columns)}) VALUES '
        tail = ""
        if upsert:
            updates = (
                ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c not in key)
                or f'"{key[0]}" = excluded."{key[0]}"'
            )
            tail = f" ON CONFLICT ({_quoted(key)}) DO UPDATE SET {updates}"
        many_sql = head + ", ".join([row_ph] * per) + tail
        one_sql = head + row_ph + tail
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            for chunk in chunks(frame[columns]):
                n = len(chunk)
                flat: list = [None] * (n * width)
                for j, c in enumerate(columns):  # interleave column values row by row, at C speed
                    flat[j::width] = self.python_values(chunk[c])
                full = n // per * per
                step = per * width
                if full:
                    cursor.executemany(many_sql, (flat[i : i + step] for i in range(0, full * width, step)))  # type: ignore[arg-type]  # sqlite3 takes any iterable
                if full < n:
                    rest = flat[full * width :]
                    cursor.executemany(one_sql, (rest[i : i + width] for i in range(0, len(rest), width)))  # type: ignore[arg-type]
        finally:
            cursor.close()

    def insert_rows(
        self, engine: Engine, cursor, table: sa.Table, columns: Sequence[str], rows: list[dict]
    ) -> None:
        """Many rows per INSERT: ``executemany`` steps once per row, and every step hands the GIL
        over and back (measured: next-best-action throughput 0.58x of the bare route unpinned
        with per-row steps; see the issue note)."""
        names = tuple(columns)
        for start in range(0, len(rows), self._PER_STATEMENT):
            chunk = rows[start : start + self._PER_STATEMENT]
            sql = _sqlite_multi_insert(table.name, names, len(chunk))
            cursor.execute(sql, [r[n] for r in chunk for n in names])

    def _insert_ignore(self, table: sa.Table):
        from sqlalchemy.dialects.sqlite import insert

        return insert(table).on_conflict_do_nothing()

    def delete_keys(self, conn: Connection, table: sa.Table, keys: pd.DataFrame, key_cols: list[str]) -> None:
        if len(keys) == 0:
            return
        where = " AND ".join(f'"{k}" = ?' for k in key_cols)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(
                f'DELETE FROM "{table.name}" WHERE {where}', keys[key_cols].itertuples(index=False, name=None)
            )
        finally:
            cursor.close()

    def install_live_triggers(self, conn: Connection) -> None:
        for table in LIVE_TABLES:
            for ddl in sqlite_triggers(table):
                conn.exec_driver_sql(ddl)

    def live_triggers(self, conn: Connection) -> set[str]:
        return set(conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars())

    def read_columnar(
        self,
        engine: Engine,
        selects: Mapping[str, sa.Select],
        counts: Mapping[str, int],
        weights: Mapping[str, float],
        *,
        ordered: bool,
        split_rows: int,
    ) -> dict[str, pyarrow.Table] | None:
        """On a SQLite file the tables are read columnar in child processes (see ``arrow_reader``)."""
        database = engine.url.database
        if not database or database == ":memory:":
            return None
        from kundenwert.db.arrow_reader import read_columnar

        queries: dict[str, list[str]] = {}
        with engine.connect() as conn:
            for name, stmt in selects.items():
                # In storage order, big tables are read in rowid ranges by both children at once.
                top = conn.exec_driver_sql(f"SELECT max(rowid) FROM {name}").scalar() or 0
                cuts = [0, top] if ordered or counts[name] < split_rows else [0, top // 2, top]
                queries[name] = [
                    str(
                        self.compile(
                            engine,
                            stmt.where(sa.text(f"{name}.rowid > {lo} AND {name}.rowid <= {hi}")),
                            literal=True,
                        )
                    )
                    if len(cuts) > 2
                    else str(self.compile(engine, stmt, literal=True))
                    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)
                ]
        return read_columnar(database, queries, dict(weights))


def _arrow(series: pd.Series) -> pyarrow.Array | pyarrow.ChunkedArray:
    if isinstance(series.array, pd.arrays.ArrowStringArray | pd.arrays.DatetimeArray):
        return pyarrow.array(series.array)
    return pyarrow.array(series.to_numpy(dtype=object), from_pandas=True)


def _in_key_order(frame: pd.DataFrame, key: list[str]) -> bool:
    """Whether the rows come in ascending ``key`` order already (one pass of comparisons of each
    row with the next, in Arrow; SQLite compares text bytewise, as Arrow does)."""
    if len(key) == 1:
        return bool(frame[key[0]].is_monotonic_increasing)
    try:
        arrays = [_arrow(frame[k]) for k in key]
    except (pyarrow.ArrowException, TypeError, ValueError):
        return False
    prev, nxt = [a[:-1] for a in arrays], [a[1:] for a in arrays]
    ordered = pc.less_equal(prev[-1], nxt[-1])
    for p, q in zip(reversed(prev[:-1]), reversed(nxt[:-1]), strict=True):
        ordered = pc.or_(pc.less(p, q), pc.and_(pc.equal(p, q), ordered))
    return len(frame) < 2 or pc.all(ordered).as_py() is True


@functools.lru_cache(maxsize=256)
def _sqlite_multi_insert(table: str, names: tuple[str, ...], n: int) -> str:
    one = "(" + ", ".join("?" * len(names)) + ")"
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES " + ", ".join([one] * n)


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cur = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA cache_size=-262144")  # 256 MiB page cache for bulk loads
    cur.close()


def sqlite_triggers(table: str) -> list[str]:
    """The change log's three triggers on ``table`` (SQLite)."""
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
