"""Import into the store: round trips, modes, and the malformed-input corpus (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from kundenwert.errors import (
    ConfigurationError,
    ContractViolation,
    ImportConflict,
    InputFileError,
    KundenwertError,
)
from kundenwert.features.importer import import_folder

DATA = Path(__file__).parents[1] / "data"
NOW = pd.Timestamp("2026-01-01", tz="UTC")
BAD_CASES = sorted(p.name for p in (DATA / "bad").iterdir() if p.is_dir())


def test_corpus_has_at_least_30_malformed_inputs() -> None:
    assert len(BAD_CASES) >= 30


def test_round_trip_keeps_types_ids_attributes_and_extra_columns(store) -> None:
    rows = import_folder(DATA / "good", store, mode="append", now=NOW).rows
    assert rows["customers"] == 4 and rows["purchases"] == 5 and rows["contacts"] == 3
    cust = store.read_table("customers").set_index("customer_id")
    # Identifiers stay text (leading zeros kept); offsets become UTC.
    assert "0042" in cust.index
    assert cust.loc["C2", "created_at"] == pd.Timestamp("2024-02-01T08:00:00", tz="UTC")
    assert cust.loc["C1", "postal_code"] == "01067"
    # Custom attributes come back typed: numbers as numbers, text as text; empty stays missing.
    assert cust["household_size"].dtype == "float64"
    assert cust.loc["C1", "household_size"] == 3.0 and pd.isna(cust.loc["C2", "household_size"])
    assert cust.loc["C4", "lifestyle_segment"] == "urban_professional"
    assert cust.loc["C1", "birth_year"] == 1980 and pd.isna(cust.loc["C2", "birth_year"])
    purchases = store.read_table("purchases").set_index("purchase_id")
    # The category comes from products when the file leaves it empty; quantity defaults to 1.
    assert purchases.loc["P1", "category"] == "books"
    assert purchases.loc["P5", "amount"] == -30.0
    assert json.loads(purchases.loc["P1", "extra"]) == {"note": "first order"}
    contacts = store.read_table("contacts").set_index("contact_id")
    assert bool(contacts.loc["K2", "is_control"]) is True and pd.isna(contacts.loc["K3", "is_control"])
    consents = store.read_table("consents")
    assert set(consents["channel"]) == {"email", "*"}
    complaints = store.read_table("complaints").set_index("complaint_id")
    assert pd.isna(complaints.loc["R2", "closed_at"]) and complaints.loc["R2", "severity"] == 4


@pytest.mark.parametrize("case", BAD_CASES)
def test_malformed_input_is_rejected_and_store_unchanged(store, case: str) -> None:
    import_folder(DATA / "good", store, mode="append", now=NOW)
    before = store.fingerprint()
    expect = json.loads((DATA / "bad" / case / "expect.json").read_text())
    with pytest.raises(KundenwertError) as info:
        import_folder(DATA / "bad" / case, store, mode="replace", now=NOW)
    exc = info.value
    message = str(exc)
    assert f"table {expect['table']}" in message
    if isinstance(exc, ContractViolation):
        matching = [
            i
            for i in exc.issues
            if i.table == expect["table"]
            and ("row" not in expect or i.row == expect["row"])
            and ("column" not in expect or i.column == expect["column"])
            and expect["rule"] in i.rule
        ]
        assert matching, f"expected {expect}, got:\n{message}"
        if "row" in expect:
            assert f"row {expect['row']}" in message
        if "column" in expect:
            assert f"column {expect['column']}" in message
    else:
        assert isinstance(exc, InputFileError) and expect["rule"] in message
    assert store.fingerprint() == before


def test_append_refuses_existing_ids_and_writes_nothing(store, tmp_path: Path) -> None:
    import_folder(DATA / "good", store, mode="append", now=NOW)
    before = store.fingerprint()
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "purchases.csv").write_text(
        "purchase_id,customer_id,purchased_at,category,amount\nP9,C1,2024-07-01,books,10\nP2,C1,2024-07-02,books,11\n"
    )
    with pytest.raises(ImportConflict) as info:
        import_folder(folder, store, mode="append", now=NOW)
    assert "row 2, column purchase_id, value 'P2'" in str(info.value)
    assert "--mode upsert" in str(info.value)
    assert store.fingerprint() == before


def test_append_adds_new_rows_referring_to_stored_customers(store, tmp_path: Path) -> None:
    import_folder(DATA / "good", store, mode="append", now=NOW)
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "contacts.csv").write_text(
        "contact_id,customer_id,contacted_at,channel,direction\nK10,0042,2024-08-01,phone,inbound\n"
    )
    assert import_folder(folder, store, mode="append", now=NOW).rows == {"contacts": 1}
    assert store.counts()["contacts"] == 4
    # A reference to a customer neither in the file nor in the store is still refused.
    (folder / "contacts.csv").write_text(
        "contact_id,customer_id,contacted_at,channel,direction\nK11,nobody,2024-08-01,phone,inbound\n"
    )
    with pytest.raises(ContractViolation, match="row 1, column customer_id"):
        import_folder(folder, store, mode="append", now=NOW)


def test_upsert_updates_existing_rows_and_attributes(store, tmp_path: Path) -> None:
    import_folder(DATA / "good", store, mode="append", now=NOW)
    folder = tmp_path / "up"
    shutil.copytree(DATA / "good", folder)
    text = (folder / "customers.csv").read_text()
    (folder / "customers.csv").write_text(
        text.replace(
            "C4,2024-03-15,consumer,1999,m,10115,Berlin,1", "C4,2024-03-15,consumer,1998,m,10115,Berlin,2"
        )
    )
    (folder / "purchases.csv").write_text(
        "purchase_id,customer_id,purchased_at,category,amount\nP2,C1,2024-05-06,garden,65.5\nP6,C4,2024-06-01,books,9\n"
    )
    result = import_folder(folder, store, mode="upsert", now=NOW)
    assert result.rows["purchases"] == 2
    purchases = store.read_table("purchases").set_index("purchase_id")
    assert len(purchases) == 6 and purchases.loc["P2", "amount"] == 65.5
    cust = store.read_table("customers").set_index("customer_id")
    assert cust.loc["C4", "birth_year"] == 1998 and cust.loc["C4", "household_size"] == 2.0
    assert store.counts()["customers"] == 4


def test_upsert_may_not_move_registration_after_stored_purchases(store, tmp_path: Path) -> None:
    import_folder(DATA / "good", store, mode="append", now=NOW)
    before = store.fingerprint()
    folder = tmp_path / "up"
    folder.mkdir()
    (folder / "customers.csv").write_text("customer_id,created_at,customer_type\nC1,2024-03-01,consumer\n")
    with pytest.raises(ContractViolation, match="earliest stored purchase"):
        import_folder(folder, store, mode="upsert", now=NOW)
    assert store.fingerprint() == before


def test_custom_attribute_keeps_its_stored_type(store, tmp_path: Path) -> None:
    import_folder(DATA / "good", store, mode="append", now=NOW)
    folder = tmp_path / "up"
    folder.mkdir()
    (folder / "customers.csv").write_text(
        "customer_id,created_at,customer_type,household_size\nC9,2024-03-01,consumer,two\n"
    )
    with pytest.raises(ContractViolation, match="stored as a number"):
        import_folder(folder, store, mode="append", now=NOW)


def test_replace_makes_the_folder_the_whole_store(store, tmp_path: Path) -> None:
    import_folder(DATA / "good", store, mode="append", now=NOW)
    folder = tmp_path / "small"
    folder.mkdir()
    (folder / "customers.csv").write_text("customer_id,created_at,customer_type\nX1,2024-03-01,consumer\n")
    (folder / "purchases.csv").write_text(
        "purchase_id,customer_id,purchased_at,category,amount\nQ1,X1,2024-03-02,books,5\n"
    )
    import_folder(folder, store, mode="replace", now=NOW)
    counts = store.counts()
    assert counts["customers"] == 1 and counts["purchases"] == 1 and counts["contacts"] == 0
    assert counts["customer_attributes"] == 0


def test_a_folder_without_purchases_imports(store, tmp_path: Path) -> None:
    """Products sold in another system: customers, contacts, consents, complaints and nothing else."""
    import_folder(DATA / "good", store, mode="append", now=NOW)
    folder = tmp_path / "no_purchases"
    shutil.copytree(DATA / "good", folder)
    for name in ("purchases", "products", "offers"):
        (folder / f"{name}.csv").unlink()
    rows = import_folder(folder, store, mode="replace", now=NOW).rows
    assert "purchases" not in rows and rows["customers"] == 4 and rows["contacts"] == 3
    counts = store.counts()
    assert counts["purchases"] == 0 and counts["products"] == 0 and counts["complaints"] == 2
    assert store.read_table("purchases").empty


def test_parquet_and_csv_give_the_same_store(tmp_path: Path) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from kundenwert.db.store import Store

    pq_dir = tmp_path / "pq"
    pq_dir.mkdir()
    for f in (DATA / "good").glob("*.csv"):
        pq.write_table(
            pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(strings_can_be_null=True)),
            pq_dir / f"{f.stem}.parquet",
        )
    a, b = Store(f"sqlite:///{tmp_path / 'a.db'}"), Store(f"sqlite:///{tmp_path / 'b.db'}")
    import_folder(DATA / "good", a, mode="append", now=NOW)
    import_folder(pq_dir, b, mode="append", now=NOW)
    fa, fb = a.fingerprint(), b.fingerprint()
    for table in ("customers", "purchases", "contacts", "consents", "complaints", "offers"):
        assert fa[table][0] == fb[table][0], table
    pd.testing.assert_frame_equal(
        a.read_table("purchases").drop(columns="extra"), b.read_table("purchases").drop(columns="extra")
    )


def test_empty_folder_is_a_clear_error(sqlite_store, tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no table files"):
        import_folder(tmp_path, sqlite_store)
    with pytest.raises(InputFileError, match="does not exist"):
        import_folder(tmp_path / "nope", sqlite_store)


def test_attribute_kinds_are_inferred_and_kept(sqlite_store, tmp_path: Path) -> None:
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "customers.csv").write_text(
        "customer_id,created_at,customer_type,score,branch_code,segment\n"
        "A,2024-01-01,consumer,1.5,007,x\nB,2024-01-01,consumer,,012,\n"
    )
    (folder / "purchases.csv").write_text("purchase_id,customer_id,purchased_at,category,amount\n")
    import_folder(folder, sqlite_store, mode="append", now=NOW)
    assert sqlite_store.attribute_kinds() == {"score": "number", "branch_code": "text", "segment": "text"}
    c = sqlite_store.read_table("customers").set_index("customer_id")
    assert c.loc["A", "branch_code"] == "007" and c.loc["A", "score"] == 1.5 and pd.isna(c.loc["B", "score"])
    # A later file whose numeric attribute has leading zeros still stores numbers (the kind is kept).
    (folder / "customers.csv").write_text(
        "customer_id,created_at,customer_type,score\nC,2024-01-01,consumer,02\n"
    )
    import_folder(folder, sqlite_store, mode="append", now=NOW)
    assert sqlite_store.read_table("customers").set_index("customer_id").loc["C", "score"] == 2.0


def test_columnar_reads_equal_row_reads_and_keep_the_database_sound(sqlite_store, tmp_path: Path) -> None:
    """The child-process columnar reader gives the same frames, is really used, and interleaving it
    with writes through sqlite3 loses nothing and leaves the file intact."""
    names = ("customers", "products", "purchases", "contacts", "consents", "complaints", "offers")
    import_folder(DATA / "good", sqlite_store, mode="append", now=NOW)
    fast = sqlite_store.read_tables(names)
    assert sqlite_store.last_read_was_columnar
    for name in names:
        pd.testing.assert_frame_equal(fast[name], sqlite_store.read_table(name), obj=name)
    # Chosen columns in storage order, big tables split into rowid ranges read by two children.
    sqlite_store.split_rows = 1
    cols = {"purchases": ["customer_id", "amount", "margin"], "contacts": ["contact_id", "outcome"]}
    some = sqlite_store.read_tables(names, cols, ordered=False)
    assert sqlite_store.last_read_was_columnar
    for name in names:
        want = sqlite_store.read_table(name, cols.get(name))
        got = some[name]
        assert list(got.columns) == list(want.columns), name
        pd.testing.assert_frame_equal(
            got.sort_values(list(got.columns)).reset_index(drop=True),
            want.sort_values(list(want.columns)).reset_index(drop=True),
            obj=name,
        )
    with pytest.raises(ConfigurationError, match="no column"):
        sqlite_store.read_tables(["purchases"], {"purchases": ["amount", "price"]})
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "purchases.csv").write_text(
        "purchase_id,customer_id,purchased_at,category,amount\nP7,C4,2024-07-01,books,7\n"
    )
    import_folder(folder, sqlite_store, mode="append", now=NOW)
    assert len(sqlite_store.read_tables(("purchases",))["purchases"]) == 6
    (folder / "purchases.csv").write_text(
        "purchase_id,customer_id,purchased_at,category,amount\nP7,C4,2024-07-01,books,8\n"
    )
    import_folder(folder, sqlite_store, mode="upsert", now=NOW)
    again = sqlite_store.read_tables(("purchases",))["purchases"].set_index("purchase_id")
    assert again.loc["P7", "amount"] == 8.0 and len(again) == 6
    with sqlite_store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"


def test_a_failed_write_leaves_the_change_log_triggers_in_place(store, monkeypatch) -> None:
    """The triggers a bulk write silences (SQLite: drops) are back after a write that failed."""
    import_folder(DATA / "good", store, mode="replace", now=NOW)
    with store.engine.connect() as conn:
        triggers = store.backend.live_triggers(conn)
    assert triggers

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "_write", broken)
    with pytest.raises(RuntimeError):
        import_folder(DATA / "good", store, mode="replace", now=NOW)
    with store.engine.connect() as conn:
        assert store.backend.live_triggers(conn) == triggers


FUZZED_TABLES = ("customers", "purchases", "products", "contacts", "consents", "complaints", "offers")


def _fuzzed_folder(folder: Path, table: str, suffix: str, content: bytes) -> Path:
    """The good folder with ``table``'s file replaced by ``content`` (as .csv or .parquet)."""
    shutil.copytree(DATA / "good", folder)
    (folder / f"{table}.csv").unlink()
    (folder / f"{table}{suffix}").write_bytes(content)
    return folder


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("table", FUZZED_TABLES)
def test_an_unreadable_file_is_refused_by_the_cli_in_one_line_naming_it(
    tmp_path: Path, monkeypatch, table: str, suffix: str
) -> None:
    """Random bytes (several seeds) as any table's file, CSV or Parquet: ``kundenwert import``
    exits 2 with one ``error:`` line naming the file, no traceback, and the store as it was."""
    import random

    from typer.testing import CliRunner

    from kundenwert.cli import app
    from kundenwert.db.store import Store

    monkeypatch.setenv("KUNDENWERT_HOME", str(tmp_path))
    monkeypatch.delenv("KUNDENWERT_DATABASE_URL", raising=False)
    runner = CliRunner()
    r = runner.invoke(app, ["import", str(DATA / "good"), "--mode", "replace"])
    assert r.exit_code == 0, r.output
    store = Store(f"sqlite:///{tmp_path / 'kundenwert.db'}")
    before = store.fingerprint()
    for seed in range(4):
        rnd = random.Random(seed)
        content = bytes(rnd.getrandbits(8) for _ in range(rnd.choice([64, 300, 5_000])))
        if seed == 3 and suffix == ".csv":  # text, but in another encoding (Latin-1) from row 2 on
            content = (DATA / "good" / f"{table}.csv").read_bytes() + "Müller,ß\n".encode("latin-1")
        folder = _fuzzed_folder(tmp_path / f"{table}-{seed}", table, suffix, content)
        r = runner.invoke(app, ["import", str(folder), "--mode", "replace"], env={"COLUMNS": "300"})
        assert r.exit_code == 2, (seed, r.output, r.exception)
        assert isinstance(r.exception, SystemExit), (seed, r.exception)
        lines = r.stderr.strip().splitlines()
        assert lines[0].startswith("error: ") and "Traceback" not in r.output + r.stderr, r.stderr
        if seed == 3 and suffix == ".csv":  # located: the row and column, and the file named
            assert f"table {table}, row " in r.stderr and f"{table}.csv is not valid UTF-8" in r.stderr
        else:
            assert len(lines) == 1, (seed, r.stderr)
            assert f"{table}{suffix} (table {table}) cannot be read" in lines[0], lines[0]
    assert store.fingerprint() == before
    store.dispose()


def test_a_truncated_parquet_file_is_refused_naming_it(sqlite_store, tmp_path: Path) -> None:
    good = pd.read_csv(DATA / "good" / "purchases.csv", dtype=str)
    folder = tmp_path / "whole"
    shutil.copytree(DATA / "good", folder)
    (folder / "purchases.csv").unlink()
    good.to_parquet(folder / "purchases.parquet")
    import_folder(folder, sqlite_store, mode="replace", now=NOW)  # whole: it imports
    before = sqlite_store.fingerprint()
    data = (folder / "purchases.parquet").read_bytes()
    (folder / "purchases.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match=r"purchases\.parquet \(table purchases\) cannot be read"):
        import_folder(folder, sqlite_store, mode="replace", now=NOW)
    assert sqlite_store.fingerprint() == before


def test_binary_bytes_in_a_csv_never_reach_the_user_as_a_traceback(tmp_path: Path) -> None:
    """The reported case: purchases.csv holding binary bytes, through the real command line."""
    import os
    import subprocess
    import sys

    folder = _fuzzed_folder(
        tmp_path / "bin", "purchases", ".csv", b"purchase_id,customer_id\rx\n\x89PNG\r\n\x1a\n\xff\xfe"
    )
    env = {**os.environ, "KUNDENWERT_HOME": str(tmp_path), "COLUMNS": "300"}
    env.pop("KUNDENWERT_DATABASE_URL", None)
    r = subprocess.run(
        [sys.executable, "-m", "kundenwert.cli", "import", str(folder), "--mode", "replace"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert r.stderr.startswith("error: purchases.csv (table purchases) cannot be read"), r.stderr


def _sqlite_shape(store) -> tuple[list, set[str]]:
    with store.engine.connect() as conn:
        indexes = conn.exec_driver_sql(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name"
        ).all()
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"
        return [tuple(r) for r in indexes], store.backend.live_triggers(conn)


@pytest.mark.parametrize("fail_in", ["purchases", "contacts", "customer_attributes"])
def test_a_failure_in_the_middle_of_the_bulk_write_leaves_the_store_as_it_was(
    sqlite_store, tmp_path: Path, monkeypatch, fail_in: str
) -> None:
    """The fast path fails after some chunks of a large table are in (its indexes dropped for the
    load, the triggers dropped for the transaction): nothing of it stays, indexes and triggers
    included."""
    from kundenwert.datasets.sample import generate_world, write_world
    from kundenwert.db.backends import sqlite as sqlite_backend
    from kundenwert.db.backends.base import chunks

    world = tmp_path / "world"
    write_world(generate_world(1_500, seed=4), world)  # about 16,000 purchases: the indexes are rebuilt
    import_folder(DATA / "good", sqlite_store, mode="append", now=NOW)
    before, shape = sqlite_store.fingerprint(), _sqlite_shape(sqlite_store)

    monkeypatch.setattr(sqlite_backend, "chunks", lambda frame: chunks(frame, 2_000))
    real = sqlite_backend.SqliteBackend._bulk_write
    written: list[str] = []

    def failing(self, conn, table, frame, columns, key, *, upsert):
        if table.name == fail_in:
            head = frame.iloc[: len(frame) // 2]
            real(self, conn, table, head, columns, key, upsert=upsert)  # half of it is in ...
            raise RuntimeError("disk full")  # ... when the write breaks
        written.append(table.name)
        return real(self, conn, table, frame, columns, key, upsert=upsert)

    monkeypatch.setattr(sqlite_backend.SqliteBackend, "_bulk_write", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        import_folder(world, sqlite_store, mode="replace")
    assert "customers" in written  # the tables before it had gone in
    assert sqlite_store.fingerprint() == before
    assert _sqlite_shape(sqlite_store) == shape
