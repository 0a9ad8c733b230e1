"""One class per database backend (Feast's offline stores: one subclass per backend instead of
``if dialect == ...`` through the modules).

``SqliteBackend`` (``sqlite.py``) and ``PostgresBackend`` (``postgresql.py``) are the two engines
we tune for; the base ``Backend`` (``base.py``) serves any other SQLAlchemy URL for reads and
appends. Another database is one more subclass in a file of its own, registered in ``_BY_NAME``.
``backend_for(engine | connection | dialect)`` picks the instance. Everything that depends on the database's dialect lives here:
engine creation and pragmas, instants (integer microseconds on SQLite, ``timestamptz`` on
PostgreSQL), bulk writes of any size (multi-row ``executemany`` on SQLite, ``COPY`` on
PostgreSQL), upserts, insert-or-ignore, deletes by key, the live change log's triggers, and the
columnar read of a SQLite file.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from kundenwert.db.backends.base import Backend, RawStatement, chunks, prune_live_changes
from kundenwert.db.backends.postgresql import PostgresBackend
from kundenwert.db.backends.sqlite import SqliteBackend, sqlite_triggers
from kundenwert.errors import ConfigurationError

__all__ = [
    "GENERIC",
    "POSTGRES",
    "SQLITE",
    "Backend",
    "PostgresBackend",
    "RawStatement",
    "SqliteBackend",
    "backend_for",
    "chunks",
    "make_engine",
    "prune_live_changes",
    "sqlite_triggers",
]

GENERIC = Backend()
SQLITE = SqliteBackend()
POSTGRES = PostgresBackend()
_BY_NAME: dict[str, Backend] = {"sqlite": SQLITE, "postgresql": POSTGRES}


def backend_for(bind: Engine | Connection | sa.Dialect | str) -> Backend:
    """The backend of an engine, a connection, a dialect or a dialect name."""
    if isinstance(bind, str):
        name = bind
    else:
        dialect = bind if isinstance(bind, sa.Dialect) else bind.dialect
        name = dialect.name
    return _BY_NAME.get(name, GENERIC)


def make_engine(url: str) -> Engine:
    """Create an engine through its backend (SQLite: the folder made, WAL and foreign keys on)."""
    try:
        u = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(f"KUNDENWERT_DATABASE_URL is not a database URL: {exc}") from None
    return backend_for(u.get_backend_name()).create_engine(u)
