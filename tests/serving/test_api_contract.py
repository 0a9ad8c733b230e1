"""The API's contract: every error is one problem body (RFC 9457) with the status the OpenAPI
document lists for the operation; inputs are bounded (ids, lists, bodies); target lists are read
in pages and exported as a stream."""

from __future__ import annotations

import csv
import io
import json
import logging
import uuid

import numpy as np
import pandas as pd
import pytest

from kundenwert.errors import StoreUnavailable
from kundenwert.serving.deps import get_state
from kundenwert.serving.target_lists import TargetListRequest, save_target_list

PROBLEM = "application/problem+json"
KEYED = {"401", "403", "429", "503"}
WITH_BODY = {
    ("post", "/v1/score"),
    ("post", "/v1/feedback"),
    ("post", "/v1/target-lists"),
    ("post", "/v1/campaign-plans"),
}


def _problem(r, status: int) -> dict:
    """The answer's problem body, checked against RFC 9457's members and the status."""
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["type"].startswith("https://kundenwert.dev/problems/")
    assert isinstance(body["title"], str) and isinstance(body["detail"], str)
    return body


def _locations(body: dict) -> list[list]:
    return [e["location"] for e in body["errors"]]


@pytest.fixture
def campaign(served):
    return served["client"], {"X-API-Key": served["keys"]["campaign"]}


def test_a_control_character_in_an_id_is_a_422_not_a_500(served, campaign) -> None:
    c, h = campaign
    body = _problem(c.post("/v1/score", headers=h, json={"customer_ids": ["ok", "a\u0000b"]}), 422)
    assert _locations(body) == [["body", "customer_ids", 1]] and "control characters" in body["detail"]
    sales = {"X-API-Key": served["keys"]["sales"]}
    for path in ("/v1/customers/a%00b", "/v1/customers/a%00b/next-best-actions"):
        assert _locations(_problem(c.get(path, headers=sales), 422)) == [["path", "customer_id"]]


def test_an_id_of_201_characters_is_refused(served, campaign) -> None:
    c, h = campaign
    body = _problem(c.post("/v1/score", headers=h, json={"customer_ids": ["x" * 201]}), 422)
    assert _locations(body) == [["body", "customer_ids", 0]] and "at most 200 characters" in body["detail"]
    assert "x" * 41 not in json.dumps(body)  # quoted short, if at all
    sales = {"X-API-Key": served["keys"]["sales"]}
    assert _locations(_problem(c.get(f"/v1/customers/{'x' * 201}", headers=sales), 422)) == [
        ["path", "customer_id"]
    ]


def test_10001_ids_are_refused_without_echoing_them(campaign) -> None:
    c, h = campaign
    r = c.post("/v1/score", headers=h, json={"customer_ids": [f"id-{i:05d}" for i in range(10_001)]})
    body = _problem(r, 422)
    assert _locations(body) == [["body", "customer_ids"]] and "input" not in body["errors"][0]
    assert len(r.content) < 2_000 and "id-10000" not in r.text


def test_many_invalid_fields_are_listed_up_to_20(campaign) -> None:
    c, h = campaign
    r = c.post("/v1/score", headers=h, json={"customer_ids": [""] * 50})
    body = _problem(r, 422)
    assert len(body["errors"]) == 20 and body["errors_not_listed"] == 30
    assert _locations(body)[:2] == [["body", "customer_ids", 0], ["body", "customer_ids", 1]]


def test_a_body_over_the_limit_is_a_413_before_it_is_parsed(campaign) -> None:
    c, h = campaign
    big = json.dumps({"customer_ids": ["x" * 100] * 21_000}).encode()  # 2 MiB
    assert len(big) > 2 * 2**20
    body = _problem(c.post("/v1/score", headers={**h, "content-type": "application/json"}, content=big), 413)
    assert "KUNDENWERT_MAX_BODY_BYTES" in body["detail"]

    def chunks():  # no Content-Length: the bytes are counted as they arrive
        for i in range(0, len(big), 64 * 1024):
            yield big[i : i + 64 * 1024]

    r = c.post("/v1/score", headers={**h, "content-type": "application/json"}, content=chunks())
    _problem(r, 413)
    # just under the limit is parsed (and validated) as always
    small = json.dumps({"customer_ids": ["x" * 100] * 9_000}).encode()
    assert len(small) < 2**20
    r = c.post("/v1/score", headers={**h, "content-type": "application/json"}, content=small)
    assert r.status_code == 200


def test_an_unknown_channel_is_a_422_naming_the_channels(served, campaign) -> None:
    c, h = campaign
    body = _problem(c.post("/v1/score", headers=h, json={"customer_ids": ["x"], "channels": ["fax"]}), 422)
    assert _locations(body) == [["body", "channels", 0]] and "unknown channel 'fax'" in body["detail"]
    assert "email, sms, phone, mail" in body["errors"][0]["message"]
    sales = {"X-API-Key": served["keys"]["sales"]}
    r = c.get(f"/v1/customers/{served['customers'][0]}/next-best-actions?channel=fax", headers=sales)
    assert _locations(_problem(r, 422)) == [["query", "channel"]]
    marketing = {"X-API-Key": served["keys"]["marketing"]}
    r = c.post(
        "/v1/target-lists", headers=marketing, json={"objective": "win_back", "channel": "fax", "size": 5}
    )
    assert _locations(_problem(r, 422)) == [["body", "channel"]]


def test_our_own_errors_and_http_errors_are_problems_too(served, campaign) -> None:
    c, h = campaign
    r = c.post("/v1/score", headers={}, json={"customer_ids": ["x"]})
    assert _problem(r, 401)["detail"] == "missing or invalid API key"
    assert r.headers["www-authenticate"] == "X-API-Key"
    assert "may not do this" in _problem(c.get("/v1/analytics/kpis", headers=h), 403)["detail"]
    marketing = {"X-API-Key": served["keys"]["marketing"]}
    assert (
        _problem(c.get("/v1/target-lists/nope", headers=marketing), 404)["detail"] == "no target list 'nope'"
    )
    body = _problem(c.post("/v1/score", headers=h, json={"customer_ids": ["x"], "actions": ["bribe"]}), 409)
    assert body["detail"] == "unknown action(s) bribe" and body.get("errors") is None
    _problem(c.get("/no/such/path"), 404)


def test_a_locked_store_is_a_503_with_retry_after(served, campaign) -> None:
    c, h = campaign
    app = c.app

    def locked():
        raise StoreUnavailable("the store is locked by another writer: retry later")

    app.dependency_overrides[get_state] = locked
    try:
        r = c.post("/v1/score", headers=h, json={"customer_ids": ["x"]})
    finally:
        del app.dependency_overrides[get_state]
    body = _problem(r, 503)
    assert body["type"].endswith("/store-unavailable") and int(r.headers["retry-after"]) >= 1


def test_an_unexpected_error_is_a_500_problem_without_its_text(served, campaign, caplog) -> None:
    c, h = campaign
    app = c.app
    secret = served["customers"][0]

    def broken():
        raise RuntimeError(f"customer {secret} broke it")

    app.dependency_overrides[get_state] = broken
    try:
        with caplog.at_level(logging.ERROR, logger="kundenwert.serving"):
            r = c.post("/v1/score", headers=h, json={"customer_ids": [secret]})
    finally:
        del app.dependency_overrides[get_state]
    body = _problem(r, 500)
    assert secret not in r.text and "RuntimeError" not in r.text and "broke" not in r.text
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "RuntimeError" in logged and "/v1/score" in logged and secret not in logged
    assert body["type"].endswith("/internal")
    assert c.get("/health/live").status_code == 200  # and the service goes on


def test_the_openapi_lists_every_status_with_the_problem_schema(served) -> None:
    doc = served["client"].get("/openapi.json").json()
    assert doc["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status", "detail"]
    keyed = 0
    for path, ops in doc["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, op in ops.items():
            keyed += 1
            listed = set(op["responses"])
            need = KEYED | ({"400", "413", "422"} if (method, path) in WITH_BODY else set())
            if op.get("parameters"):
                need |= {"422"}
            if "{" in path:
                need |= {"404"}
            assert need <= listed, (method, path, need - listed)
            for status in listed - {"200", "201"}:
                content = op["responses"][status]["content"]
                assert content[PROBLEM]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert keyed >= 11
    schemas = doc["components"]["schemas"]
    channels = ["email", "sms", "phone", "mail"]
    assert schemas["ScoreRequest"]["properties"]["channels"]["anyOf"][0]["items"]["enum"] == channels
    assert schemas["Event"]["properties"]["channel"]["enum"] == channels
    assert schemas["TargetListRequest"]["properties"]["channel"]["enum"] == channels
    assert "examples" not in schemas["Event"]  # a fixed decision id is never a valid example
    ids = schemas["ScoreRequest"]["properties"]["customer_ids"]
    assert ids["maxItems"] == 10_000 and ids["items"]["maxLength"] == 200


@pytest.fixture(scope="module")
def big_list(served) -> str:
    """A stored list of every customer of the sample world (3,000), as a list of that size would
    be saved."""
    ids = served["customers"]
    n = len(ids)
    request = TargetListRequest(objective="churn_prevention", channel="email", size=n)
    members = pd.DataFrame(
        {
            "position": np.arange(1, n + 1),
            "customer_id": ids,
            "group": np.where(np.arange(n) % 10 == 0, "control", "target"),
            "action_id": "retention_voucher",
            "score": np.linspace(5, 0, n),
            "propensity": 0.1,
            "expected_value": 1.0,
            "cost": 0.05,
        }
    )
    list_id = uuid.uuid4().hex
    summary = {"customers": n, "targeted": int((members["group"] == "target").sum())}
    save_target_list(served["store"].engine, list_id, request, summary, members)
    return list_id


def test_pages_walk_a_list_once_and_the_csv_stream_equals_them(served, big_list) -> None:
    c, h = served["client"], {"X-API-Key": served["keys"]["marketing"]}
    seen, cursor, pages = [], None, 0
    while True:
        r = c.get(f"/v1/target-lists/{big_list}", headers=h, params={"cursor": cursor} if cursor else {})
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["members"]) <= 1000
        seen += page["members"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    left_out = page["left_out"]
    assert len(seen) > 1000 and pages == -(-len(seen) // 1000)
    ids = [m["customer_id"] for m in seen]
    assert len(ids) == len(set(ids)) and len(ids) + left_out["total"] == len(served["customers"])
    assert [m["position"] for m in seen] == sorted(m["position"] for m in seen)
    small = c.get(f"/v1/target-lists/{big_list}", headers=h, params={"limit": 7}).json()
    assert small["members"] == seen[:7] and small["next_cursor"]
    r = c.get(f"/v1/target-lists/{big_list}", headers=h, params={"format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    assert int(r.headers["x-left-out-total"]) == left_out["total"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["customer_id"] for row in rows] == ids
    assert [int(row["position"]) for row in rows] == [m["position"] for m in seen]
    assert _problem(c.get(f"/v1/target-lists/{big_list}", headers=h, params={"limit": 10_001}), 422)
    r = c.get(f"/v1/target-lists/{big_list}", headers=h, params={"cursor": "!!"})
    assert _problem(r, 422)["errors"][0]["location"] == ["query", "cursor"]  # the document's pattern
    past_the_end = c.get(f"/v1/target-lists/{big_list}", headers=h, params={"cursor": "9" * 18})
    assert past_the_end.status_code == 200 and past_the_end.json()["members"] == []


def test_a_list_is_cut_to_the_configured_maximum(served, monkeypatch) -> None:
    c, h = served["client"], {"X-API-Key": served["keys"]["marketing"]}
    monkeypatch.setenv("KUNDENWERT_MAX_TARGET_LIST", "3")
    r = c.post(
        "/v1/target-lists", headers=h, json={"objective": "churn_prevention", "channel": "email", "size": 50}
    )
    assert r.status_code == 201, r.text
    summary = r.json()["summary"]
    assert summary["customers"] == 3 and summary["cut_to_max_size"] == 3
    r = c.post(
        "/v1/target-lists",
        headers=h,
        json={"objective": "churn_prevention", "channel": "email", "budget": 1e6},
    )
    assert r.json()["summary"]["customers"] == 3 and r.json()["summary"]["cut_to_max_size"] == 3


def test_a_wrong_method_lists_every_method_of_the_path(served) -> None:
    """A path served by several routes (a customer: GET, DELETE) names them all in ``Allow``;
    FastAPI wraps included routers, so the first route matched alone said too little (or, on a
    real server, nothing)."""
    c, h = served["client"], {"X-API-Key": served["keys"]["admin"]}
    customer = served["customers"][0]
    r = c.request("OPTIONS", f"/v1/customers/{customer}", headers=h)
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET"
    assert _problem(c.request("PUT", "/v1/score", headers=h), 405)["detail"] == (
        "PUT is not allowed here; allowed: POST"
    )
