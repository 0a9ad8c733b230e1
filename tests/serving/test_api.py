"""The API on a trained, scored sample world: every endpoint x role, decisions recorded, bad input
refused with a 4xx that names it, readiness."""

from __future__ import annotations

import json
import shutil

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from kundenwert.features.store import Store
from kundenwert.serving.app import create_app
from kundenwert.serving.keys import ROLES, create_key, revoke_key
from kundenwert.training.config import MODELS, ExperimentConfig


@pytest.fixture(scope="module")
def served(imported_world, tmp_path_factory):
    from kundenwert.serving.catalog import load_catalog
    from kundenwert.serving.scoring import run_scoring
    from kundenwert.training.run import run_training

    _, folder = imported_world(3_000, 5)
    home = tmp_path_factory.mktemp("kw-serve")
    shutil.copy(folder / "kw.db", home / "kw.db")  # the shared world stays untouched
    url = f"sqlite:///{home / 'kw.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("KUNDENWERT_HOME", str(home))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = ExperimentConfig.model_validate(
        {"models": {m: {"params": {"max_iter": 30}} for m in MODELS}, "data": {"max_train_cutoffs": 2}}
    )
    store = Store(url)
    run_training(cfg, store=store)
    run_scoring(store, load_catalog())
    keys = {role: create_key(store.engine, role) for role in ROLES}
    customers = store.read_table("customers", ["customer_id"])["customer_id"].tolist()
    with TestClient(create_app(Store(url))) as client:
        yield {"client": client, "keys": keys, "store": store, "customers": customers, "url": url}
    mp.undo()


ENDPOINTS = {
    # (method, path, body): roles allowed besides admin
    ("GET", "/v1/customers/{id}", None): {"sales", "data_science"},
    ("GET", "/v1/customers/{id}/next-best-actions", None): {"sales", "data_science"},
    ("POST", "/v1/score", "score"): {"campaign", "data_science"},
}
PUBLIC = ["/health/live", "/health/ready", "/metrics"]


def _call(client, method, path, body, key, cid):
    headers = {} if key is None else {"X-API-Key": key}
    url = path.replace("{id}", cid)
    if method == "GET":
        return client.get(url, headers=headers)
    return client.post(url, headers=headers, json={"customer_ids": [cid]})


def test_every_endpoint_and_role(served) -> None:
    """200 for the roles allowed (and admin), 403 for every other valid key, 401 without a key, with
    a wrong key and with a revoked one."""
    c, keys = served["client"], served["keys"]
    cid = served["customers"][0]
    seen = []
    for (method, path, body), allowed in ENDPOINTS.items():
        for role, key in keys.items():
            r = _call(c, method, path, body, key, cid)
            want = 200 if role in allowed | {"admin"} else 403
            assert r.status_code == want, (method, path, role, r.status_code, r.text[:200])
            seen.append(want)
        for bad in (None, "kw_nothere_x", keys["sales"][:-2] + "xx", "Bearer something"):
            r = _call(c, method, path, body, bad, cid)
            assert r.status_code == 401, (method, path, bad, r.status_code)
    assert seen.count(403) >= 6 and seen.count(200) >= 9
    for path in PUBLIC:
        assert c.get(path).status_code == 200, path
    # a revoked key stops working once the key ring is refreshed
    extra = create_key(served["store"].engine, "sales")
    c.app.state.keys.refresh()
    assert _call(c, "GET", "/v1/customers/{id}", None, extra, cid).status_code == 200
    assert revoke_key(served["store"].engine, extra.split("_")[1])
    c.app.state.keys.refresh()
    assert _call(c, "GET", "/v1/customers/{id}", None, extra, cid).status_code == 401


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
        assert body["model_versions"] and body["funnel"] is not None
        assert all(d["reason"] and d["explanation"] for d in body["funnel"])
        if body["suggestions"]:
            found += 1
            ranks = [
                s["rank"] for s in body["suggestions"] if s["channel"] == body["suggestions"][0]["channel"]
            ]
            assert ranks == sorted(ranks) and ranks[0] == 1
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
    assert r.status_code == 422 and "bribe" in r.text
    r = c.post("/v1/score", headers=h, json={"customer_ids": ["x"], "surprise": 1})
    assert r.status_code == 422 and "surprise" in r.text
    ids = served["customers"][:50] + ["no-such-customer"]
    r = c.post("/v1/score", headers=h, json={"customer_ids": ids, "channels": ["email"], "limit": 2})
    body = r.json()
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
