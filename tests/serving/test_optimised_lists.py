"""Budget-optimised target lists and campaign plans on hand-made candidates (no served world):
the arbitration's answer is given (a ``decide`` that returns fixed rows), so the cases can be
built where ranking by score is worse than the optimum, and checked against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from kundenwert.serving.arbitration import COLUMNS
from kundenwert.serving.campaign_plans import CampaignPlanRequest, plan_campaign
from kundenwert.serving.catalog import Catalog
from kundenwert.serving.target_lists import TargetListRequest, build_target_list

CATALOG = Catalog.model_validate(
    {
        "actions": [
            {
                "id": "big_voucher",
                "kind": "retention",
                "title": "A big voucher",
                "channels": {"email": 10.0, "phone": 10.0},
                "value": "clv",
                "control_share": 0.0,
            },
            {
                "id": "small_voucher",
                "kind": "retention",
                "title": "A small voucher",
                "channels": {"email": 1.0, "phone": 1.0},
                "value": "clv",
                "control_share": 0.0,
            },
        ]
    }
)


class _Decided:
    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame

    def frame(self) -> pd.DataFrame:
        return self._frame


def _world(rows: list[tuple]) -> tuple[object, pd.DataFrame]:
    """(decide, scores) serving ``rows`` = (customer, action, channel, score, cost) as kept
    candidates, ranked by uplift (incremental value = score + cost, uplift = a tenth of it)."""
    f = pd.DataFrame(rows, columns=["customer_id", "action_id", "channel", "score", "cost"])
    f["incremental_value"] = f["score"] + f["cost"]
    f["uplift"] = f["incremental_value"] / 100
    f["propensity"] = 0.5
    f["value"] = 2 * f["incremental_value"]
    f["expected_value"] = f["propensity"] * f["value"]
    f["reason"], f["detail"], f["rank"], f["ranked_by"] = "", "", 1, "uplift"
    f = f[COLUMNS]

    def decide(ids, channels=None, actions=None):
        keep = f["customer_id"].isin(ids) & f["channel"].isin(channels) & f["action_id"].isin(actions)
        return _Decided(f[keep.to_numpy()].reset_index(drop=True))

    scores = pd.DataFrame(index=pd.Index(sorted(set(f["customer_id"])), name="customer_id"))
    return decide, scores


def _costs_differ() -> list[tuple]:
    """Ten customers; the big voucher (cost 10) is worth 12 for c0 and 3 for the others, the
    small one (cost 1) 5 for everyone. Ranked by score c0 takes the big voucher and uses up a
    budget of 10 (12 in all); the optimum gives ten small vouchers (50)."""
    rows = []
    for i in range(10):
        rows.append((f"c{i}", "big_voucher", "email", 12.0 if i == 0 else 3.0, 10.0))
        rows.append((f"c{i}", "small_voucher", "email", 5.0, 1.0))
    return rows


def _list(decide, scores, **request):
    body = {"objective": "churn_prevention", "channel": "email", "control_share": 0.0, **request}
    return build_target_list(TargetListRequest(**body), CATALOG, decide, scores)


def test_the_optimal_list_earns_more_than_the_ranked_one_where_actions_cost_differently() -> None:
    decide, scores = _world(_costs_differ())
    _, ranked, ranked_members = _list(decide, scores, budget=10)
    _, best, members = _list(decide, scores, budget=10, selection="optimal")
    # ranked (today's behaviour, unchanged): c0's big voucher, then the budget is gone
    assert list(ranked_members["customer_id"]) == ["c0"] and "optimisation" not in ranked
    assert ranked_members["score"].sum() == 12.0
    # optimal: ten small vouchers, within the budget, one per customer
    assert sorted(members["customer_id"]) == [f"c{i}" for i in range(10)]
    assert set(members["action_id"]) == {"small_voucher"} and members["customer_id"].is_unique
    assert members["cost"].sum() <= 10 + 1e-9 and members["score"].sum() == pytest.approx(50.0)
    o = best["optimisation"]
    assert o["objective_value"] == pytest.approx(50.0) and o["ranked_objective_value"] == pytest.approx(12.0)
    assert o["method"] == "milp" and o["optimal"] and o["gap"] == pytest.approx(0.0, abs=1e-9)
    assert o["cost"] == pytest.approx(10.0) and o["contacts"] == 10 and o["capacity"] is None
    # the incremental figures are the members' sums (no control group here)
    assert o["expected_incremental_value"] == pytest.approx(60.0) == best["expected_incremental_value"]
    assert o["expected_incremental_responders"] == pytest.approx(0.6)
    # the summary's other fields are a ranked list's, for the optimal members
    assert best["customers"] == best["targeted"] == 10 and best["cost"] == pytest.approx(10.0)
    assert list(members["position"]) == list(range(1, 11))


def test_the_optimal_list_equals_brute_force_and_its_prices_match_a_rerun() -> None:
    """Random small lists (two actions of different cost per customer, a budget and a size):
    the optimal list's total score is the brute-force optimum; the budget's and the size's
    reported gains are what the LP earns with one more unit (the lp_bound of the re-run), and
    the shadow prices bound them as the concave LP value requires."""
    rng = np.random.default_rng(7)
    for _ in range(6):
        rows = []
        for i in range(7):
            rows.append((f"c{i}", "big_voucher", "email", float(rng.uniform(1, 30)), 10.0))
            rows.append((f"c{i}", "small_voucher", "email", float(rng.uniform(0.5, 8)), 1.0))
        decide, scores = _world(rows)
        budget, size = float(rng.integers(5, 40)), int(rng.integers(1, 6))
        o = _list(decide, scores, budget=budget, size=size, selection="optimal")[1]["optimisation"]
        option = {(r[0], r[1]): (r[3], r[4]) for r in rows}
        best = 0.0
        for pick in itertools.product([None, "big_voucher", "small_voucher"], repeat=7):
            chosen = [option[f"c{i}", a] for i, a in enumerate(pick) if a]
            if len(chosen) <= size and sum(c for _, c in chosen) <= budget:
                best = max(best, sum(v for v, _ in chosen))
        assert o["objective_value"] == pytest.approx(best) and o["optimal"]
        assert o["objective_value"] >= o["ranked_objective_value"] - 1e-9
        more_money = _list(decide, scores, budget=budget + 1, size=size, selection="optimal")[1][
            "optimisation"
        ]
        more_room = _list(decide, scores, budget=budget, size=size + 1, selection="optimal")[1][
            "optimisation"
        ]
        assert more_money["lp_bound"] - o["lp_bound"] == pytest.approx(o["budget_gain"], abs=1e-7)
        assert more_room["lp_bound"] - o["lp_bound"] == pytest.approx(o["capacity_gain"], abs=1e-7)
        assert more_money["budget_shadow_price"] - 1e-7 <= o["budget_gain"] <= o["budget_shadow_price"] + 1e-7
        assert (
            more_room["capacity_shadow_price"] - 1e-7
            <= o["capacity_gain"]
            <= o["capacity_shadow_price"] + 1e-7
        )


def test_a_size_only_optimal_list_is_the_ranked_list_and_prices_the_next_member() -> None:
    """Without a budget the size is the only limit: the optimum is each customer's best action,
    the best customers first (the ranked list), and one more member is worth the next one's
    score: the change in the whole answer when the size is raised by one."""
    decide, scores = _world(_costs_differ())
    _, ranked, r = _list(decide, scores, size=3)
    _, best, m = _list(decide, scores, size=3, selection="optimal")
    assert m["score"].sum() == r["score"].sum() == 22.0 and "c0" in set(m["customer_id"])
    assert list(m["action_id"]) == list(r["action_id"]) == ["big_voucher", "small_voucher", "small_voucher"]
    o = best["optimisation"]
    assert o["budget"] is None and o["budget_shadow_price"] is None and o["capacity"] == 3
    more = _list(decide, scores, size=4, selection="optimal")[1]["optimisation"]
    assert more["objective_value"] - o["objective_value"] == pytest.approx(5.0) == o["capacity_gain"]
    assert o["capacity_shadow_price"] >= o["capacity_gain"] - 1e-9


def _plan(decide, scores, channels=("email", "phone"), capacity=None, **request):
    """The plan of ``request`` on ``channels`` with ``capacity`` (channel: contacts)."""
    limits = {c: {"capacity": capacity[c]} if c in (capacity or {}) else {} for c in channels}
    body = {"objective": "churn_prevention", "channels": limits, "control_share": 0.0, **request}
    return plan_campaign(CampaignPlanRequest(**body), CATALOG, decide, scores)


def test_a_tiny_plan_equals_brute_force_and_is_never_below_greedy() -> None:
    rng = np.random.default_rng(11)
    for _ in range(6):
        rows = [
            (
                f"c{i}",
                action,
                channel,
                float(rng.uniform(-2, 20)),
                cost + (3.0 if channel == "phone" else 0.0),
            )
            for i in range(5)
            for action, cost in (("big_voucher", 10.0), ("small_voucher", 1.0))
            for channel in ("email", "phone")
        ]
        rows = [r for r in rows if r[3] > 0]  # the arbitration keeps only what is worth its cost
        decide, scores = _world(rows)
        budget, phone = float(rng.integers(5, 40)), int(rng.integers(0, 3))
        plan, lists = _plan(decide, scores, budget=budget, capacity={"phone": phone})
        options: dict[str, list[tuple]] = {}
        for r in rows:
            options.setdefault(r[0], []).append(r)
        best = 0.0
        for pick in itertools.product(*[[None, *opts] for opts in options.values()]):
            chosen = [r for r in pick if r is not None]
            if sum(r[4] for r in chosen) <= budget and sum(r[2] == "phone" for r in chosen) <= phone:
                best = max(best, sum(r[3] for r in chosen))
        assert plan["objective_value"] == pytest.approx(best) and plan["optimal"]
        assert plan["objective_value"] >= plan["greedy"]["objective_value"] - 1e-9
        ch = plan["channels"]
        assert ch["phone"]["contacts"] <= phone and plan["cost"] <= budget + 1e-9
        assert sum(c["contacts"] for c in ch.values()) == plan["contacts"]
        assert sum(c["objective_value"] for c in ch.values()) == pytest.approx(plan["objective_value"])
        assert ch["email"]["capacity"] is None and ch["email"]["capacity_shadow_price"] is None
        assert lists == []  # not saved


def test_a_plan_beats_greedy_across_channels_and_prices_its_limits() -> None:
    """Phone is worth more per customer but costs 4 a call: the greedy reference calls the
    customers it ranks first and runs out of money; the plan e-mails many more for more value.
    Its shadow prices are what one more unit of money and one more call buy (LP re-solved)."""
    rows = []
    for i in range(40):
        rows.append((f"c{i}", "small_voucher", "phone", 6.0 + i / 100, 4.0))
        rows.append((f"c{i}", "small_voucher", "email", 2.0 + i / 50, 0.05))
    decide, scores = _world(rows)
    # a budget of 12: the greedy reference makes three calls (all of it); the plan e-mails
    # everyone (2.0) and calls as many as the rest pays for: the budget binds, the calls do not
    plan, _ = _plan(decide, scores, budget=12.0, capacity={"phone": 3})
    g = plan["greedy"]
    assert g["per_channel"] == {"email": 0, "phone": 3} and g["cost"] == 12.0
    assert plan["objective_value"] > g["objective_value"] + 50
    assert plan["channels"]["email"]["contacts"] + plan["channels"]["phone"]["contacts"] == 40
    price, gain = plan["budget"]["shadow_price"], plan["budget"]["gain"]
    more = _plan(decide, scores, budget=13.0, capacity={"phone": 3})[0]
    assert price > 0 and more["lp_bound"] - plan["lp_bound"] == pytest.approx(gain, abs=1e-7)
    assert more["budget"]["shadow_price"] - 1e-7 <= gain <= price + 1e-7
    assert plan["channels"]["phone"]["capacity_shadow_price"] == pytest.approx(0.0, abs=1e-9)
    # a budget of 20: three calls, and the capacity binds, not the budget
    plan, _ = _plan(decide, scores, budget=20.0, capacity={"phone": 3})
    phone = plan["channels"]["phone"]
    assert phone["contacts"] == 3 and plan["budget"]["shadow_price"] == pytest.approx(0.0, abs=1e-9)
    more = _plan(decide, scores, budget=20.0, capacity={"phone": 4})[0]
    assert phone["capacity_shadow_price"] > 0
    assert more["lp_bound"] - plan["lp_bound"] == pytest.approx(phone["capacity_gain"], abs=1e-7)
    # the LP is integral here (one capacity row): one more call adds exactly the gain to the plan
    assert more["objective_value"] - plan["objective_value"] == pytest.approx(
        phone["capacity_gain"], abs=1e-7
    )
    assert phone["capacity_gain"] <= phone["capacity_shadow_price"] + 1e-7


@pytest.mark.parametrize(
    ("change", "location", "words"),
    [
        (
            {"channels": {"phone": {"capacity": -1}}},
            ["channels", "phone", "capacity"],
            "greater than or equal to 0",
        ),
        ({"channels": {"phone": {"capacity": 2.5}}}, ["channels", "phone", "capacity"], "valid integer"),
        ({"channels": {"fax": {"capacity": 5}}}, ["channels", "fax", "[key]"], "unknown channel"),
        ({"channels": {"phone": {"size": 5}}}, ["channels", "phone", "size"], "Extra inputs"),
        ({"budget": None}, [], "give a budget, a channel's capacity"),
        ({"budget": None, "channels": {"email": {}, "phone": {}}}, [], "give a budget, a channel's capacity"),
        ({"budget": 0}, ["budget"], "greater than 0"),
        ({"channels": {}}, ["channels"], "at least 1"),
        ({"channels": ["email"]}, ["channels"], "valid dictionary"),
        ({"objective": "cross_sell"}, [], "needs its category"),
    ],
)
def test_a_bad_plan_request_names_its_field(change, location, words) -> None:
    body = {
        "objective": "churn_prevention",
        "channels": {"email": {}, "phone": {}},
        "budget": 100.0,
        **change,
    }
    with pytest.raises(ValidationError) as caught:
        CampaignPlanRequest(**body)
    [error] = caught.value.errors()
    assert list(error["loc"]) == location and words in error["msg"], error


def test_a_capacity_without_a_budget_is_a_plan_of_its_own() -> None:
    """Contacts per channel alone are a limit (each channel's best customers, at most one action
    each): accepted, priced, and the budget is reported as none."""
    decide, scores = _world(_costs_differ())
    plan, _ = _plan(decide, scores, budget=None, capacity={"email": 2})
    assert plan["budget"] is None and plan["channels"]["email"]["contacts"] == 2
    assert plan["objective_value"] == pytest.approx(12.0 + 5.0)
