"""Alembic's environment for the store: the target is ``kundenwert.db.schema.metadata``.

Run through ``kundenwert db upgrade`` (``kundenwert.db.migrate``), which passes an open
connection in ``config.attributes["connection"]``; a URL in ``sqlalchemy.url`` works too.
"""

from __future__ import annotations

from alembic import context

from kundenwert.db.schema import metadata

config = context.config


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """A scoring run's own table (``kw_scores_<run>``) is data, not schema."""
    return not (type_ == "table" and name is not None and name.startswith("kw_scores_"))


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE by copy on SQLite
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from kundenwert.db.backends import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("kundenwert's migrations run online only: `kundenwert db upgrade`")
run_migrations_online()
