"""The backends: bulk writes of any size (COPY on PostgreSQL), insert-or-ignore, deletes by key,
and driver errors turned into one clear line."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from kundenwert.db.backends import POSTGRES, SQLITE, backend_for, make_engine
from kundenwert.db.errors import map_exceptions, store_error
from kundenwert.db.schema import API_KEYS, TARGET_LIST_MEMBERS
from kundenwert.errors import StoreConflict, StoreError, StoreUnavailable
from kundenwert.serving.scores_store import read_scores, write_scores


def test_backend_for_picks_the_class_of_the_dialect(store) -> None:
    want = SQLITE if store.engine.url.get_backend_name() == "sqlite" else POSTGRES
    assert backend_for(store.engine) is want and store.backend is want
    with store.engine.connect() as conn:
        assert backend_for(conn) is want


def test_a_scoring_run_wider_than_one_insert_allows_is_written_and_read_back(store) -> None:
    """2,000 customers x 40 pairs x 2 columns: 160,000 values, more than PostgreSQL's 65,535
    parameters of one statement (pandas' multi-row INSERT failed there)."""
    rng = np.random.default_rng(1)
    ids = [f"C{i:05d}" for i in range(2_000)]
    scores = pd.DataFrame(
        {
            "clv": rng.gamma(2, 50, len(ids)),
            "churn": rng.random(len(ids)),
            "status": rng.choice(["active", "lapsed"], len(ids)),
            "open_complaint": rng.random(len(ids)) < 0.1,
        },
        index=pd.Index(ids, name="customer_id"),
    )
    scores.loc[scores.index[::7], "churn"] = np.nan
    pairs = [(f"a{i}", ch) for i in range(20) for ch in ("email", "sms")]
    index = pd.MultiIndex.from_tuples(
        [(c, a, ch) for c in ids for a, ch in pairs], names=["customer_id", "action_id", "channel"]
    )
    propensity = pd.DataFrame(
        {"response": rng.random(len(index)), "uplift": rng.normal(0, 0.01, len(index))}, index=index
    )
    run = write_scores(store.engine, scores, propensity, pd.Timestamp("2026-01-01", tz="UTC"), {"churn": "1"})
    got, got_props, info = read_scores(store.engine)
    assert info["run_id"] == run and info["customers"] == len(ids)
    pd.testing.assert_frame_equal(
        got.sort_index(), scores.sort_index(), check_exact=True, check_index_type=False
    )
    pd.testing.assert_frame_equal(
        got_props.sort_index(), propensity.sort_index(), check_exact=True, check_index_type=False
    )


def test_bulk_write_quotes_reserved_column_names_and_deletes_by_key(store) -> None:
    b = store.backend
    members = pd.DataFrame(
        {
            "list_id": "L1",
            "position": np.arange(1, 501),
            "customer_id": [f"C{i}" for i in range(500)],
            "group": np.where(np.arange(500) % 10 == 0, "control", "target"),
            "action_id": "x",
            "score": 1.0,
            "propensity": 0.5,
            "expected_value": 2.0,
            "cost": 0.1,
        }
    )
    with store.engine.begin() as conn:
        b.bulk_write(conn, TARGET_LIST_MEMBERS, members)
        b.delete_keys(conn, TARGET_LIST_MEMBERS, members.iloc[:100], ["list_id", "customer_id"])
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(sa.func.count(), sa.func.sum(TARGET_LIST_MEMBERS.c.position))).one()
        groups = conn.execute(sa.select(TARGET_LIST_MEMBERS.c.group).distinct()).scalars().all()
    assert rows[0] == 400 and rows[1] == sum(range(101, 501))
    assert set(groups) == {"control", "target"}


def test_insert_ignore_keeps_the_first_row(store) -> None:
    row = {
        "key_id": "k1",
        "secret_sha256": "a",
        "role": "sales",
        "name": "",
        "created_at": "t",
        "revoked": False,
    }
    with store.engine.begin() as conn:
        first = conn.execute(store.backend.insert_ignore(API_KEYS).values(**row)).rowcount
        second = conn.execute(
            store.backend.insert_ignore(API_KEYS).values(**{**row, "role": "admin"})
        ).rowcount
    assert (first, second) == (1, 0)
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(API_KEYS.c.role)).scalars().all() == ["sales"]


def test_a_clash_is_one_line_naming_the_table_without_sql_or_values(store) -> None:
    row = {
        "key_id": "secret-id-1",
        "secret_sha256": "a",
        "role": "sales",
        "name": "",
        "created_at": "t",
        "revoked": False,
    }
    with store.engine.begin() as conn:
        conn.execute(API_KEYS.insert().values(**row))
    with (
        pytest.raises(StoreConflict) as caught,
        map_exceptions("storing the key", "kw_api_keys"),
        store.engine.begin() as conn,
    ):
        conn.execute(API_KEYS.insert().values(**row))
    text = str(caught.value)
    assert "\n" not in text and "kw_api_keys" in text and "storing the key" in text
    assert "INSERT" not in text and "secret-id-1" not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_locked_database_is_unavailable_not_a_bug() -> None:
    params = [("C1", 1.0)] * 50_000
    exc = sa.exc.OperationalError(
        "INSERT INTO purchases VALUES (?, ?)" * 1000, params, sqlite3.OperationalError("database is locked")
    )
    err = store_error(exc, "writing purchases", "purchases")
    assert isinstance(err, StoreUnavailable) and isinstance(err, StoreError) and err.http_status == 503
    assert (
        str(err)
        == "writing purchases (table purchases) failed: the store is unavailable: database is locked; retry later"
    )


def test_an_unreachable_postgresql_is_one_clear_line(tmp_path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://kw@127.0.0.1:{port}/kw"
    from kundenwert.db.store import Store

    with pytest.raises(StoreUnavailable, match="opening the store at postgresql"):
        Store(url)
    from kundenwert.cli import app

    result = CliRunner().invoke(app, ["db", "current"], env={"KUNDENWERT_DATABASE_URL": url})
    assert result.exit_code == 2
    assert (
        result.output.count("\n") <= 2 and "unavailable" in result.output and "Traceback" not in result.output
    )
    make_engine(url).dispose()


ODD_IDS = ["a%b", "50%", "%", "x_y", "o'neil", 'say "hi"', "back\\slash", "ctl\u0001char", "%(x)s", "?"]


def test_ids_are_bound_so_percent_quotes_and_control_characters_are_just_characters(store) -> None:
    """The batch reads (``read_for_customers``, online scoring's ``read_tables_for_customers``)
    and a request's live reads find exactly the customers named by odd ids: ``%`` is no
    placeholder (on PostgreSQL such an id was never found) and no wildcard, ``_`` no pattern,
    a quote no end of a literal, a control character no error."""
    from kundenwert.db.schema import TABLE_DEFS
    from kundenwert.serving.live import LiveReader

    at = pd.Timestamp("2025-01-01", tz="UTC")
    ids = [*ODD_IDS, "ab", "50", "xay", "x"]  # what a pattern or a mangled placeholder would match
    with store.engine.begin() as conn:
        conn.execute(
            TABLE_DEFS["customers"].insert(),
            [{"customer_id": i, "created_at": at, "customer_type": "consumer"} for i in ids],
        )
        conn.execute(
            TABLE_DEFS["consents"].insert(),
            [
                {
                    "customer_id": i,
                    "channel": "email",
                    "granted": True,
                    "recorded_at": at,
                    "double_opt_in": True,
                }
                for i in ids
            ],
        )
    for cid in ODD_IDS:
        got = store.read_for_customers("customers", [cid], ["customer_id"])
        assert got["customer_id"].tolist() == [cid], cid
        consents = store.read_for_customers("consents", [cid, "not-there"])
        assert consents["customer_id"].tolist() == [cid], cid
    both = store.read_for_customers("customers", ODD_IDS, ["customer_id"])
    assert sorted(both["customer_id"]) == sorted(ODD_IDS)
    tables = store.read_tables_for_customers(["customers", "consents"], ODD_IDS)
    assert sorted(tables["customers"]["customer_id"]) == sorted(ODD_IDS)
    assert sorted(tables["consents"]["customer_id"]) == sorted(ODD_IDS)
    reader = LiveReader(store.engine)
    for cid in ODD_IDS:
        consents, _contacts, exists = reader.rows(cid)
        assert exists and len(consents) == 1, cid


def test_a_nul_in_an_id_is_not_found_or_refused_as_data_never_a_bug(store) -> None:
    """SQLite stores any text: a NUL id is simply not there. PostgreSQL text cannot hold NUL:
    the driver refuses the value, which leaves as our ``StoreDataError`` (a 422), never a 500."""
    from kundenwert.errors import StoreDataError

    if store.backend.name == "sqlite":
        assert store.read_for_customers("customers", ["a\u0000b"]).empty
    else:
        with pytest.raises(StoreDataError):
            store.read_for_customers("customers", ["a\u0000b"])


def test_a_stalled_postgresql_fails_in_bounded_time(postgres_url, monkeypatch, tmp_path) -> None:
    """A server that accepts the connection but never answers, and a statement that runs too
    long: both leave as ``StoreUnavailable`` (a 503) within the configured timeouts instead of
    hanging the request; an import's bulk write is exempt from the statement timeout."""
    import socket
    import time

    from kundenwert.db.store import Store
    from kundenwert.features.importer import import_folder

    monkeypatch.setenv("KUNDENWERT_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("KUNDENWERT_STATEMENT_TIMEOUT", "0.5")
    with socket.socket() as silent:  # the TCP handshake completes (backlog); no reply ever comes
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            Store(f"postgresql+psycopg://kw@127.0.0.1:{port}/kw")
        assert time.monotonic() - t0 < 5
    store = Store(postgres_url)
    try:
        t0 = time.monotonic()
        with (
            pytest.raises(StoreUnavailable, match="statement timeout"),
            map_exceptions("reading"),
            store.engine.connect() as conn,
        ):
            conn.execute(sa.text("SELECT pg_sleep(5)"))
        assert time.monotonic() - t0 < 3
        from tests.conftest import DATA

        import_folder(DATA / "good", store, mode="replace", now=pd.Timestamp("2026-01-01", tz="UTC"))
        with store.engine.begin() as conn:
            store.backend.unlimited(conn)
            conn.execute(sa.text("SELECT pg_sleep(0.8)"))  # longer than the limit: not cancelled
    finally:
        store.dispose()


def test_key_order_is_seen_without_a_sort() -> None:
    from kundenwert.db.backends.sqlite import _in_key_order

    df = pd.DataFrame(
        {
            "a": pd.Series(["1", "1", "2", "ä"], dtype="str"),
            "b": pd.Series(["x", "y", "a", "a"], dtype=object),
            "t": pd.to_datetime(["2024-01-02", "2024-01-01", "2024-01-01", "2024-01-01"], utc=True),
        }
    )
    assert (
        _in_key_order(df, ["a", "b"]) and _in_key_order(df, ["a"]) and _in_key_order(df.iloc[:1], ["a", "b"])
    )
    assert not _in_key_order(df, ["b", "a"]) and not _in_key_order(df, ["a", "t"])
    assert not _in_key_order(df.iloc[[1, 0]], ["a", "b"])
    assert _in_key_order(df.iloc[[0, 2]], ["a", "t"])


def test_custom_attributes_become_rows_in_key_order_without_missing_values() -> None:
    from kundenwert.db.store import _attributes_long

    attrs = pd.DataFrame(
        {
            "size": [3.0, np.nan, 1.0],
            "band": pd.array(["high", "low", None], dtype="str"),
        },
        index=pd.Index(["C2", "C10", "0042"], name="customer_id"),
    )
    long = _attributes_long(attrs, {"size": "number", "band": "text"})
    assert list(zip(long["customer_id"], long["name"], strict=True)) == [
        ("0042", "size"),
        ("C10", "band"),
        ("C2", "band"),
        ("C2", "size"),
    ]
    assert long["number"].tolist()[3] == 3.0 and long["number"].tolist()[0] == 1.0
    assert np.isnan(long["number"].tolist()[1]) and long["text"].tolist()[:3] == [None, "low", "high"]
