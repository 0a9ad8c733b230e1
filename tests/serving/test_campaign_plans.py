"""Campaign plans and optimal target lists through the API and the command line, on the served
sample world: the answer's shadow prices against a re-run with one more unit, saved plans as
target lists that feedback names, bad requests as problems naming the field, the document."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from kundenwert.cli import app

PROBLEM = "application/problem+json"
PLAN = {"objective": "churn_prevention", "channels": {"email": {}, "phone": {}}, "control_share": 0.0}
BUDGET = 1.0  # 20 e-mails: fewer than the world's candidates (about 90), so the budget binds


def _post(served, body: dict, path: str = "/v1/campaign-plans"):
    return served["client"].post(path, headers={"X-API-Key": served["keys"]["marketing"]}, json=body)


def _plan(served, capacity: dict | None = None, **change) -> dict:
    """The plan of ``PLAN`` with ``change`` and ``capacity`` (channel: contacts)."""
    channels = {c: {"capacity": capacity[c]} if c in (capacity or {}) else {} for c in PLAN["channels"]}
    r = _post(served, {**PLAN, "channels": channels, **change})
    assert r.status_code == 201, r.text[:500]
    return r.json()


def test_a_plan_spends_its_budget_better_than_greedy_and_stays_within_its_limits(served) -> None:
    plan = _plan(served, budget=BUDGET, capacity={"phone": 3})
    email, phone = plan["channels"]["email"], plan["channels"]["phone"]
    assert plan["method"] == "milp" and plan["optimal"] and plan["saved"] is False
    assert plan["cost"] <= BUDGET + 1e-9 and phone["contacts"] <= 3
    assert plan["contacts"] == email["contacts"] + phone["contacts"] > 0
    assert plan["cost"] == pytest.approx(email["cost"] + phone["cost"])
    assert email["cost"] == pytest.approx(0.05 * email["contacts"]) and phone["cost"] == pytest.approx(
        4.0 * phone["contacts"]
    )
    assert set(email["actions"]) | set(phone["actions"]) <= {"retention_voucher"}
    # never below the greedy reference, and no more than the LP bound
    assert plan["greedy"]["objective_value"] - 1e-9 <= plan["objective_value"] <= plan["lp_bound"] + 1e-9
    assert plan["gap"] == pytest.approx(plan["lp_bound"] - plan["objective_value"], abs=1e-9)
    assert plan["budget"]["limit"] == BUDGET and plan["budget"]["used"] == pytest.approx(plan["cost"])
    # no capacity asked for e-mail: the service's maximum list size stands in, far from binding
    assert email["capacity"] == 100_000 and email["capped_by_max_size"] and not phone["capped_by_max_size"]
    assert email["capacity_shadow_price"] == 0
    # the uplift is learnt in the sample world: the incremental figures are there
    assert plan["expected_incremental_value"] is not None
    assert plan["expected_incremental_value"] == pytest.approx(
        email["expected_incremental_value"] + phone["expected_incremental_value"]
    )


def test_the_plans_shadow_prices_are_what_one_more_unit_buys(served) -> None:
    """The reported gain of one more unit of money (of one more call) is the change of the LP
    value when the request is sent again with the budget (the phone capacity) raised by one;
    the shadow price bounds it from above, the raised request's price from below (the LP value
    is concave). A capacity alone makes the LP integral (one coupling row): there one more call
    raises the plan itself by the gain."""
    base = _plan(served, budget=BUDGET, capacity={"phone": 3})
    money = _plan(served, budget=BUDGET + 1, capacity={"phone": 3})
    b = base["budget"]
    assert b["used"] == pytest.approx(BUDGET, abs=0.05)  # the budget binds: it buys fewer than there are
    assert b["shadow_price"] > 0
    assert money["lp_bound"] - base["lp_bound"] == pytest.approx(b["gain"], rel=1e-6, abs=1e-7)
    assert money["budget"]["shadow_price"] - 1e-7 <= b["gain"] <= b["shadow_price"] + 1e-7

    # capacities alone (e-mail 5, phone the maximum list size) keep the LP integral: each option
    # is in one customer's row and one channel's row
    calls = _plan(served, capacity={"email": 5})
    more = _plan(served, capacity={"email": 6})
    email = calls["channels"]["email"]
    assert calls["budget"] is None and email["contacts"] == 5 and email["capacity_shadow_price"] > 0
    assert calls["objective_value"] == pytest.approx(calls["lp_bound"], rel=1e-9)
    gain = email["capacity_gain"]
    assert more["objective_value"] - calls["objective_value"] == pytest.approx(gain, rel=1e-6)
    assert more["lp_bound"] - calls["lp_bound"] == pytest.approx(gain, rel=1e-6)
    assert (
        more["channels"]["email"]["capacity_shadow_price"] - 1e-7
        <= gain
        <= email["capacity_shadow_price"] + 1e-7
    )


def test_a_saved_plan_is_a_target_list_per_channel_that_feedback_names(served) -> None:
    c, keys = served["client"], served["keys"]
    plan = _plan(served, budget=BUDGET, capacity={"phone": 3}, control_share=0.2, save=True, name="winter")
    assert plan["saved"] is True and plan["created_at"]
    marketing = {"X-API-Key": keys["marketing"]}
    lists = {}
    for channel, p in plan["channels"].items():
        if not p["contacts"]:
            assert p["list_id"] is None  # nothing to store
            continue
        assert p["url"] == f"/v1/target-lists/{p['list_id']}"
        got = c.get(p["url"], headers=marketing, params={"limit": 10_000}).json()
        members = pd.DataFrame(got["members"])
        assert got["request"]["channel"] == channel and got["request"]["name"] == f"winter ({channel})"
        assert got["request"]["selection"] == "optimal"
        assert got["summary"]["plan"]["plan_id"] == plan["plan_id"]
        assert len(members) == p["contacts"] and members["customer_id"].is_unique
        assert got["summary"]["targeted"] + got["summary"]["control"] == p["contacts"]
        assert members["cost"].sum() == pytest.approx(p["cost"])
        assert list(members["score"]) == sorted(members["score"], reverse=True)
        lists[channel] = got
    assert "email" in lists and lists["email"]["summary"]["control"] > 0  # its own control group
    # no customer is in two lists: at most one action per customer
    ids = [m["customer_id"] for got in lists.values() for m in got["members"]]
    assert len(ids) == len(set(ids))
    # feedback naming a target member of a plan's list is taken as for any list
    got = lists["email"]
    target = next(m for m in got["members"] if m["group"] == "target")
    event = {
        "event_id": f"plan-{got['list_id']}",
        "list_id": got["list_id"],
        "customer_id": target["customer_id"],
        "action_id": target["action_id"],
        "channel": "email",
        "outcome": "sent",
        "occurred_at": "2026-11-20T10:00:00Z",
    }
    feedback = {"X-API-Key": keys["campaign"]}
    r = c.post("/v1/feedback", headers=feedback, json={"events": [event]})
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    wrong = {**event, "event_id": "plan-wrong-channel", "channel": "sms"}
    assert c.post("/v1/feedback", headers=feedback, json={"events": [wrong]}).status_code == 409


def test_an_optimal_target_list_is_never_below_the_ranked_one(served) -> None:
    body = {"objective": "churn_prevention", "channel": "email", "control_share": 0.0}
    ranked = _post(served, {**body, "budget": 1.0}, "/v1/target-lists").json()["summary"]
    r = _post(served, {**body, "budget": 1.0, "selection": "optimal"}, "/v1/target-lists")
    assert r.status_code == 201, r.text
    s = r.json()["summary"]
    o = s["optimisation"]
    assert "optimisation" not in ranked  # the default stays as it was
    # one action per customer on e-mail at 0.05: the budget buys 20, ranked or optimal alike
    assert s["customers"] == ranked["customers"] == 20 and s["cost"] <= 1.0 + 1e-9
    assert o["objective_value"] >= o["ranked_objective_value"] - 1e-9 and o["optimal"]
    assert o["budget"] == 1.0 and o["budget_shadow_price"] > 0 and o["capacity"] == 100_000
    more = _post(served, {**body, "budget": 2.0, "selection": "optimal"}, "/v1/target-lists").json()
    assert more["summary"]["optimisation"]["lp_bound"] - o["lp_bound"] == pytest.approx(
        o["budget_gain"], rel=1e-6
    )


@pytest.mark.parametrize(
    ("change", "location", "words"),
    [
        (
            {"channels": {"phone": {"capacity": -1}}, "budget": 5},
            ["body", "channels", "phone", "capacity"],
            "greater than or equal to 0",
        ),
        ({"channels": {"fax": {"capacity": 5}}}, ["body", "channels", "fax", "[key]"], "unknown channel"),
        ({}, ["body"], "give a budget, a channel's capacity"),
        ({"budget": -5}, ["body", "budget"], "greater than 0"),
        ({"channels": {}, "budget": 5}, ["body", "channels"], "at least 1"),
        ({"channels": ["email", "phone"], "budget": 5}, ["body", "channels"], "valid dictionary"),
        ({"budget": 5, "save": "yes"}, ["body", "save"], "valid boolean"),
    ],
)
def test_a_bad_plan_is_a_422_naming_the_field(served, change, location, words) -> None:
    r = _post(served, {**PLAN, **change})
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM), r.text
    errors = r.json()["errors"]
    assert [e["location"] for e in errors] == [location] and words in errors[0]["message"], errors


def test_a_bad_selection_and_an_unservable_plan_are_refused(served) -> None:
    r = _post(
        served,
        {"objective": "churn_prevention", "channel": "email", "size": 5, "selection": "best"},
        "/v1/target-lists",
    )
    assert r.status_code == 422 and r.json()["errors"][0]["location"] == ["body", "selection"]
    r = _post(served, {"objective": "win_back", "channels": {"email": {}, "phone": {}}, "budget": 5})
    assert r.status_code == 409 and "no catalog action serves win_back on phone" in r.text
    r = served["client"].post(
        "/v1/campaign-plans", headers={"X-API-Key": served["keys"]["sales"]}, json={**PLAN, "budget": 5}
    )
    assert r.status_code == 403


def test_the_plan_route_is_in_the_document_with_its_statuses_and_rules(served) -> None:
    doc = served["client"].get("/openapi.json").json()
    op = doc["paths"]["/v1/campaign-plans"]["post"]
    assert {"201", "400", "401", "403", "409", "413", "422"} <= set(op["responses"])
    for status in set(op["responses"]) - {"201"}:
        assert op["responses"][status]["content"][PROBLEM]["schema"] == {
            "$ref": "#/components/schemas/Problem"
        }
    answer = op["responses"]["201"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/CampaignPlan"}
    schemas = doc["components"]["schemas"]
    request = schemas["CampaignPlanRequest"]
    channels = request["properties"]["channels"]
    assert channels["propertyNames"] == {"enum": ["email", "sms", "phone", "mail"]}
    assert channels["minProperties"] == 1
    limits = schemas["ChannelLimits"]
    assert limits["additionalProperties"] is False
    capacity = limits["properties"]["capacity"]
    assert {k: capacity[k] for k in ("type", "minimum", "maximum")} == {
        "type": "integer",
        "minimum": 0,
        "maximum": 1_000_000,
    }
    # the rule "a budget or a channel's capacity" is in the document, not only in the service
    assert {"required": ["budget"], "properties": {"budget": {"type": "number"}}} in request["anyOf"]
    [by_capacity] = [r for r in request["anyOf"] if "channels" in r["properties"]]
    assert {"required": ["phone"], "properties": {"phone": {"required": ["capacity"]}}} in by_capacity[
        "properties"
    ]["channels"]["anyOf"]
    for field in ("capacity_shadow_price", "capacity_gain", "expected_incremental_value", "contacts"):
        assert field in schemas["ChannelPlan"]["properties"]
    assert schemas["TargetListRequest"]["properties"]["selection"]["enum"] == ["ranked", "optimal"]


def test_the_cli_plans_and_saves(served) -> None:
    env = {"KUNDENWERT_HOME": str(served["home"]), "KUNDENWERT_DATABASE_URL": served["url"]}
    args = ["campaign-plan", "--objective", "churn_prevention", "--channels", "email,phone"]
    run = CliRunner().invoke(
        app, [*args, "--budget", "1", "--capacity", "phone=3", "--format", "json"], env=env
    )
    assert run.exit_code == 0, run.output
    plan = json.loads(run.output)
    api = _plan(served, budget=BUDGET, capacity={"phone": 3})
    assert plan["objective_value"] == pytest.approx(api["objective_value"]) and plan["saved"] is False
    assert plan["channels"]["phone"]["contacts"] == api["channels"]["phone"]["contacts"]
    run = CliRunner().invoke(app, [*args, "--budget", "1", "--capacity", "phone=3", "--save"], env=env)
    assert run.exit_code == 0, run.output
    assert "greedy reference" in run.output and "one more unit is worth" in run.output
    bad = CliRunner().invoke(app, [*args, "--budget", "1", "--capacity", "sms=3"], env=env)
    assert bad.exit_code == 2 and "--capacity names sms" in " ".join(bad.output.split())
    bad = CliRunner().invoke(app, [*args.copy()[:-1], "email,fax", "--budget", "1"], env=env)
    assert bad.exit_code == 2 and "unknown channel 'fax'" in " ".join(bad.output.split())
    bad = CliRunner().invoke(app, [*args, "--capacity", "phone"], env=env)
    assert bad.exit_code == 2 and "CHANNEL=N" in bad.output
