"""Data protection at the moment of output: an objection written after the scoring run (by an
import, or by another writer's own SQL) holds on every output at once; an unsubscribe or a hard
bounce stops the channel for the very next request; old decisions and feedback expire."""

from __future__ import annotations

import io
import sqlite3

import pandas as pd
import pytest
from sqlalchemy import text as sa_text

from kundenwert.db.store import Store
from kundenwert.features.importer import import_folder
from tests.serving.conftest import own_world


@pytest.fixture(scope="module")
def world(imported_world, trained_small, small_config, tmp_path_factory):
    """A served world of its own: these tests write objections and feedback into it."""
    with own_world(imported_world, trained_small, small_config, tmp_path_factory, "kw-privacy") as w:
        yield w


def _objections_by_import(url: str, ids: list[str], folder) -> None:
    at = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    folder.mkdir()
    pd.DataFrame(
        {
            "customer_id": ids,
            "channel": "*",
            "granted": "false",
            "recorded_at": at,
            "double_opt_in": "false",
            "source": "web form: objection",
        }
    ).to_csv(folder / "consents.csv", index=False)
    store = Store(url)
    try:
        import_folder(folder, store, mode="append")
    finally:
        store.dispose()


def _objections_by_sql(path, ids: list[str]) -> None:
    """Another writer (a CRM job) with its own SQL: instants are integer microseconds there."""
    now_us = pd.Timestamp.now(tz="UTC").value // 1000
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO consents (customer_id, channel, granted, recorded_at, double_opt_in, source) "
            "VALUES (?, '*', 0, ?, 0, 'call centre: objection')",
            [(cid, now_us) for cid in ids],
        )
    conn.close()


def _lists_before(c, h) -> list[dict]:
    """Every list marketing could have made before the objections, exported once as they were."""
    made = []
    for body in (
        {"objective": "churn_prevention", "channel": "email"},
        {"objective": "churn_prevention", "channel": "phone"},
        {"objective": "win_back", "channel": "email"},
        {"objective": "cross_sell", "category": "electronics", "channel": "email"},
    ):
        r = c.post("/v1/target-lists", headers=h, json={**body, "size": 100_000, "control_share": 0.1})
        assert r.status_code == 201, r.text
        url = r.json()["url"]
        members = c.get(url, headers=h).json()["members"]
        made.append({"url": url, "ids": {m["customer_id"] for m in members}})
    assert sum(len(m["ids"]) for m in made) > 500  # lists worth checking
    return made


def test_an_objection_after_scoring_holds_on_every_output(world, tmp_path) -> None:
    c, keys = world["client"], world["keys"]
    sales, marketing = {"X-API-Key": keys["sales"]}, {"X-API-Key": keys["marketing"]}
    campaign = {"X-API-Key": keys["campaign"]}
    everyone = [str(i) for i in world["customers"]]
    lists = _lists_before(c, marketing)
    before = c.post("/v1/score", headers=campaign, json={"customer_ids": everyone}).json()["results"]
    suggested_before = {r["customer_id"] for r in before if r["suggestions"]}
    by_import, by_sql = everyone[0::3], everyone[1::3]
    from kundenwert.serving.live import consent_now

    already = consent_now(world["store"].read_table("consents"), pd.Timestamp.now(tz="UTC"))
    objecting = set(by_import) | set(by_sql) | set(already.index[already["objection"].to_numpy(dtype=bool)])
    assert len(suggested_before & objecting) > 100  # the objections take suggestions away

    _objections_by_import(world["url"], by_import, tmp_path / "objections")
    _objections_by_sql(world["home"] / "kw.db", by_sql)

    # the sales view and the next best actions, customer by customer: every one of them
    scored_left = 0
    for cid in everyone:
        view = c.get(f"/v1/customers/{cid}", headers=sales)
        assert view.status_code == 200, view.text
        v = view.json()
        nba = c.get(f"/v1/customers/{cid}/next-best-actions", headers=sales).json()
        if cid in objecting:
            assert v["consent"]["objection"] is True and not any(
                v["consent"][ch] for ch in ("email", "sms", "phone", "mail")
            )
            assert not v["scored"] and v["profiling_stopped"], cid
            assert v["profile"] == {} and v["reasons"] == {} and v["top_affinities"] == []
            assert v["clv"] is v["p_alive"] is v["churn_risk"] is v["winback_chance"] is None
            assert not nba["scored"] and nba["suggestions"] == [] and nba["decision_id"] is None, cid
        else:
            assert v["consent"]["objection"] is False and v["profiling_stopped"] is None
            scored_left += v["scored"]
    assert scored_left > 0.9 * (len(everyone) - len(objecting))  # the others are still served

    # campaign scoring of everyone at once
    after = c.post("/v1/score", headers=campaign, json={"customer_ids": everyone}).json()["results"]
    assert len(after) == len(everyone)
    for r in after:
        if r["customer_id"] in objecting:
            assert not r["scored"] and r["suggestions"] == [] and r["decision_id"] is None
    assert {r["customer_id"] for r in after if r["suggestions"]} == suggested_before - objecting

    # target lists made before the objections, exported now: JSON and CSV
    assert sum(len(made["ids"] & objecting) for made in lists) > 100
    for made in lists:
        got = c.get(made["url"], headers=marketing).json()
        ids = {m["customer_id"] for m in got["members"]}
        assert not ids & objecting
        assert got["left_out"]["objection"] == len(made["ids"] & objecting)
        assert ids == made["ids"] - objecting  # nobody else lost their place
        csv = c.get(made["url"], headers=marketing, params={"format": "csv"})
        rows = pd.read_csv(io.StringIO(csv.text), dtype={"customer_id": str})
        assert set(rows["customer_id"]) == ids
        assert csv.headers["x-left-out-objection"] == str(got["left_out"]["objection"])

    # analytics count only the customers who may be profiled now
    state = c.app.state.serving
    profiled = state.scores[~state.scores.index.isin(list(objecting))]
    kpis = c.get("/v1/analytics/kpis", headers=marketing).json()
    assert kpis["customers"] == {k: int((profiled["status"] == k).sum()) for k in ("active", "lapsed", "new")}
    rows = c.get("/v1/analytics/affinity-by-age-group", headers=marketing).json()["rows"]
    groups = profiled.groupby("age_group").size()
    assert rows and all(r["customers"] == groups[r["age_group"]] for r in rows)

    # the command line's export of features (a profile per customer) and what training reads
    from typer.testing import CliRunner

    from kundenwert.cli import app
    from kundenwert.features.snapshot import load_frames, without_objecting

    out = tmp_path / "snap.parquet"
    done = CliRunner().invoke(
        app,
        ["snapshot", "--cutoff", "2025-06-01", "--out", str(out)],
        env={"KUNDENWERT_DATABASE_URL": world["url"]},
    )
    assert done.exit_code == 0, done.output
    snap = pd.read_parquet(out)
    assert len(snap) > 300 and not set(snap.index.astype(str)) & objecting
    frames, left = without_objecting(load_frames(world["store"]))
    assert left == len(objecting) and not set(frames["contacts"]["customer_id"]) & objecting


def _first_with(c, h, customers, channel: str) -> tuple[str, dict]:
    for cid in customers:
        d = c.get(f"/v1/customers/{cid}/next-best-actions", headers=h, params={"channel": channel}).json()
        if d["suggestions"]:
            return cid, d
    raise AssertionError(f"no customer with a {channel} suggestion")


def _feedback(c, h, decision: dict, outcome: str, event: str, **extra) -> None:
    s = decision["suggestions"][0]
    r = c.post(
        "/v1/feedback",
        headers=h,
        json={
            "events": [
                {
                    "event_id": event,
                    "decision_id": decision["decision_id"],
                    "action_id": s["action_id"],
                    "channel": s["channel"],
                    "outcome": outcome,
                    "occurred_at": pd.Timestamp.now(tz="UTC").isoformat(),
                    **extra,
                }
            ]
        },
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("outcome", "extra", "stops"),
    [
        ("unsubscribed", {}, True),
        ("bounced", {}, True),  # a bounce is hard unless the sender says soft
        ("bounced", {"bounce": "hard"}, True),
        ("bounced", {"bounce": "soft"}, False),
    ],
)
def test_unsubscribe_and_hard_bounce_stop_the_channel_for_the_next_request(
    world, outcome, extra, stops
) -> None:
    c, keys = world["client"], world["keys"]
    sales, campaign = {"X-API-Key": keys["sales"]}, {"X-API-Key": keys["campaign"]}
    # customers with email consent nobody in this module has touched yet
    pool = world["customers"][2::3][::-1]
    cid, decision = _first_with(c, sales, [str(i) for i in pool if str(i) not in _used], "email")
    _used.add(cid)
    event = f"{outcome}-{extra.get('bounce', 'default')}-{cid}"
    _feedback(c, campaign, decision, outcome, event, **extra)
    after = c.get(
        f"/v1/customers/{cid}/next-best-actions",
        headers=sales,
        params={"channel": "email", "explain": "true"},
    ).json()
    view = c.get(f"/v1/customers/{cid}", headers=sales).json()
    consents = world["store"].read_for_customers("consents", [cid])
    written = consents[consents["source"].astype(str).str.contains(event, regex=False)]
    if stops:
        assert after["suggestions"] == [] and view["consent"]["email"] is False
        assert {d["reason"] for d in after["funnel"] if d["channel"] == "email"} == {"no_consent"}
        assert len(written) == 1 and not written["granted"].iloc[0] and written["channel"].iloc[0] == "email"
    else:  # a full mailbox: the consent stands (contact pressure may still hold the channel back)
        assert view["consent"]["email"] is True and written.empty
        assert "no_consent" not in {d["reason"] for d in after["funnel"] if d["channel"] == "email"}


_used: set[str] = set()


def test_only_an_unsubscribe_or_a_hard_bounce_withdraws_consent() -> None:
    from kundenwert.serving.feedback import Event

    def event(outcome: str, **extra) -> Event:
        return Event.model_validate(
            {
                "event_id": "e",
                "decision_id": "0" * 32,
                "action_id": "a",
                "channel": "email",
                "outcome": outcome,
                "occurred_at": "2026-01-01T00:00:00Z",
                **extra,
            }
        )

    assert event("unsubscribed").withdraws_consent and event("bounced").withdraws_consent
    assert event("bounced", bounce="hard").withdraws_consent
    assert not event("bounced", bounce="soft").withdraws_consent
    assert not event("opened", bounce="hard").withdraws_consent  # the type of a bounce, on no bounce
    assert not any(event(o).withdraws_consent for o in ("sent", "opened", "clicked", "converted"))


def test_retention_deletes_old_decisions_and_feedback_only(tmp_path) -> None:
    import sqlalchemy as sa

    from kundenwert.db.schema import DECISIONS, FEEDBACK
    from kundenwert.serving.retention import apply_retention

    store = Store(f"sqlite:///{tmp_path / 'kw.db'}")
    now = pd.Timestamp("2026-12-01T12:00:00Z")
    ages = {"new": 10, "edge": 729, "old": 731, "ancient": 2000}
    with store.engine.begin() as conn:
        for name, days in ages.items():
            at = now - pd.Timedelta(days=days)
            decision = f"{at.value // 1000:014x}" + "0" * 18
            conn.execute(
                DECISIONS.insert().values(
                    decision_id=decision,
                    customer_id=f"c-{name}",
                    created_at=at.isoformat(timespec="milliseconds"),  # as ServingState.record writes
                    score_run="r",
                    suggestions="[]",
                )
            )
            conn.execute(
                FEEDBACK.insert().values(
                    event_id=name,
                    payload_sha256="0" * 64,
                    decision_id=decision,
                    action_id="a",
                    channel="email",
                    outcome="opened",
                    occurred_at=at.isoformat(),
                    received_at=at.isoformat(timespec="milliseconds"),
                )
            )
        conn.execute(  # an event whose decision is gone (deleted before this release kept it)
            FEEDBACK.insert().values(
                event_id="orphan",
                payload_sha256="0" * 64,
                decision_id="f" * 32,
                action_id="a",
                channel="email",
                outcome="opened",
                occurred_at=now.isoformat(),
                received_at=now.isoformat(timespec="milliseconds"),
            )
        )
    berlin = now.tz_convert("Europe/Berlin")  # any time zone is the same instant
    assert apply_retention(store.engine, 730, berlin) == {"kw_decisions": 2, "kw_feedback": 3}
    with store.engine.connect() as conn:
        assert sorted(conn.execute(sa.select(DECISIONS.c.customer_id)).scalars()) == ["c-edge", "c-new"]
        assert sorted(conn.execute(sa.select(FEEDBACK.c.event_id)).scalars()) == ["edge", "new"]
    assert apply_retention(store.engine, 730, now) == {"kw_decisions": 0, "kw_feedback": 0}
    store.dispose()


def _scan(url: str, value: str) -> list[str]:
    """Every (table.column) of the store with a text cell equal to ``value`` (SQLite)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    found = []
    with engine.connect() as conn:
        insp = sa.inspect(conn)
        for table in insp.get_table_names():
            for col in insp.get_columns(table):
                if isinstance(col["type"], sa.String | sa.Text):
                    # equal, not contained: sample ids are parts of other rows' ids (P00000017...);
                    # tests/db/test_erasure.py scans for containment with an id that is no one's part
                    q = sa.text(f'SELECT COUNT(*) FROM "{table}" WHERE "{col["name"]}" = :v')
                    if conn.execute(q, {"v": value}).scalar():
                        found.append(f"{table}.{col['name']}")
    engine.dispose()
    return found


def test_erasure_through_the_api_and_the_command_line_reaches_the_running_service(world) -> None:
    from typer.testing import CliRunner

    from kundenwert.cli import app

    c, keys = world["client"], world["keys"]
    sales, admin = {"X-API-Key": keys["sales"]}, {"X-API-Key": keys["admin"]}
    campaign, marketing = {"X-API-Key": keys["campaign"]}, {"X-API-Key": keys["marketing"]}
    pool = [str(i) for i in world["customers"][2::3] if str(i) not in _used]
    cid, decision = _first_with(c, sales, pool, "email")
    _used.add(cid)
    _feedback(c, campaign, decision, "opened", f"opened-{cid}")
    made = c.post(
        "/v1/target-lists",
        headers=marketing,
        json={"objective": "churn_prevention", "channel": "email", "size": 100_000},
    ).json()
    listed = {m["customer_id"] for m in c.get(made["url"], headers=marketing).json()["members"]}
    assert len(_scan(world["url"], cid)) >= 5  # customers, contacts, consents, decisions, scores, ...

    old_view = c.get(f"/v1/customers/{cid}", headers=sales).json()
    assert old_view["scored"] and old_view["clv"] is not None
    assert c.delete(f"/v1/customers/{cid}", headers=sales).status_code == 403  # admin only
    r = c.delete(f"/v1/customers/{cid}", headers=admin)
    assert r.status_code == 200 and r.json()["erased"] is True, r.text
    assert _scan(world["url"], cid) == []  # no cell of any table holds the id
    with world["store"].engine.connect() as conn:  # nor the feedback event that embedded it
        assert not conn.execute(
            sa_text("SELECT COUNT(*) FROM kw_feedback WHERE event_id = :e"), {"e": f"opened-{cid}"}
        ).scalar()
    assert c.get(f"/v1/customers/{cid}", headers=sales).status_code == 404
    assert c.get(f"/v1/customers/{cid}/next-best-actions", headers=sales).status_code == 404
    scored = c.post("/v1/score", headers=campaign, json={"customer_ids": [cid]}).json()
    assert scored == {"results": [], "unknown_customer_ids": [cid]}
    later = c.post(
        "/v1/feedback",
        headers=campaign,
        json={
            "events": [
                {
                    "event_id": f"late-{cid}",
                    "decision_id": decision["decision_id"],
                    "action_id": decision["suggestions"][0]["action_id"],
                    "channel": "email",
                    "outcome": "clicked",
                    "occurred_at": pd.Timestamp.now(tz="UTC").isoformat(),
                }
            ]
        },
    )
    assert later.status_code == 404 and f"unknown decision_id {decision['decision_id']!r}" in later.text
    assert "its customer was erased" in later.text  # the message names the possible causes
    got = c.get(made["url"], headers=marketing).json()
    assert got["left_out"]["erased"] == (cid in listed) and cid not in {
        m["customer_id"] for m in got["members"]
    }
    again = c.delete(f"/v1/customers/{cid}", headers=admin)
    assert again.status_code == 200 and again.json() == {"erased": False, "already_erased": True, "rows": {}}
    assert c.delete("/v1/customers/never-was", headers=admin).status_code == 404

    # imported again as a new, lawful record: someone new, never shown the erased person's scores
    folder = world["home"] / f"again-{cid}"
    folder.mkdir()
    pd.DataFrame(
        {"customer_id": [cid], "created_at": ["2020-01-01T00:00:00Z"], "customer_type": ["consumer"]}
    ).to_csv(folder / "customers.csv", index=False)
    import_folder(folder, world["store"], mode="append", allow_erased=True)
    view = c.get(f"/v1/customers/{cid}", headers=sales).json()
    assert view["clv"] != old_view["clv"] and view["reasons"] != old_view["reasons"]
    assert cid not in c.app.state.serving.held_scores().index

    # the command line, while the service runs: the next request already answers 404
    def nba(i):
        r = c.get(f"/v1/customers/{i}/next-best-actions", headers=sales)
        assert r.status_code == 200, (i, r.status_code, r.text)
        return r.json()

    other = next(i for i in pool if i != cid and nba(i)["scored"])
    _used.add(other)
    done = CliRunner().invoke(
        app,
        ["erase", other, "--yes"],
        env={"KUNDENWERT_DATABASE_URL": world["url"], "KUNDENWERT_HOME": str(world["home"])},
    )
    assert done.exit_code == 0, done.output
    assert c.get(f"/v1/customers/{other}/next-best-actions", headers=sales).status_code == 404
    assert c.get(f"/v1/customers/{other}", headers=sales).status_code == 404
    rows = c.get("/v1/admin/audit", headers=admin, params={"action": "customer.erase"}).json()["rows"]
    assert len(rows) >= 2 and all(cid not in str(r) and other not in str(r) for r in rows)


def test_target_list_creation_and_every_export_are_audited(world) -> None:
    c, keys = world["client"], world["keys"]
    marketing, admin = {"X-API-Key": keys["marketing"]}, {"X-API-Key": keys["admin"]}
    key_id = keys["marketing"][3:].partition("_")[0]
    made = c.post(
        "/v1/target-lists",
        headers=marketing,
        json={"objective": "churn_prevention", "channel": "email", "size": 50},
    ).json()
    list_id = made["list_id"]
    as_json = c.get(made["url"], headers=marketing).json()
    c.get(made["url"], headers={"X-API-Key": keys["data_science"]}, params={"format": "csv"})
    rows = c.get("/v1/admin/audit", headers=admin).json()["rows"]
    mine = [r for r in rows if r["object_id"] == list_id]
    assert [(r["action"], r["role"]) for r in mine] == [
        ("target_list.export", "data_science"),
        ("target_list.export", "marketing"),
        ("target_list.create", "marketing"),
    ]  # newest first
    create = mine[-1]
    assert create["key_id"] == key_id and create["rows"] == made["summary"]["customers"]
    assert mine[1]["rows"] == len(as_json["members"]) and mine[1]["detail"]["format"] == "json"
    assert mine[0]["detail"]["format"] == "csv" and mine[0]["at"] >= create["at"]
    secrets = [k[3:].partition("_")[2] for k in keys.values()]
    assert not any(s in str(rows) for s in secrets)


def test_online_scores_follow_the_change_log(world) -> None:
    """A customer the run does not hold is scored online and kept; a change to their consents or
    contacts (written by anyone) drops the kept score at the next request, as it drops their
    cached rows."""
    from tests.serving.test_online import _clone_customer

    c, sales = world["client"], {"X-API-Key": world["keys"]["sales"]}
    state = c.app.state.serving
    original = next(str(i) for i in world["customers"][2::3] if str(i) not in _used)
    _used.add(original)
    _clone_customer(world["home"] / "kw.db", original, "online-1")
    r = c.get("/v1/customers/online-1/next-best-actions", headers=sales)
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["scored"] and state.current.online["online-1"][1] is not None
    kept_at = state.current.online["online-1"][0]
    assert c.get("/v1/customers/online-1", headers=sales).json()["scored"]
    assert state.current.online["online-1"][0] == kept_at  # reused while nothing changed
    _objections_by_sql(world["home"] / "kw.db", ["online-1"])
    view = c.get("/v1/customers/online-1", headers=sales).json()
    assert not view["scored"] and view["profiling_stopped"]
    again = c.get("/v1/customers/online-1/next-best-actions", headers=sales).json()
    assert not again["scored"] and again["suggestions"] == []
    assert state.current.online["online-1"][0] > kept_at  # the kept score was dropped and made again


def test_scoring_leaves_out_an_objection_made_after_the_scores_date() -> None:
    from kundenwert.serving.scoring import objecting_then_or_now

    at = pd.Timestamp("2025-01-01", tz="UTC")
    consents = pd.DataFrame(
        {
            "customer_id": ["before", "after", "lifted", "lifted", "never"],
            "channel": ["*", "*", "*", "*", "email"],
            "granted": [False, False, False, True, True],
            "recorded_at": pd.to_datetime(
                ["2024-06-01", "2025-06-01", "2024-06-01", "2025-06-01", "2024-06-01"], utc=True
            ),
            "double_opt_in": [False, False, False, False, True],
        }
    )
    # an objection after the scoring date forbids profiling today; one objecting at the date
    # stays out too (its scores would be of that date)
    assert sorted(objecting_then_or_now(consents, at)) == ["after", "before", "lifted"]


def test_the_maintenance_schedule_applies_retention(world, monkeypatch) -> None:
    import sqlalchemy as sa

    from kundenwert.db.schema import DECISIONS

    monkeypatch.setenv("KUNDENWERT_RETENTION_DAYS", "30")
    old = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=31)).isoformat(timespec="milliseconds")
    with world["store"].engine.begin() as conn:
        recent = pd.Timestamp.now(tz="UTC").isoformat(timespec="milliseconds")
        for decision_id, at in (("0" * 32, old), ("1" * 32, recent)):
            conn.execute(
                DECISIONS.insert().values(
                    decision_id=decision_id, customer_id="x", created_at=at, score_run="r", suggestions="[]"
                )
            )
    world["client"].app.state.reloader.maintain(1.0)
    with world["store"].engine.connect() as conn:
        assert (
            conn.execute(sa.select(DECISIONS.c.decision_id).where(DECISIONS.c.created_at <= old)).first()
            is None
        )
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(DECISIONS)).scalar() > 0
        )  # recent ones stay
