"""API keys: a database that cannot take the write says so in one line, never with the SQL (whose
parameters would hold the new key's hash); expiry, rotation and revocation, also on a running
service (refused within seconds, no reload); the audit endpoint and the ``keys``/``audit`` commands."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from kundenwert.db.migrate import ensure_tables
from kundenwert.db.schema import API_KEYS
from kundenwert.errors import ConfigurationError, StoreError
from kundenwert.serving.keys import (
    ROLES,
    Caller,
    KeyNotFound,
    KeyRing,
    create_key,
    list_keys,
    parse_expiry,
    revoke_key,
    rotate_key,
)


def test_a_locked_store_refuses_a_new_key_in_one_line_without_sql(tmp_path: Path) -> None:
    path = tmp_path / "kw.db"
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1})
    ensure_tables(engine, API_KEYS)
    other = sqlite3.connect(path)
    other.execute("BEGIN IMMEDIATE")  # another writer (an import, `kundenwert score`) holds the lock
    try:
        with pytest.raises(StoreError) as caught:
            create_key(engine, "sales")
    finally:
        other.rollback()
        other.close()
    message = str(caught.value)
    assert "kw_api_keys" in message and "\n" not in message
    assert "INSERT" not in message and "secret_sha256" not in message and "[parameters" not in message
    assert create_key(engine, "sales").startswith("kw_")  # once the other writer is done


# ------------------------------------------------------------------ expiry, rotation, revocation


def _id(key: str) -> str:
    return key.split("_")[1]


def test_an_expired_key_is_refused_at_the_moment_of_use(tmp_path: Path, monkeypatch) -> None:
    from kundenwert.serving import keys

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'kw.db'}")
    now = datetime.now(UTC)
    soon = create_key(engine, "sales", expires=now + timedelta(hours=1))
    never = create_key(engine, "sales")
    ring = KeyRing(engine)
    assert ring.verify(soon) == Caller(_id(soon), "sales")
    monkeypatch.setattr(keys.time, "time", lambda: (now + timedelta(hours=1, seconds=1)).timestamp())
    assert ring.check(soon) == (None, "expired") and ring.verify(soon) is None  # no refresh needed
    assert ring.verify(never) == Caller(_id(never), "sales")
    assert ring.check(soon[:-2] + "xx") == (None, "invalid")  # a wrong secret is not told it expired


def test_expiry_accepts_durations_and_dates_and_refuses_the_past() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert parse_expiry("90d", now) == now + timedelta(days=90)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2027-01-01", now) == datetime(2027, 1, 1, tzinfo=UTC)
    assert parse_expiry("2027-01-01T10:00:00+01:00", now) == datetime(2027, 1, 1, 9, tzinfo=UTC)
    with pytest.raises(ConfigurationError, match="not in the future"):
        parse_expiry("2026-11-30", now)
    with pytest.raises(ConfigurationError, match="neither a duration"):
        parse_expiry("soon", now)
    with pytest.raises(ConfigurationError, match="not in the future"):
        create_key(sa.create_engine("sqlite://"), "sales", expires=datetime(2020, 1, 1))


def test_rotation_keeps_role_name_and_lifetime_and_revokes_or_lets_the_old_key_run_out(
    tmp_path: Path,
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'kw.db'}")
    old = create_key(engine, "marketing", "newsletter tool", expires="30d")
    new, until = rotate_key(engine, _id(old))
    ring = KeyRing(engine)
    assert until is None and ring.verify(old) is None and ring.verify(new) == Caller(_id(new), "marketing")
    listed = {k["key_id"]: k for k in list_keys(engine)}
    assert listed[_id(old)]["status"] == "revoked" and listed[_id(old)]["revoked_at"]
    fresh = listed[_id(new)]
    assert (fresh["role"], fresh["name"], fresh["status"]) == ("marketing", "newsletter tool", "active")
    lifetime = datetime.fromisoformat(fresh["expires_at"]) - datetime.fromisoformat(fresh["created_at"])
    assert lifetime == timedelta(days=30)
    assert all("secret_sha256" not in k for k in listed.values())

    newer, until = rotate_key(engine, _id(new), grace="1h")
    ring.refresh()
    assert ring.verify(new) is not None and ring.verify(newer) is not None  # both during the grace
    ends = datetime.fromisoformat(until)
    assert timedelta(minutes=59) < ends - datetime.now(UTC) <= timedelta(hours=1)
    assert {k["key_id"]: k["expires_at"] for k in list_keys(engine)}[_id(new)] == until

    with pytest.raises(ConfigurationError, match="is revoked; make a new one"):
        rotate_key(engine, _id(old))
    for change in (revoke_key, rotate_key):
        with pytest.raises(KeyNotFound, match="no API key has the id 'nothere'"):
            change(engine, "nothere")


def test_a_failed_refresh_keeps_the_last_keys_and_is_logged_without_secrets(tmp_path: Path, caplog) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'kw.db'}")
    key = create_key(engine, "sales")
    ring = KeyRing(engine)
    ring.engine = sa.create_engine(f"sqlite:///{tmp_path / 'gone' / 'kw.db'}")  # unreachable

    async def run() -> None:
        task = asyncio.create_task(ring.keep_fresh(0.01))
        await asyncio.sleep(0.2)
        assert ring.verify(key) is not None and not task.done()  # the last good ring, still refreshing
        ring.engine = engine
        revoke_key(engine, _id(key))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if ring.verify(key) is None:
                break
        task.cancel()

    with caplog.at_level(logging.INFO, logger="kundenwert.serving.keys"):
        asyncio.run(run())
    assert ring.verify(key) is None  # recovered and picked the revocation up
    failures = [r for r in caplog.records if "refreshing the API keys failed" in r.getMessage()]
    assert (
        len(failures) == 1 and "unable to open database" in failures[0].getMessage()
    )  # once, not every 10 ms
    assert any("refreshed again" in r.getMessage() for r in caplog.records)
    secret = key.split("_", 2)[2]
    assert all(
        secret not in r.getMessage() and hashlib.sha256(secret.encode()).hexdigest() not in r.getMessage()
        for r in caplog.records
    )


# ------------------------------------------------------------------ a running service


@pytest.fixture
def live(tmp_path: Path):
    """A running service (lifespan and its tasks) on an empty store: keys work without scores."""
    from fastapi.testclient import TestClient

    from kundenwert.db.store import Store
    from kundenwert.serving.app import create_app

    url = f"sqlite:///{tmp_path / 'kw.db'}"
    store = Store(url)
    keys = {role: create_key(store.engine, role, f"{role} app") for role in ROLES}
    keys["admin2"] = create_key(store.engine, "admin", "second admin")
    try:
        with TestClient(create_app(Store(url), reload_seconds=0)) as client:
            yield {"client": client, "keys": keys, "store": store}
    finally:
        store.dispose()


def _get_audit(client, key: str, **params):
    return client.get("/v1/admin/audit", headers={"X-API-Key": key}, params=params)


def _poll(check, seconds: float = 5.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds} s")


def test_a_revoked_key_is_refused_by_a_running_service_within_seconds(live) -> None:
    c, keys, engine = live["client"], live["keys"], live["store"].engine
    assert _get_audit(c, keys["admin"]).status_code == 200
    assert revoke_key(engine, _id(keys["admin"]))  # as `kundenwert keys revoke` does, no reload
    took = _poll(lambda: _get_audit(c, keys["admin"]).status_code == 401)
    assert took < 2.5
    assert _get_audit(c, keys["admin2"]).status_code == 200  # the other keys keep working
    assert _get_audit(c, keys["sales"]).status_code == 403

    new, _ = rotate_key(engine, _id(keys["admin2"]))
    _poll(lambda: _get_audit(c, new).status_code == 200)
    assert _get_audit(c, keys["admin2"]).status_code == 401


def test_an_expired_key_gets_401_saying_so(live) -> None:
    c, keys, engine = live["client"], live["keys"], live["store"].engine
    with engine.begin() as conn:  # its expiry passed (keys cannot be made with a past one)
        conn.execute(
            API_KEYS.update()
            .where(API_KEYS.c.key_id == _id(keys["admin2"]))
            .values(expires_at="2026-01-01T00:00:00+00:00")
        )
    _poll(lambda: _get_audit(c, keys["admin2"]).status_code == 401)
    assert _get_audit(c, keys["admin2"]).json()["detail"] == "API key expired"
    assert _get_audit(c, "kw_nothere_x").json()["detail"] == "missing or invalid API key"


def test_the_audit_endpoint_is_for_admins_and_holds_no_secret(live) -> None:
    c, keys, engine = live["client"], live["keys"], live["store"].engine
    for role in ROLES:
        if role != "admin":
            assert _get_audit(c, keys[role]).status_code == 403, role
    assert c.get("/v1/admin/audit").status_code == 401
    revoke_key(engine, _id(keys["campaign"]))
    r = _get_audit(c, keys["admin"])
    assert r.status_code == 200
    rows = r.json()["rows"]
    assert [x["action"] for x in rows] == ["key.revoke", *["key.create"] * (len(ROLES) + 1)]
    assert rows[0]["object_id"] == _id(keys["campaign"]) and rows[0]["detail"]["role"] == "campaign"
    assert [x["audit_id"] for x in rows] == sorted((x["audit_id"] for x in rows), reverse=True)
    only = _get_audit(c, keys["admin"], action="key.revoke", limit=5).json()["rows"]
    assert len(only) == 1 and only[0]["actor"].startswith("cli")
    assert _get_audit(c, keys["admin"], since="2999-01-01").json()["rows"] == []
    assert _get_audit(c, keys["admin"], limit=1001).status_code == 422
    assert _get_audit(c, keys["admin"], action="key.delete").status_code == 422  # not one of the enum
    for key in keys.values():
        secret = key.split("_", 2)[2]
        assert secret not in r.text and hashlib.sha256(secret.encode()).hexdigest() not in r.text


# ------------------------------------------------------------------ the command line


@pytest.fixture
def cli(tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from kundenwert.cli import app

    monkeypatch.setenv("KUNDENWERT_HOME", str(tmp_path))
    monkeypatch.delenv("KUNDENWERT_DATABASE_URL", raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), env={"COLUMNS": "200"})


def test_the_keys_and_audit_commands(cli, tmp_path: Path) -> None:
    made = cli("keys", "create", "--role", "sales", "--name", "crm", "--expires", "2099-01-01")
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    assert key.startswith("kw_") and "valid until 2099-01-01 00:00 UTC" in made.stderr
    key_id = _id(key)
    listed = cli("keys", "list")
    assert listed.exit_code == 0 and key_id in listed.stdout and "2099-01-01" in listed.stdout
    assert "crm" in listed.stdout and "active" in listed.stdout

    rotated = cli("keys", "rotate", key_id, "--grace", "1h")
    assert rotated.exit_code == 0, rotated.output
    new = rotated.stdout.strip()
    assert new.startswith("kw_") and new != key and f"the old key {key_id} works until" in rotated.stderr
    assert cli("keys", "revoke", _id(new)).stdout.strip() == f"revoked key {_id(new)}"
    assert "was revoked already" in cli("keys", "revoke", _id(new)).stdout

    for command in ("revoke", "rotate"):
        bad = cli("keys", command, "nothere")
        assert (
            bad.exit_code == 2
            and "no API key has the id 'nothere'" in bad.stderr
            and "Traceback" not in bad.output
        )
    bad = cli("keys", "create", "--role", "sales", "--expires", "yesterday")
    assert bad.exit_code == 2 and "--expires 'yesterday'" in bad.stderr

    table = cli("audit")
    assert table.exit_code == 0, table.output
    for word in ("key.create", "key.rotate", "key.revoke", key_id, "cli"):
        assert word in table.stdout, word
    import json

    rows = json.loads(cli("audit", "--json", "--action", "key.rotate").stdout)
    assert len(rows) == 1 and rows[0]["object_id"] == key_id and rows[0]["detail"]["new_key_id"] == _id(new)
    everything = listed.stdout + table.stdout + cli("audit", "--json").stdout + cli("keys", "list").stdout
    for full in (key, new):
        secret = full.split("_", 2)[2]
        assert secret not in everything and hashlib.sha256(secret.encode()).hexdigest() not in everything
    assert cli("audit", "--since", "nope").exit_code == 2
