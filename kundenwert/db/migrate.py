"""Alembic migrations of the store, run from the package (no alembic.ini at run time).

``open_schema`` is what every command runs when it opens a store: a new store gets the head
schema (``create_all`` plus the triggers, stamped at head: the same schema as running every
migration, which the tests check); an older embedded SQLite store is upgraded in place; any other
older store is refused with the command to run (``kundenwert db upgrade``), since a shared
database should change when its owner says so. A store written before migrations existed (no
``alembic_version``) is at revision 0001 in substance: 0001 is written to adopt it (it creates
only what is missing).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from kundenwert.db.backends import backend_for
from kundenwert.db.errors import map_exceptions
from kundenwert.db.schema import metadata
from kundenwert.errors import StoreOutdated

SCRIPT_LOCATION = "kundenwert.db:migrations"
HEAD = "0004"  # the newest revision; a test checks it is the head of migrations/versions
BEFORE_MIGRATIONS = "none (written before migrations)"


def alembic_config(connection: Connection | None = None) -> Config:
    """A programmatic Alembic config pointing at the migrations inside the package."""
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()  # type: ignore[return-value]


def current_revision(engine: Engine) -> str | None:
    """The store's revision; None for a store without ``alembic_version`` (new or pre-migrations)."""
    with engine.connect() as conn:
        return _revision(conn)


def _revision(conn: Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def _has_store_tables(conn: Connection) -> bool:
    present = set(sa.inspect(conn).get_table_names())
    return bool(present & set(metadata.tables))


def describe(engine: Engine) -> str:
    """``<revision> (head)`` or what is to be done: ``kundenwert db current``."""
    with engine.connect() as conn:
        rev = _revision(conn)
        tables = _has_store_tables(conn)
    if rev is None:
        return (
            f"{BEFORE_MIGRATIONS}: run `kundenwert db upgrade`" if tables else "empty store (no tables yet)"
        )
    if rev == HEAD:
        return f"{rev} (head)"
    return f"{rev} (head is {HEAD}: run `kundenwert db upgrade`)"


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Upgrade the store to ``revision`` in one transaction; returns (before, after)."""
    with engine.begin() as conn:
        before = _revision(conn)
        command.upgrade(alembic_config(conn), revision)
        after = _revision(conn)
    return before, after or ""


def create_new(conn: Connection) -> None:
    """The head schema on an empty database: tables, triggers, stamped at head."""
    metadata.create_all(conn)
    backend_for(conn).install_live_triggers(conn)
    MigrationContext.configure(conn).stamp(ScriptDirectory.from_config(alembic_config()), HEAD)


def ensure_tables(engine: Engine, *tables: sa.Table) -> None:
    """Create ``tables`` where missing, on an engine that may not have been opened as a store
    (the service's tables are usable on any database, as they always were). A store opened by
    ``Store`` has them already (the migrations made them)."""
    with map_exceptions("creating the service's tables", ", ".join(t.name for t in tables)):
        metadata.create_all(engine, tables=list(tables), checkfirst=True)


def open_schema(engine: Engine) -> None:
    """Make sure the store has the schema this code needs (see the module doc)."""
    with engine.connect() as conn:
        rev = _revision(conn)
    if rev == HEAD:
        return
    if rev is None:
        with engine.begin() as conn:
            if _revision(conn) is None and not _has_store_tables(conn):
                create_new(conn)
                return
    where = engine.url.render_as_string(hide_password=True)
    if rev is not None and rev not in _known_revisions():
        raise StoreOutdated(
            f"the store at {where} is at schema revision {rev}, newer than this kundenwert knows "
            f"(head {HEAD}): upgrade kundenwert"
        )
    if backend_for(engine).name == "sqlite":  # the embedded store: upgraded as it is opened
        upgrade(engine)
        return
    raise StoreOutdated(
        f"the store at {where} is at schema revision {rev or BEFORE_MIGRATIONS}; this kundenwert "
        f"needs {HEAD}: run `kundenwert db upgrade` (with KUNDENWERT_DATABASE_URL set to this store)"
    )


def _known_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
