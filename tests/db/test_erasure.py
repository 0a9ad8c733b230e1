"""Erasure of customers (GDPR Art. 17): gone from every cell of every table, on SQLite and
PostgreSQL; registered as keyed hashes so a re-import is refused; audited by counts only."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from kundenwert.db import audit
from kundenwert.db.audit import cli_actor, read_audit
from kundenwert.db.erasure import erase_customers, erasure_key
from kundenwert.db.schema import DECISIONS, ERASED, LIVE_CHANGES, TABLE_DEFS
from kundenwert.errors import ConfigurationError, ErasedCustomers
from kundenwert.features.importer import import_folder

# Every kind of character an id may hold that a careless LIKE or string-built SQL gets wrong.
TRICKY = "Ünï-%_'\"\\ 42,x;--"
REFUSAL = "(GDPR Art. 17); import it only as a new, lawful record with --allow-erased"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, str]:
    """A small sample world plus the customer ``TRICKY`` (a copy of a sample customer's rows);
    returns (folder, the sample customer's id)."""
    from kundenwert.datasets.sample import generate_world, write_world

    folder = tmp_path_factory.mktemp("erase-world")
    write_world(generate_world(300, seed=7), folder)
    tables = {p.stem: pd.read_csv(p, dtype=str, keep_default_na=False) for p in folder.glob("*.csv")}
    rows = pd.concat([tables[t]["customer_id"] for t in ("purchases", "contacts", "consents")])
    have_all = set(tables["complaints"]["customer_id"]) & set(tables["offers"]["customer_id"])
    donor = rows[rows.isin(have_all)].value_counts().index[0]
    ids = {
        "purchases": "purchase_id",
        "contacts": "contact_id",
        "complaints": "complaint_id",
        "offers": "offer_id",
    }
    for name, frame in tables.items():
        if "customer_id" not in frame.columns:
            continue
        copy = frame[frame["customer_id"] == donor].assign(customer_id=TRICKY)
        if name in ids:
            copy[ids[name]] = "E" + copy[ids[name]]
        pd.concat([frame, copy]).to_csv(folder / f"{name}.csv", index=False)
    assert not any(TRICKY in c for c in tables["customers"]["customer_id"])
    return folder, donor


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("KUNDENWERT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KUNDENWERT_ERASURE_KEY", raising=False)
    return tmp_path / "home"


def _serve(store, victims: list[str], others: list[str]) -> dict:
    """What a running service leaves in the store: two scoring runs, decisions with feedback
    events (whose sender-chosen ids name the customer) and the contacts feedback makes, a target
    list, consents changed live (the triggers log the ids)."""
    from kundenwert.serving.feedback import Event, record_feedback
    from kundenwert.serving.scores_store import write_scores
    from kundenwert.serving.state import decision_id
    from kundenwert.serving.target_lists import TargetListRequest, save_target_list

    ids = store.read_table("customers", ["customer_id"], attributes=False)["customer_id"].tolist()
    scores = pd.DataFrame(
        {
            "status": "active",
            "churn": 0.3,
            "reasons_churn": json.dumps([{"feature": "recency", "value": 12.0}]),
        },
        index=pd.Index(ids, name="customer_id"),
    )
    pairs = pd.MultiIndex.from_product(
        [ids, ["retention_voucher"], ["email"]], names=["customer_id", "action_id", "channel"]
    )
    propensity = pd.DataFrame({"response": 0.1, "uplift": 0.02}, index=pairs)
    for _ in range(2):
        write_scores(store.engine, scores, propensity, pd.Timestamp("2026-01-01", tz="UTC"), {"churn": "1"})
    suggestion = json.dumps([{"action_id": "retention_voucher", "channel": "email", "score": 1.0, "rank": 1}])
    now = datetime.now(UTC).isoformat()
    decisions = {cid: decision_id() for cid in victims + others}
    with store.engine.begin() as conn:
        conn.execute(
            DECISIONS.insert(),
            [
                {
                    "decision_id": d,
                    "customer_id": c,
                    "created_at": now,
                    "score_run": "r",
                    "suggestions": suggestion,
                }
                for c, d in decisions.items()
            ],
        )
        consents = TABLE_DEFS["consents"]
        for cid in victims + others[:1]:  # a live change: the triggers log these ids
            conn.execute(
                consents.insert().values(
                    customer_id=cid, channel="sms", granted=False, recorded_at=datetime.now(UTC), extra="{}"
                )
            )
    events = [
        Event(
            event_id=f"crm-{c}-opened",
            decision_id=d,
            action_id="retention_voucher",
            channel="email",
            outcome="opened",
            occurred_at=datetime.now(UTC),
        )
        for c, d in decisions.items()
    ]
    record_feedback(store, events)
    members = pd.DataFrame(
        {
            "position": range(len(victims + others)),
            "customer_id": victims + others,
            "group": "target",
            "action_id": "retention_voucher",
            "score": 1.0,
            "propensity": 0.1,
            "expected_value": 5.0,
            "cost": 0.1,
        }
    )
    summary = {"customers": len(members), "control": 0}
    request = TargetListRequest(objective="churn_prevention", channel="email", size=len(members))
    save_target_list(store.engine, "list-1", request, summary, members)
    return {"decisions": decisions, "summary": summary}


def _hits(engine: sa.Engine, value: str, *, exact: bool = False) -> dict[str, int]:
    """Cells of every text column of every table (kw_scores_* too) that contain ``value``
    (``exact``: that equal it), per ``table.column``."""
    out: dict[str, int] = {}
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        for name in inspector.get_table_names():
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            for col in table.c:
                if not isinstance(col.type, sa.String):  # VARCHAR, TEXT and their dialect kinds
                    continue
                cond = col == value if exact else col.contains(value, autoescape=True)
                n = conn.execute(sa.select(sa.func.count()).select_from(table).where(cond)).scalar_one()
                if n:
                    out[f"{name}.{col.name}"] = n
    return out


def _count(engine: sa.Engine, table: sa.Table, where=None) -> int:
    stmt = sa.select(sa.func.count()).select_from(table)
    with engine.connect() as conn:
        return conn.execute(stmt if where is None else stmt.where(where)).scalar_one()


def test_an_erased_customer_is_in_no_cell_of_any_table(store, world, home) -> None:
    folder, donor = world
    import_folder(folder, store, mode="replace")
    ids = store.read_table("customers", ["customer_id"], attributes=False)["customer_id"]
    others = [c for c in ids if c not in (donor, TRICKY)][:2]
    served = _serve(store, [TRICKY, donor], others)
    before = _hits(store.engine, TRICKY)
    tables = {k.split(".")[0] for k in before}
    scored = {t for t in tables if t.startswith("kw_scores_")}
    assert len(scored) == 2
    # The scan sees the customer everywhere a service and an import put them.
    assert {
        "customers",
        "purchases",
        "contacts",
        "consents",
        "complaints",
        "offers",
        "customer_attributes",
        "kw_decisions",
        "kw_feedback",
        "kw_target_list_members",
        "kw_live_changes",
    } <= tables
    assert _hits(store.engine, donor, exact=True)
    counts = store.counts()
    live_null = _count(store.engine, LIVE_CHANGES, LIVE_CHANGES.c.customer_id.is_(None))

    report = erase_customers(store, [TRICKY, donor, "nobody-ever", donor], cli_actor())

    assert (report.requested, report.erased, report.not_found, report.registered) == (3, 2, 1, 3)
    assert report.not_found_ids == ("nobody-ever",)
    assert _hits(store.engine, TRICKY) == {}
    assert _hits(store.engine, donor, exact=True) == {}
    key = erasure_key()
    assert key is not None
    for h in key.hashes([TRICKY, donor]):  # the hashes are in the register and nowhere else
        assert _hits(store.engine, h) == {"kw_erased.id_hash": 1}
    # Exactly the two customers' rows went; everyone else's stayed.
    after = store.counts()
    for name in ("purchases", "contacts", "consents", "complaints", "offers", "customers"):
        assert counts[name] - after[name] == report.rows[name] > 0
    assert report.rows["kw_decisions"] == 2 and report.rows["kw_feedback"] == 2
    assert report.rows["kw_target_list_members"] == 2 and report.rows["kw_scores"] == 4
    assert report.rows["kw_live_changes"] >= 2
    with store.engine.connect() as conn:
        remaining = set(conn.execute(sa.select(DECISIONS.c.customer_id)).scalars())
        summary = conn.execute(sa.text("SELECT summary FROM kw_target_lists")).scalar_one()
        last = conn.execute(sa.select(LIVE_CHANGES).order_by(LIVE_CHANGES.c.seq.desc()).limit(1)).one()
    assert remaining == set(others)
    assert json.loads(summary) == served["summary"]  # lists keep their counts
    # One "anyone may have changed" row, the newest: every running service drops its caches.
    assert last.customer_id is None
    assert _count(store.engine, LIVE_CHANGES, LIVE_CHANGES.c.customer_id.is_(None)) == live_null + 1
    # The audit row counts; it names nobody, in clear or hashed (the scan above covers it too).
    (row,) = read_audit(store.engine, action="customer.erase")
    assert row["rows"] == 2 and row["object_id"] is None and row["actor"].startswith("cli")
    assert row["detail"]["rows"] == report.rows and row["detail"]["not_found"] == 1
    text = json.dumps(row, default=str)
    assert all(s not in text for s in [TRICKY, donor, "nobody-ever", *key.hashes([TRICKY, donor])])


def test_erasing_again_or_unknown_ids_is_a_no_op(store, world, home) -> None:
    folder, donor = world
    import_folder(folder, store, mode="replace")
    first = erase_customers(store, [donor], cli_actor())
    assert first.erased == 1 and first.total_rows > 0
    fingerprint = store.fingerprint()
    again = erase_customers(store, [donor, "nobody"], cli_actor())
    assert (again.erased, again.not_found, again.total_rows) == (0, 2, 0)
    assert again.registered == 1  # "nobody" is registered; the donor's entry keeps its first date
    assert store.fingerprint() == fingerprint
    assert _count(store.engine, ERASED) == 2
    assert len(read_audit(store.engine, action="customer.erase")) == 2
    with pytest.raises(ConfigurationError, match="no customer ids"):
        erase_customers(store, [], cli_actor())


def test_an_erasure_is_all_or_nothing(store, world, home, monkeypatch) -> None:
    folder, donor = world
    import_folder(folder, store, mode="replace")
    fingerprint = store.fingerprint()

    def broken(*args, **kwargs):
        raise RuntimeError("the audit log is full")

    monkeypatch.setattr(audit, "record", broken)
    with pytest.raises(RuntimeError):
        erase_customers(store, [donor, TRICKY], cli_actor())
    assert store.fingerprint() == fingerprint
    assert _count(store.engine, ERASED) == 0
    assert _hits(store.engine, TRICKY)


def test_a_reimport_of_an_erased_customer_is_refused_unless_allowed(store, world, home) -> None:
    folder, donor = world
    import_folder(folder, store, mode="replace")
    erase_customers(store, [TRICKY, "nobody"], cli_actor())
    fingerprint = store.fingerprint()
    customers = pd.read_csv(folder / "customers.csv", dtype=str, keep_default_na=False)
    row = int((customers["customer_id"] == TRICKY).to_numpy().nonzero()[0][0]) + 1
    today = datetime.now(UTC).date().isoformat()
    for mode in ("replace", "upsert"):
        with pytest.raises(ErasedCustomers) as caught:
            import_folder(folder, store, mode=mode)
        assert f"table customers, row {row}, column customer_id: was erased on {today} {REFUSAL}" in str(
            caught.value
        )
        assert TRICKY not in str(caught.value) and "nothing was written" in str(caught.value)
        assert store.fingerprint() == fingerprint
    # Rows of other tables naming the erased customer fail the reference check already.
    alone = folder.parent / "erase-purchases-only"
    alone.mkdir(exist_ok=True)
    purchases = pd.read_csv(folder / "purchases.csv", dtype=str, keep_default_na=False)
    purchases[purchases["customer_id"] == TRICKY].to_csv(alone / "purchases.csv", index=False)
    with pytest.raises(Exception, match="customer"):
        import_folder(alone, store, mode="append")

    result = import_folder(folder, store, mode="replace", allow_erased=True)
    assert result.rows["customers"] == len(customers)
    assert _hits(store.engine, TRICKY)  # back, as a new record
    key = erasure_key()
    assert key is not None
    with store.engine.connect() as conn:
        left = set(conn.execute(sa.select(ERASED.c.id_hash)).scalars())
    assert left == set(key.hashes(["nobody"]))  # off the register; the other entry stays
    import_folder(folder, store, mode="replace")  # and no longer refused


def test_an_empty_register_costs_one_probe_and_no_key(sqlite_store, world, home) -> None:
    folder, _ = world
    import_folder(folder, sqlite_store, mode="replace")
    assert not (home / "erasure.key").exists()


def test_the_key_file_is_private_and_the_same_text_is_the_same_key(
    sqlite_store, world, home, monkeypatch
) -> None:
    folder, donor = world
    import_folder(folder, sqlite_store, mode="replace")
    erase_customers(sqlite_store, [donor], cli_actor())
    path = home / "erasure.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text().strip()
    assert len(bytes.fromhex(text)) == 32
    with sqlite_store.engine.connect() as conn:
        (key_id,) = set(conn.execute(sa.select(ERASED.c.key_id)).scalars())
    key = erasure_key()
    assert key is not None and key.key_id == key_id
    monkeypatch.setenv("KUNDENWERT_ERASURE_KEY", text)  # the file's text, moved to the environment
    with pytest.raises(ErasedCustomers):
        import_folder(folder, sqlite_store, mode="upsert")


def test_a_register_of_another_key_is_refused_not_passed(store, world, home, monkeypatch) -> None:
    folder, donor = world
    import_folder(folder, store, mode="replace")
    monkeypatch.setenv("KUNDENWERT_ERASURE_KEY", "the key of the first installation")
    erase_customers(store, [donor], cli_actor())
    monkeypatch.setenv("KUNDENWERT_ERASURE_KEY", "another key")
    with pytest.raises(ConfigurationError, match="set KUNDENWERT_ERASURE_KEY to the key used"):
        import_folder(folder, store, mode="replace")
    with pytest.raises(ConfigurationError, match="was made with erasure key id"):
        erase_customers(store, [TRICKY], cli_actor())  # the register keeps one key
    monkeypatch.delenv("KUNDENWERT_ERASURE_KEY")
    with pytest.raises(ConfigurationError, match="no key is set here"):
        import_folder(folder, store, mode="replace")
    assert not (home / "erasure.key").exists()  # the check never makes a key
    monkeypatch.setenv("KUNDENWERT_ERASURE_KEY", "the key of the first installation")
    with pytest.raises(ErasedCustomers):
        import_folder(folder, store, mode="replace")


def test_the_erase_command(world, home, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from kundenwert.cli import app
    from kundenwert.db.store import Store

    folder, donor = world
    monkeypatch.delenv("KUNDENWERT_DATABASE_URL", raising=False)
    runner = CliRunner()
    r = runner.invoke(app, ["import", str(folder), "--mode", "replace"])
    assert r.exit_code == 0, r.output
    store = Store()
    fingerprint = store.fingerprint()

    ids = tmp_path / "ids.txt"
    ids.write_text(f"{TRICKY}\n\n  \nnobody-42\r\n", encoding="utf-8")
    r = runner.invoke(app, ["erase", donor, "--file", str(ids)])
    assert r.exit_code == 1 and "would erase 3 customers" in r.output and "add --yes" in r.output
    assert store.fingerprint() == fingerprint
    r = runner.invoke(app, ["erase"])
    assert r.exit_code == 2 and "name the customers to erase" in r.output and "Traceback" not in r.output

    r = runner.invoke(app, ["erase", donor, "--file", str(ids), "--yes"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "erased 2 customers; 1 not found" in r.output and "not found: nobody-42" in r.output
    assert "purchases" in r.output and "kw_live_changes" in r.output
    assert donor not in r.output and TRICKY not in r.output  # the erased are not echoed
    assert _hits(store.engine, TRICKY) == {}

    r = runner.invoke(app, ["import", str(folder), "--mode", "replace"])
    assert r.exit_code == 2 and "was erased on" in r.output and "--allow-erased" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["import", str(folder), "--mode", "replace", "--allow-erased"])
    assert r.exit_code == 0, r.output
    store.dispose()


def test_a_failure_after_the_triggers_were_silenced_leaves_them_in_place(
    store, world, home, monkeypatch
) -> None:
    from kundenwert.db import erasure

    folder, donor = world
    import_folder(folder, store, mode="replace")
    with store.engine.connect() as conn:
        triggers = store.backend.live_triggers(conn)
    fingerprint = store.fingerprint()

    def broken(conn):
        raise RuntimeError("lost the connection")

    monkeypatch.setattr(erasure, "_score_tables", broken)
    with pytest.raises(RuntimeError):
        erase_customers(store, [donor], cli_actor())
    with store.engine.connect() as conn:
        assert store.backend.live_triggers(conn) == triggers
    assert store.fingerprint() == fingerprint and _count(store.engine, ERASED) == 0
