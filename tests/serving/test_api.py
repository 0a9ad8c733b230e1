"""The API on a trained, scored sample world: every endpoint x role, decisions recorded, bad input
refused with a 4xx that names it, readiness."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from kundenwert.db.store import Store
from kundenwert.serving.app import create_app
from kundenwert.serving.keys import create_key, revoke_key
from kundenwert.serving.schemas import CustomerDecision, ScoreResponse

# path -> (method, success status, roles allowed besides admin, body maker)
ENDPOINTS = {
    "/v1/customers/{id}": ("GET", 200, {"sales", "data_science"}, None),
    "/v1/customers/{id}/next-best-actions": ("GET", 200, {"sales", "data_science"}, None),
    "/v1/score": ("POST", 200, {"campaign", "data_science"}, lambda x: {"customer_ids": [x["cid"]]}),
    "/v1/feedback": ("POST", 200, {"campaign"}, lambda x: {"events": [x["event"]]}),
    "/v1/target-lists": (
        "POST",
        201,
        {"marketing"},
        lambda x: {"objective": "win_back", "channel": "email", "size": 5},
    ),
    "/v1/target-lists/{list}": ("GET", 200, {"marketing", "data_science"}, None),
    "/v1/campaign-plans": (
        "POST",
        201,
        {"marketing"},
        lambda x: {"objective": "win_back", "channels": {"email": {}}, "budget": 1.0},
    ),
    "/v1/analytics/affinity-by-age-group": ("GET", 200, {"marketing", "data_science"}, None),
    "/v1/analytics/sales-by-age-group": ("GET", 200, {"marketing", "data_science"}, None),
    "/v1/analytics/kpis": ("GET", 200, {"marketing", "data_science"}, None),
    "/v1/admin/reload": ("POST", 200, set(), lambda x: None),
}
PUBLIC = ["/health/live", "/health/ready", "/metrics"]


def _call(client, path, key, ctx):
    method, _, _, body = ENDPOINTS[path]
    headers = {} if key is None else {"X-API-Key": key}
    url = path.replace("{id}", ctx["cid"]).replace("{list}", ctx["list"])
    if method == "GET":
        return client.get(url, headers=headers)
    return client.post(url, headers=headers, json=body(ctx))


def test_every_endpoint_and_role(served) -> None:
    """The success status for the roles allowed (and admin), 403 for every other valid key, 401
    without a key, with a wrong key and with a revoked one; health and metrics are public."""
    c, keys = served["client"], served["keys"]
    admin = {"X-API-Key": keys["admin"]}
    made = c.post(
        "/v1/target-lists", headers=admin, json={"objective": "win_back", "channel": "email", "size": 5}
    )
    d, a, ch = _suggested(served)[0]
    ctx = {
        "cid": served["customers"][0],
        "list": made.json()["list_id"],
        "event": {
            "event_id": "roles-1",
            "decision_id": d,
            "action_id": a,
            "channel": ch,
            "outcome": "sent",
            "occurred_at": "2026-11-20T10:00:00Z",
        },
    }
    seen = []
    for path, (method, ok, allowed, _) in ENDPOINTS.items():
        for role, key in keys.items():
            r = _call(c, path, key, ctx)
            want = ok if role in allowed | {"admin"} else 403
            assert r.status_code == want, (method, path, role, r.status_code, r.text[:200])
            seen.append(want)
        for bad in (None, "kw_nothere_x", keys["sales"][:-2] + "xx", "Bearer something"):
            assert _call(c, path, bad, ctx).status_code == 401, (path, bad)
    assert seen.count(403) >= 20 and len(seen) == len(ENDPOINTS) * len(keys)
    for path in PUBLIC:
        assert c.get(path).status_code == 200, path
    # a revoked key stops working once the key ring is refreshed
    extra = create_key(served["store"].engine, "sales")
    c.app.state.keys.refresh()
    assert _call(c, "/v1/customers/{id}", extra, ctx).status_code == 200
    assert revoke_key(served["store"].engine, extra.split("_")[1])
    c.app.state.keys.refresh()
    assert _call(c, "/v1/customers/{id}", extra, ctx).status_code == 401


def test_next_best_actions_are_recorded_and_explained(served) -> None:
    c, key = served["client"], served["keys"]["sales"]
    engine = sa.create_engine(served["url"])
    found = 0
    for cid in served["customers"][:200]:
        r = c.get(
            f"/v1/customers/{cid}/next-best-actions", params={"explain": "true"}, headers={"X-API-Key": key}
        )
        assert r.status_code == 200
        body = r.json()
        assert CustomerDecision.model_validate(body).model_dump() == body  # the documented shape
        assert body["model_versions"] and body["funnel"] is not None
        assert all(d["reason"] and d["explanation"] for d in body["funnel"])
        if body["suggestions"]:
            found += 1
            for sug in body["suggestions"]:  # retention rests on churn risk, cross-sell on value
                assert len(sug["reasons"]) == 3, sug
            view = c.get(f"/v1/customers/{cid}", headers={"X-API-Key": key}).json()
            kinds = {"retention": "churn", "win_back": "winback"}
            for sug in body["suggestions"]:
                assert sug["reasons"] == view["reasons"][kinds.get(sug["kind"], "value")]
            ranks = [
                s["rank"] for s in body["suggestions"] if s["channel"] == body["suggestions"][0]["channel"]
            ]
            assert ranks == sorted(ranks) and ranks[0] == 1
            c.app.state.serving.decisions.flush()
            with engine.connect() as conn:
                row = conn.execute(
                    sa.text("SELECT customer_id, suggestions FROM kw_decisions WHERE decision_id = :d"),
                    {"d": body["decision_id"]},
                ).one()
            assert row.customer_id == cid
            assert [(s["action_id"], s["channel"]) for s in json.loads(row.suggestions)] == [
                (s["action_id"], s["channel"]) for s in body["suggestions"]
            ]
        else:
            assert body["decision_id"] is None
    assert found >= 20


def test_the_sales_view(served) -> None:
    c, key = served["client"], served["keys"]["sales"]
    views = [
        c.get(f"/v1/customers/{cid}", headers={"X-API-Key": key}).json() for cid in served["customers"][:200]
    ]
    scored = [v for v in views if v["scored"]]
    assert len(scored) > 150
    for v in scored:
        assert v["clv"] is not None and len(v["top_affinities"]) == 3
        status = v["profile"]["status"]
        assert (v["churn_risk"] is not None) == (status == "active")
        assert (v["winback_chance"] is not None) == (status == "lapsed")
    for v in scored:  # the reasons behind each score, in sentences
        assert len(v["reasons"]["value"]) == 3
        assert (len(v["reasons"]["churn"]) == 3) == (v["profile"]["status"] == "active")
        assert (len(v["reasons"]["winback"]) == 3) == (v["profile"]["status"] == "lapsed")
        assert all(r["direction"] in ("raises", "lowers") and r["reason"] for r in v["reasons"]["value"])
    objecting = [v for v in views if v["consent"]["objection"]]
    assert all(not v["scored"] and v["clv"] is None for v in objecting)


def test_bad_requests_name_the_problem(served) -> None:
    c = served["client"]
    h = {"X-API-Key": served["keys"]["campaign"]}
    r = c.post("/v1/score", headers=h, json={"customer_ids": [f"{i}" for i in range(10_001)]})
    assert r.status_code == 422 and "customer_ids" in r.text
    r = c.post("/v1/score", headers=h, json={"customer_ids": ["x"], "channels": ["fax"]})
    assert r.status_code == 422 and "fax" in r.text
    r = c.post("/v1/score", headers=h, json={"customer_ids": ["x"], "actions": ["bribe"]})
    assert r.status_code == 409 and "bribe" in r.text  # well formed; the catalog has no such action
    r = c.post("/v1/score", headers=h, json={"customer_ids": ["x"], "surprise": 1})
    assert r.status_code == 422 and "surprise" in r.text
    ids = served["customers"][:50] + ["no-such-customer"]
    r = c.post("/v1/score", headers=h, json={"customer_ids": ids, "channels": ["email"], "limit": 2})
    body = r.json()
    assert ScoreResponse.model_validate(body).model_dump() == body
    assert r.status_code == 200 and body["unknown_customer_ids"] == ["no-such-customer"]
    assert [x["customer_id"] for x in body["results"]] == served["customers"][:50]
    assert all(s["channel"] == "email" for x in body["results"] for s in x["suggestions"])
    assert all(len(x["suggestions"]) <= 2 for x in body["results"])
    s = {"X-API-Key": served["keys"]["sales"]}
    assert c.get("/v1/customers/no-such-customer", headers=s).status_code == 404
    assert c.get(f"/v1/customers/{ids[0]}/next-best-actions?channel=fax", headers=s).status_code == 422


def test_not_ready_until_scores_exist(tmp_path, imported_world) -> None:
    _, folder = imported_world(3_000, 5)
    shutil.copy(folder / "kw.db", tmp_path / "kw.db")
    store = Store(f"sqlite:///{tmp_path / 'kw.db'}")
    key = create_key(store.engine, "sales")
    with TestClient(create_app(store)) as c:
        r = c.get("/health/ready")
        assert r.status_code == 503 and "kundenwert score" in r.json()["error"]
        assert c.get("/health/live").status_code == 200
        assert c.get("/v1/customers/00000001", headers={"X-API-Key": key}).status_code == 503


def _suggested(served) -> list[tuple[str, str, str]]:
    """(decision_id, action_id, channel) of every suggestion for every customer (one /v1/score)."""
    c = served["client"]
    r = c.post(
        "/v1/score",
        headers={"X-API-Key": served["keys"]["campaign"]},
        json={"customer_ids": served["customers"]},
    )
    assert r.status_code == 200
    return [
        (x["decision_id"], s["action_id"], s["channel"])
        for x in r.json()["results"]
        for s in x["suggestions"]
    ]


def _events(suggested, n: int, prefix: str, seed: int) -> list[dict]:
    import random

    rng = random.Random(seed)
    # no unsubscribes and only soft bounces: those withdraw consent (tests/serving/test_data_protection.py),
    # which would empty the shared world's email lists for the tests after these
    outcomes = ["sent", "opened", "clicked", "converted", "bounced"]
    out = []
    for i in range(n):
        d, a, ch = rng.choice(suggested)
        outcome = rng.choice(outcomes)
        out.append(
            {
                "event_id": f"{prefix}-{i}",
                "decision_id": d,
                "action_id": a,
                "channel": ch,
                "outcome": outcome,
                "occurred_at": f"2026-11-{1 + i % 20:02d}T10:00:00Z",
                **({"bounce": "soft"} if outcome == "bounced" else {}),
            }
        )
    return out


def test_feedback_10000_events_with_30_percent_duplicates_sent_concurrently(served) -> None:
    """13,000 events (10,000 distinct + 3,000 repeats with the same payload) in shuffled batches of
    100 from 8 threads at once: exactly 10,000 stored, the answers add up, and every contact of a
    (decision, action, channel) carries its furthest outcome."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    c, key = served["client"], served["keys"]["campaign"]
    suggested = _suggested(served)
    assert len(suggested) > 500
    events = _events(suggested, 10_000, "load", seed=1)
    rng = random.Random(2)
    sent = events + [dict(e) for e in rng.sample(events, 3_000)]
    rng.shuffle(sent)
    batches = [sent[i : i + 100] for i in range(0, len(sent), 100)]

    def post(batch):
        r = c.post("/v1/feedback", headers={"X-API-Key": key}, json={"events": batch})
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, batches))
    assert sum(a["stored"] for a in answers) == 10_000 and sum(a["duplicates"] for a in answers) == 3_000
    engine = sa.create_engine(served["url"])
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT count(*) FROM kw_feedback WHERE event_id LIKE 'load-%'")
        ).scalar()
        contacts = pd.read_sql(
            sa.text(
                "SELECT contact_id, outcome, direction, action_id FROM contacts WHERE contact_id LIKE 'kw-%'"
            ),
            conn,
        )
    assert stored == 10_000
    from kundenwert.serving.feedback import OUTCOMES, STAGE, contact_id_of

    want: dict[str, str] = {}
    for e in events:  # the furthest outcome per contact
        cid = contact_id_of(e["decision_id"], e["action_id"], e["channel"])
        o = OUTCOMES[e["outcome"]]
        if cid not in want or STAGE[o] > STAGE[want[cid]]:
            want[cid] = o
    got = dict(zip(contacts["contact_id"], contacts["outcome"], strict=True))
    assert set(got) >= set(want) and {k: got[k] for k in want} == want
    assert set(contacts["direction"]) == {"outbound"}


def test_feedback_conflicts_and_unknown_decisions_are_refused_whole(served) -> None:
    c, key = served["client"], served["keys"]["campaign"]
    suggested = _suggested(served)
    first = _events(suggested, 3, "conflict", seed=3)
    assert c.post("/v1/feedback", headers={"X-API-Key": key}, json={"events": first}).json() == {
        "stored": 3,
        "duplicates": 0,
    }
    other = "converted" if first[0]["outcome"] != "converted" else "opened"
    changed = [{k: v for k, v in first[0].items() if k != "bounce"} | {"outcome": other}]
    fresh = _events(suggested, 1, "conflict-new", seed=4)
    r = c.post("/v1/feedback", headers={"X-API-Key": key}, json={"events": fresh + changed})
    assert r.status_code == 409 and "conflict-0" in r.text
    engine = sa.create_engine(served["url"])
    with engine.connect() as conn:
        assert (
            conn.execute(
                sa.text("SELECT count(*) FROM kw_feedback WHERE event_id = 'conflict-new-0'")
            ).scalar()
            == 0
        )
    wrong = [dict(first[1], event_id="x-1", decision_id="0" * 32)]
    r = c.post("/v1/feedback", headers={"X-API-Key": key}, json={"events": wrong})
    assert r.status_code == 404 and "unknown decision_id" in r.text
    wrong = [dict(first[1], event_id="x-2", action_id="not_suggested")]
    r = c.post("/v1/feedback", headers={"X-API-Key": key}, json={"events": wrong})
    assert r.status_code == 409 and "did not suggest" in r.text
    r = c.post(
        "/v1/feedback", headers={"X-API-Key": key}, json={"events": [dict(first[1], outcome="teleported")]}
    )
    assert r.status_code == 422


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(served, port: int):
    import os
    import subprocess
    import sys
    import time

    import httpx

    env = {**os.environ, "KUNDENWERT_DATABASE_URL": served["url"], "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kundenwert.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode()[-2000:])
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the server did not get ready in 90 s")


@pytest.mark.integration
def test_a_killed_server_loses_no_acknowledged_feedback(served) -> None:
    """A real server (uvicorn, SQLite store) gets feedback batches until it is killed with SIGKILL
    mid-stream; after a restart every event of every batch that got a 2xx is stored, and
    resending everything stores each event exactly once."""
    import signal
    import threading

    import httpx

    suggested = _suggested(served)
    events = _events(suggested, 4_000, "kill", seed=7)
    batches = [events[i : i + 25] for i in range(0, len(events), 25)]
    port = _free_port()
    proc = _start_server(served, port)
    acknowledged: list[str] = []
    headers = {"X-API-Key": served["keys"]["campaign"]}

    def send() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as client:
            for batch in batches:
                try:
                    r = client.post("/v1/feedback", json={"events": batch})
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    acknowledged.extend(e["event_id"] for e in batch)

    sender = threading.Thread(target=send)
    sender.start()
    while len(acknowledged) < 1_000 and sender.is_alive():
        threading.Event().wait(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    sender.join()
    assert 1_000 <= len(acknowledged) < len(events)  # killed mid-stream

    engine = sa.create_engine(served["url"])
    with engine.connect() as conn:
        stored = {
            r[0]
            for r in conn.execute(sa.text("SELECT event_id FROM kw_feedback WHERE event_id LIKE 'kill-%'"))
        }
    assert set(acknowledged) <= stored  # nothing acknowledged was lost

    proc = _start_server(served, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
            answers = [client.post("/v1/feedback", json={"events": b}).json() for b in batches]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert sum(a["stored"] for a in answers) == len(events) - len(stored)
    with engine.connect() as conn:
        count = conn.execute(
            sa.text("SELECT count(*) FROM kw_feedback WHERE event_id LIKE 'kill-%'")
        ).scalar()
    assert count == len(events)


def test_target_lists_respect_consent_filters_size_and_control(served) -> None:
    from kundenwert.serving.live import consent_now

    c, h = served["client"], {"X-API-Key": served["keys"]["marketing"]}
    body = {
        "name": "retention test",
        "objective": "churn_prevention",
        "channel": "email",
        "filters": {"age_groups": ["25-34", "35-44", "45-54"], "min_clv": 1.0},
        "size": 150,
        "control_share": 0.2,
    }
    r = c.post("/v1/target-lists", headers=h, json=body)
    assert r.status_code == 201, r.text
    made = r.json()
    got = c.get(made["url"], headers=h).json()
    members = pd.DataFrame(got["members"])
    s = got["summary"]
    # (earlier feedback tests put contacts into the last 30 days: contact pressure thins the list)
    assert s["customers"] == len(members) >= 10 and len(members) <= 150
    assert (
        s["targeted"] + s["control"] == len(members) == s["targeted"] + (members["group"] == "control").sum()
    )
    target = members[members["group"] == "target"]
    assert s["expected_responders"] == pytest.approx(target["propensity"].sum())
    assert s["expected_value"] == pytest.approx(target["expected_value"].sum())
    assert list(members["score"]) == sorted(members["score"], reverse=True)  # best first
    assert set(members["action_id"]) == {"retention_voucher"} and members["customer_id"].is_unique
    scores = served["client"].app.state.serving.scores.loc[members["customer_id"]]
    assert set(scores["age_group"]) <= {"25-34", "35-44", "45-54"} and (scores["clv"] >= 1.0).all()
    assert (scores["status"] == "active").all()
    consent = consent_now(served["store"].read_table("consents"), pd.Timestamp.now(tz="UTC"))
    assert consent.reindex(members["customer_id"])["email"].fillna(False).all()  # every one may get email
    csv = c.get(made["url"], headers=h, params={"format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].split(",")[:4] == ["position", "customer_id", "group", "action_id"]
    assert len(csv.text.splitlines()) == len(members) + 1
    # a budget instead of a size: the targeted cost stays within it
    everyone = c.post(
        "/v1/target-lists", headers=h, json={**body, "size": 100_000, "control_share": 0}
    ).json()
    available = everyone["summary"]["targeted"]
    r = c.post("/v1/target-lists", headers=h, json={**body, "size": None, "budget": 0.5, "control_share": 0})
    assert r.status_code == 201 and r.json()["summary"]["cost"] <= 0.5
    assert r.json()["summary"]["targeted"] == min(10, available)  # 0.05 per email
    # unclear requests are refused with the reason
    r = c.post("/v1/target-lists", headers=h, json={"objective": "cross_sell", "channel": "email", "size": 5})
    assert r.status_code == 422 and "category" in r.text
    r = c.post("/v1/target-lists", headers=h, json={"objective": "win_back", "channel": "phone", "size": 5})
    assert r.status_code == 409 and "no catalog action serves win_back on phone" in r.text
    assert c.get("/v1/target-lists/nope", headers=h).status_code == 404


def test_analytics(served) -> None:
    c, h = served["client"], {"X-API-Key": served["keys"]["marketing"]}
    rows = c.get("/v1/analytics/affinity-by-age-group", headers=h).json()["rows"]
    assert rows and all(r["customers"] >= 20 for r in rows)
    assert {r["category"] for r in rows} >= {"electronics", "fashion"}
    k = c.get("/v1/analytics/kpis", headers=h, params={"days": 3650}).json()
    offers = served["store"].read_table("offers", ["status", "amount"])
    assert k["pending_offer_revenue"] == pytest.approx(offers.loc[offers["status"] == "open", "amount"].sum())
    assert sum(k["customers"].values()) + k["customers_not_profiled"] == len(served["customers"])
    assert sum(v["contacts"] for v in k["contacts_per_channel"].values()) > 1_000


def test_reload_swaps_runs_and_keeps_serving_when_it_fails(served, monkeypatch) -> None:
    from kundenwert.serving import state as S

    c, h = served["client"], {"X-API-Key": served["keys"]["admin"]}
    before = c.get("/health/ready").json()["score_run"]
    r = c.post("/v1/admin/reload", headers=h)
    assert r.status_code == 200 and r.json()["score_run"] == before
    from kundenwert.errors import ConfigurationError

    def broken(_engine):
        raise ConfigurationError("the scores table is unreadable")

    monkeypatch.setattr(S, "read_scores", broken)
    r = c.post("/v1/admin/reload", headers=h)
    assert r.status_code == 409 and "still serving run" in r.text
    cid = served["customers"][0]
    assert (
        c.get(
            f"/v1/customers/{cid}/next-best-actions", headers={"X-API-Key": served["keys"]["sales"]}
        ).status_code
        == 200
    )
    assert c.get("/health/ready").json()["score_run"] == before


def test_every_suggestion_with_an_uplift_carries_the_interval_of_its_calibration_bin(served) -> None:
    from kundenwert.models.response import interval_of

    c, key = served["client"], {"X-API-Key": served["keys"]["sales"]}
    model = c.app.state.serving.current.models["response"]
    table = model.uplift_calibration_
    assert table is not None
    seen = 0
    for cid in served["customers"][:150]:
        for s in c.get(f"/v1/customers/{cid}/next-best-actions", headers=key).json()["suggestions"]:
            if s["uplift"] is None:
                assert s["uplift_interval"] is None
                continue
            low, high = interval_of(table, [s["uplift"]])
            assert s["uplift_interval"] == [low[0], high[0]]
            seen += 1
    assert seen >= 20
