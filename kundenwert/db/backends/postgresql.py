"""PostgreSQL: ``COPY`` for bulk writes of any size, ``timestamptz`` instants, the change log's
triggers in PL/pgSQL, silenced by a transaction-local setting during a bulk write."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pandas as pd
import pyarrow
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from kundenwert.db.backends.base import Backend, _quoted, chunks, prune_live_changes
from kundenwert.db.schema import LIVE_CHANGES, LIVE_TABLES

_PG_LOCK = 0x6B77_6C69  # advisory lock id of the change log ("kwli")

PG_FUNCTION = f"""
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


def pg_trigger(table: str) -> str:
    """The change log's trigger on ``table`` (PostgreSQL)."""
    return (
        f"CREATE TRIGGER kw_live_{table} AFTER INSERT OR UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION kw_live_change()"
    )


class PostgresBackend(Backend):
    """PostgreSQL: ``COPY`` for bulk writes, ``timestamptz`` instants, triggers in PL/pgSQL."""

    name = "postgresql"
    has_change_log = True
    supports_upsert = True

    def create_engine(self, url: sa.URL) -> Engine:
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        from kundenwert.settings import get_settings

        settings = get_settings()
        # Timestamps travel as UTC text (COPY); the session must read them as UTC. A stalled
        # server fails a connection or a statement in bounded time (a 503), never hangs a request.
        options = f"-c timezone=UTC -c statement_timeout={int(settings.statement_timeout * 1000)}"
        return sa.create_engine(
            url,
            pool_pre_ping=True,
            pool_timeout=settings.connect_timeout,
            connect_args={"options": options, "connect_timeout": settings.connect_timeout},
        )

    def unlimited(self, conn: Connection) -> None:
        """No statement timeout for the rest of this transaction (a bulk write of an import)."""
        conn.exec_driver_sql("SET LOCAL statement_timeout = 0")

    def prepare_dedicated(self, dbapi_connection: object) -> None:
        dbapi_connection.autocommit = True  # type: ignore[attr-defined]

    @contextmanager
    def logged_once(self, conn: Connection, touched: bool) -> Iterator[None]:
        """A transaction-local setting silences the triggers."""
        if not touched:
            yield
            return
        conn.exec_driver_sql("SET LOCAL kundenwert.bulk_write = 'on'")
        yield
        conn.exec_driver_sql("SET LOCAL kundenwert.bulk_write = 'off'")
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")  # held briefly: to the commit
        conn.execute(LIVE_CHANGES.insert().values(customer_id=None))
        prune_live_changes(conn)

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
        """COPY the frame into ``table`` (through a temporary table when upserting)."""
        dbapi = conn.connection.dbapi_connection
        target = table.name
        if upsert:
            target = f"kw_upsert_{table.name}"
            conn.exec_driver_sql(
                f'CREATE TEMPORARY TABLE "{target}" (LIKE "{table.name}" INCLUDING DEFAULTS) ON COMMIT DROP'
            )
        cols = _quoted(columns)
        with dbapi.cursor() as cur:  # type: ignore[union-attr]
            with cur.copy(f'COPY "{target}" ({cols}) FROM STDIN WITH (FORMAT csv)') as copy:
                for chunk in chunks(frame[columns], 200_000):
                    at = pyarrow.table({c: _arrow_column(chunk[c]) for c in columns})
                    buf = io.BytesIO()
                    pacsv.write_csv(at, buf, write_options=pacsv.WriteOptions(include_header=False))
                    # pyarrow writes naive timestamps without zone; they are UTC by construction.
                    copy.write(buf.getvalue())
            if upsert:
                updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c not in key)
                keys = _quoted(key)
                cur.execute(
                    f'INSERT INTO "{table.name}" ({cols}) SELECT {cols} FROM "{target}" '
                    f"ON CONFLICT ({keys}) DO UPDATE SET {updates}"
                )
                cur.execute(f'DROP TABLE "{target}"')

    def insert_rows(
        self, engine: Engine, cursor, table: sa.Table, columns: Sequence[str], rows: list[dict]
    ) -> None:
        """COPY: one round trip for the whole batch."""
        names = tuple(columns)
        with cursor.copy(f'COPY "{table.name}" ({_quoted(names)}) FROM STDIN') as copy:
            for r in rows:
                copy.write_row([r[n] for n in names])

    def _insert_ignore(self, table: sa.Table):
        from sqlalchemy.dialects.postgresql import insert

        return insert(table).on_conflict_do_nothing()

    def install_live_triggers(self, conn: Connection) -> None:
        """No lock taken when the triggers are present (CREATE OR REPLACE FUNCTION would take one)."""
        present = self.live_triggers(conn)
        missing = [t for t in LIVE_TABLES if f"kw_live_{t}" not in present]
        if missing:
            conn.exec_driver_sql(PG_FUNCTION)
            for t in missing:
                conn.exec_driver_sql(pg_trigger(t))

    def live_triggers(self, conn: Connection) -> set[str]:
        return set(conn.execute(sa.text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")).scalars())


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
    if pd.api.types.is_bool_dtype(dtype):  # numpy booleans (a scoring run's flags)
        return pyarrow.array(series.to_numpy(), type=pyarrow.bool_())
    if pd.api.types.is_integer_dtype(dtype):  # numpy integers (positions, counts)
        return pyarrow.array(series.to_numpy(dtype="int64"), type=pyarrow.int64())
    return pyarrow.array(series.astype(object).where(series.notna(), None).tolist(), type=pyarrow.string())
