"""The audit log: who did what to which object, when; joined to the audited change's transaction;
read newest first with filters that compare instants, on both backends. Key changes leave rows
that name the key by id and never hold its secret or the secret's hash."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from kundenwert.db.audit import Actor, cli_actor, read_audit, record
from kundenwert.db.schema import AUDIT
from kundenwert.errors import ConfigurationError
from kundenwert.serving.keys import Caller, create_key, revoke_key, rotate_key


def _audit_text(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return "\n".join(str(tuple(r)) for r in conn.execute(sa.select(AUDIT)))


def test_an_audit_row_commits_or_rolls_back_with_the_change_it_records(store) -> None:
    engine = store.engine
    with pytest.raises(RuntimeError), engine.begin() as conn:
        record(conn, cli_actor(), "target_list.create", "target_list", "L1", rows=5)
        raise RuntimeError("the audited change failed")
    assert read_audit(engine) == []
    with engine.begin() as conn:
        record(conn, Caller("abc123", "marketing"), "target_list.export", "target_list", "L1", rows=5)
    (row,) = read_audit(engine)
    assert (row["key_id"], row["role"], row["actor"]) == ("abc123", "marketing", "key abc123 (marketing)")
    assert (row["action"], row["object_type"], row["object_id"], row["rows"]) == (
        "target_list.export",
        "target_list",
        "L1",
        5,
    )


def test_reads_are_newest_first_filtered_by_action_and_since_as_instants(store) -> None:
    engine = store.engine
    for i in range(3):
        record(engine, Actor(None, "cli", "ops"), "customer.erase", "customers", rows=i)
    record(engine, cli_actor(), "target_list.create", "target_list", "L9", detail={"size": 10})
    rows = read_audit(engine)
    assert [r["action"] for r in rows] == ["target_list.create", *["customer.erase"] * 3]
    assert rows[0]["detail"] == {"size": 10} and rows[1]["actor"] == "cli:ops"
    assert [r["rows"] for r in read_audit(engine, action="customer.erase", limit=2)] == [2, 1]
    first = datetime.fromisoformat(rows[-1]["at"])
    # "...Z" sorts after the stored "...+00:00" text: compared as text it would hide every row
    z = (first - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(read_audit(engine, since=z)) == 4
    assert len(read_audit(engine, since=first.date().isoformat())) == 4
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert read_audit(engine, since=later) == []


def test_bad_reads_and_writes_say_what_to_give() -> None:
    engine = sa.create_engine("sqlite://")
    with pytest.raises(ConfigurationError, match="actions are: .*key.revoke"):
        read_audit(engine, action="key.delete")
    with pytest.raises(ConfigurationError, match="1 to 1000"):
        read_audit(engine, limit=1001)
    with pytest.raises(ConfigurationError, match="not an ISO date"):
        read_audit(engine, since="yesterday")
    with pytest.raises(ValueError, match="unknown audit action"):
        record(engine, cli_actor(), "key.delete", "api_key")


def test_key_changes_are_audited_with_who_what_which_when_and_never_the_secret(store) -> None:
    engine = store.engine
    before = datetime.now(UTC) - timedelta(seconds=1)
    key = create_key(engine, "sales", "crm export", expires="90d")
    key_id = key.split("_")[1]
    admin = Actor("feedc0ffee00", "admin")
    new, until = rotate_key(engine, key_id, who=admin)
    assert until is None
    new_id = new.split("_")[1]
    assert revoke_key(engine, new_id)
    assert not revoke_key(engine, new_id)  # revoked already: nothing changes, nothing is audited
    rows = read_audit(engine)
    assert [(r["action"], r["object_id"]) for r in rows] == [
        ("key.revoke", new_id),
        ("key.rotate", key_id),
        ("key.create", key_id),
    ]
    revoked, rotated, created = rows
    user = cli_actor().label
    assert (created["actor"], created["role"], created["key_id"]) == (user, "cli", None)
    assert created["detail"]["role"] == "sales" and created["detail"]["name"] == "crm export"
    assert created["detail"]["expires_at"] > (before + timedelta(days=89)).isoformat()
    assert (rotated["actor"], rotated["key_id"], rotated["role"]) == (
        "key feedc0ffee00 (admin)",
        admin.key_id,
        "admin",
    )
    assert rotated["detail"]["new_key_id"] == new_id and rotated["object_type"] == "api_key"
    assert revoked["actor"] == user
    assert all(datetime.fromisoformat(r["at"]) >= before for r in rows)
    text = _audit_text(engine)
    for full in (key, new):
        secret = full.split("_", 2)[2]
        assert secret not in text and hashlib.sha256(secret.encode()).hexdigest() not in text
        assert full not in text


def test_a_key_change_that_fails_leaves_no_audit_row(store, monkeypatch) -> None:
    from kundenwert.serving import keys

    def broken(*args, **kwargs):
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))

    key_id = create_key(store.engine, "campaign").split("_")[1]
    monkeypatch.setattr(keys, "record", broken)
    with pytest.raises(Exception, match="disk I/O error"):
        revoke_key(store.engine, key_id)
    monkeypatch.undo()
    assert [r["action"] for r in read_audit(store.engine)] == ["key.create"]
    assert [k["status"] for k in keys.list_keys(store.engine)] == ["active"]  # the revocation rolled back
