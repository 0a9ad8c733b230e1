"""Alembic migrations: a store written before migrations is upgraded in place with every row kept;
a new store made by ``create_all`` + stamp has the schema the migrations make."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from legacy_v0 import SCORES, checksums, column_names, create_legacy_store
from typer.testing import CliRunner

from kundenwert.db.backends import backend_for, make_engine
from kundenwert.db.migrate import HEAD, current_revision, script_head, upgrade
from kundenwert.db.schema import metadata
from kundenwert.db.store import Store
from kundenwert.errors import StoreOutdated


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kw.db'}"
    return request.getfixturevalue("postgres_url")


def _schema_diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_object": lambda o, n, t, r, c: not (t == "table" and n.startswith("kw_scores_")),
                },
            )
            return compare_metadata(ctx, metadata)
    finally:
        engine.dispose()


def _shape(url: str) -> dict:
    """Tables with their columns (name, type, nullable), indexes and triggers."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            tables = {
                t: (
                    [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)],
                    sorted(i["name"] for i in insp.get_indexes(t)),
                    insp.get_pk_constraint(t)["constrained_columns"],
                )
                for t in insp.get_table_names()
            }
            return {"tables": tables, "triggers": backend_for(conn).live_triggers(conn)}
    finally:
        engine.dispose()


def test_head_constant_is_the_head_of_the_migrations() -> None:
    assert script_head() == HEAD


def test_a_new_store_has_the_schema_the_migrations_make(empty_url: str, tmp_path: Path, request) -> None:
    Store(empty_url).dispose()  # create_all + triggers + stamp head
    assert current_revision(make_engine(empty_url)) == HEAD
    assert _schema_diff(empty_url) == []
    # the same through every migration, on a second empty database
    if empty_url.startswith("sqlite"):
        other = f"sqlite:///{tmp_path / 'migrated.db'}"
    else:
        other = _new_pg_database(request.getfixturevalue("postgres_server"))
    engine = make_engine(other)
    assert upgrade(engine) == (None, HEAD)
    engine.dispose()
    assert _schema_diff(other) == []
    assert _shape(other) == _shape(empty_url)
    assert len(_shape(other)["triggers"]) >= 2


def test_a_store_written_before_migrations_is_upgraded_in_place_with_every_row(empty_url: str) -> None:
    create_legacy_store(empty_url)
    before, old_columns = checksums(empty_url), column_names(empty_url)
    assert before["customers"][0] == 400 and before["kw_decisions"][0] == 50 and before[SCORES][0] == 50
    assert before["kw_live_changes"][0] > 0  # the old triggers logged the inserts
    assert current_revision(make_engine(empty_url)) is None
    if empty_url.startswith("sqlite"):
        Store(empty_url).dispose()  # the embedded store is upgraded as it is opened
    else:
        with pytest.raises(StoreOutdated, match="run `kundenwert db upgrade`"):
            Store(empty_url)
        result = CliRunner().invoke(_cli(), ["db", "upgrade"], env={"KUNDENWERT_DATABASE_URL": empty_url})
        assert result.exit_code == 0, result.output
        assert HEAD in result.output
    assert current_revision(make_engine(empty_url)) == HEAD
    after = checksums(empty_url, old_columns)  # the columns it had (migrations add some)
    assert {t: after[t] for t in before} == before  # every row of every table kept
    assert _schema_diff(empty_url) == []
    store = Store(empty_url)
    try:
        customers = store.read_table("customers")
        assert len(customers) == 400 and {"household_size", "income_band"} <= set(customers.columns)
        assert len(backend_for(store.engine).live_triggers(store.engine.connect())) >= 2
    finally:
        store.dispose()


def test_db_current_prints_the_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kw.db'}"
    Store(url).dispose()
    result = CliRunner().invoke(_cli(), ["db", "current"], env={"KUNDENWERT_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    assert f"{HEAD} (head)" in result.output


def test_a_store_from_a_newer_kundenwert_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kw.db'}"
    Store(url).dispose()
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StoreOutdated, match="newer than this kundenwert knows"):
        Store(url)


def _new_pg_database(server: str) -> str:
    import uuid

    import psycopg

    name = f"kw_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


def _cli():
    from kundenwert.cli import app

    return app
