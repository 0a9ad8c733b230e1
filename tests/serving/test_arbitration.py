"""Arbitration: consent first, then eligibility, contact policy, value and the control group; the
first rule a candidate fails is its reason; the rest are ranked by score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kundenwert.serving.arbitration import REASONS, Inputs, arbitrate, in_control_group
from kundenwert.serving.catalog import Catalog

CATALOG = Catalog.model_validate(
    {
        "policy": {
            "email": {"max_contacts_7d": 2, "max_contacts_30d": 5, "min_days_between": 2},
            "phone": {"min_days_between": 7, "suppress_after_ignored": 2},
        },
        "actions": [
            {
                "id": "retention",
                "kind": "retention",
                "title": "Voucher",
                "channels": {"email": 0.05, "phone": 4.0},
                "value": "clv * churn * save",
                "params": {"save": 0.5},
                "control_share": 0.0,
                "eligibility": {"status": ["active"], "scores": {"churn": [0.3, 1.0]}},
            },
            {
                "id": "service",
                "kind": "service_follow_up",
                "title": "Call",
                "channels": {"phone": 1.0},
                "value": "clv",
                "propensity": "0.5",
                "lever": 2.0,
                "control_share": 0.0,
                "eligibility": {"complaint": "required", "customer_types": ["consumer"]},
            },
            {
                "id": "news",
                "kind": "newsletter",
                "title": "Newsletter",
                "channels": {"email": 0.01},
                "value": "clv * 0.01",
                "control_share": 0.0,
                "eligibility": {"complaint": "forbidden"},
            },
        ],
    }
)


def _inputs(**changes) -> Inputs:
    """Customer a: an ordinary active customer, everything permitted and well worth contacting."""
    customers = pd.DataFrame(
        {
            "status": ["active"],
            "customer_type": ["consumer"],
            "open_complaint": [False],
            "clv": [400.0],
            "churn": [0.6],
        },
        index=pd.Index(["a"], name="customer_id"),
    )
    consent = pd.DataFrame(
        {"email": [True], "sms": [False], "phone": [True], "mail": [False], "objection": [False]},
        index=customers.index,
    )
    frames = {
        "customers": customers,
        "consent": consent,
        "pressure": pd.DataFrame(
            columns=["contacts_7d", "contacts_30d", "days_since_last"],
            index=pd.MultiIndex.from_tuples([], names=["customer_id", "channel"]),
        ),
        "ignored": pd.DataFrame(
            columns=["ignored_in_a_row"],
            index=pd.MultiIndex.from_tuples([], names=["customer_id", "action_id"]),
        ),
        "propensity": pd.DataFrame(
            {"response": [0.1, 0.2, 0.05]},
            index=pd.MultiIndex.from_tuples(
                [("a", "retention", "email"), ("a", "retention", "phone"), ("a", "news", "email")],
                names=["customer_id", "action_id", "channel"],
            ),
        ),
        "margins": {},
    }
    for key, fn in changes.items():
        frames[key] = fn(frames[key])
    return Inputs(**frames)


def _reasons(out: pd.DataFrame) -> dict[tuple[str, str], str]:
    return {(r.action_id, r.channel): r.reason for r in out.itertuples()}


def test_an_ordinary_customer_gets_ranked_actions_with_their_numbers() -> None:
    out = arbitrate(CATALOG, _inputs())
    assert _reasons(out) == {
        ("retention", "email"): "",
        ("retention", "phone"): "",
        ("service", "phone"): "complaint_required",
        ("news", "email"): "",
    }
    row = out.set_index(["action_id", "channel"]).loc[("retention", "email")]
    assert row["value"] == pytest.approx(400 * 0.6 * 0.5) and row["propensity"] == pytest.approx(0.1)
    assert row["score"] == pytest.approx(0.1 * 120 - 0.05) and row["expected_value"] == pytest.approx(12.0)
    email = out[(out.channel == "email")].set_index("action_id")["rank"]
    assert email["retention"] == 1 and email["news"] == 2  # 11.95 > 0.05 * 4 - 0.01
    assert set(out["reason"]) <= {"", *REASONS}


def test_an_objection_blocks_every_channel_before_anything_else() -> None:
    out = arbitrate(CATALOG, _inputs(consent=lambda c: c.assign(objection=True)))
    assert set(out["reason"]) == {"objection"} and (out["rank"] == 0).all()


def test_a_channel_without_consent_is_dropped_for_that_channel_only() -> None:
    out = arbitrate(CATALOG, _inputs(consent=lambda c: c.assign(email=False)))
    r = _reasons(out)
    assert r[("retention", "email")] == "no_consent" and r[("news", "email")] == "no_consent"
    assert r[("retention", "phone")] == ""
    # no consent record at all: nothing
    out = arbitrate(CATALOG, _inputs(consent=lambda c: c.iloc[:0]))
    assert set(out["reason"]) == {"no_consent"}


@pytest.mark.parametrize(
    ("customers", "action", "reason"),
    [
        (lambda c: c.assign(status="lapsed"), "retention", "status"),
        (lambda c: c.assign(churn=0.1), "retention", "score_out_of_range"),
        (lambda c: c.assign(churn=np.nan), "retention", "score_out_of_range"),
        (lambda c: c.assign(open_complaint=True, customer_type="business"), "service", "customer_type"),
        (lambda c: c.assign(open_complaint=True), "news", "complaint_forbidden"),
    ],
)
def test_each_eligibility_rule_names_itself(customers, action, reason) -> None:
    out = arbitrate(CATALOG, _inputs(customers=customers))
    assert set(out.loc[out.action_id == action, "reason"]) == {reason}


def test_an_open_complaint_makes_the_service_call_eligible_and_first() -> None:
    out = arbitrate(CATALOG, _inputs(customers=lambda c: c.assign(open_complaint=True)))
    phone = out[out.channel == "phone"].set_index("action_id")
    assert phone.loc["service", "reason"] == "" and phone.loc["service", "rank"] == 1
    assert phone.loc["service", "score"] == pytest.approx(0.5 * 400 * 2.0 - 1.0)  # the lever doubles it


@pytest.mark.parametrize(
    ("pressure", "reason"),
    [
        ({"contacts_7d": 2, "contacts_30d": 2, "days_since_last": 3}, "contact_pressure_7d"),
        ({"contacts_7d": 1, "contacts_30d": 5, "days_since_last": 3}, "contact_pressure_30d"),
        ({"contacts_7d": 1, "contacts_30d": 1, "days_since_last": 1.5}, "too_soon"),
    ],
)
def test_each_contact_policy_rule_names_itself(pressure: dict, reason: str) -> None:
    frame = pd.DataFrame(
        {k: [v] for k, v in pressure.items()},
        index=pd.MultiIndex.from_tuples([("a", "email")], names=["customer_id", "channel"]),
    )
    out = arbitrate(CATALOG, _inputs(pressure=lambda _p: frame))
    r = _reasons(out)
    assert r[("retention", "email")] == reason and r[("news", "email")] == reason
    assert r[("retention", "phone")] == ""  # another channel: its own counts
    below = {k: (v - 1 if k != "days_since_last" else 2.0) for k, v in pressure.items()}
    frame_ok = pd.DataFrame({k: [v] for k, v in below.items()}, index=frame.index)
    assert _reasons(arbitrate(CATALOG, _inputs(pressure=lambda _p: frame_ok)))[("retention", "email")] == ""


def test_ignored_offers_suppress_that_action_on_that_policy_only() -> None:
    ignored = pd.DataFrame(
        {"ignored_in_a_row": [2]},
        index=pd.MultiIndex.from_tuples([("a", "retention")], names=["customer_id", "action_id"]),
    )
    r = _reasons(arbitrate(CATALOG, _inputs(ignored=lambda _i: ignored)))
    assert r[("retention", "phone")] == "ignored"  # phone: suppress after 2
    assert r[("retention", "email")] == ""  # email has no suppression rule


def test_value_missing_or_below_cost() -> None:
    r = _reasons(arbitrate(CATALOG, _inputs(propensity=lambda p: p.iloc[:0])))
    assert r[("retention", "email")] == "no_score"  # the response model did not score it
    r = _reasons(arbitrate(CATALOG, _inputs(customers=lambda c: c.assign(clv=1.0))))
    assert r[("retention", "phone")] == "not_worth_it"  # 0.2 * 0.3 - 4.0 < 0


def test_control_groups_are_stable_and_of_the_asked_size() -> None:
    ids = np.array([f"{i:08d}" for i in range(20_000)])
    a = in_control_group(ids, "retention", 0.1, "2026-11")
    assert a.mean() == pytest.approx(0.1, abs=0.01)
    assert (a == in_control_group(ids, "retention", 0.1, "2026-11")).all()
    other = in_control_group(ids, "news", 0.1, "2026-11")
    assert (a & other).mean() == pytest.approx(0.01, abs=0.004)  # independent per action
    assert not in_control_group(ids, "retention", 0.0, "2026-11").any()


def test_filters_keep_only_the_asked_channels_and_actions() -> None:
    out = arbitrate(CATALOG, _inputs(), channels=["phone"], actions=["retention", "news"])
    assert set(zip(out.action_id, out.channel, strict=True)) == {("retention", "phone")}


# ---------------------------------------------------------------------- ranking by incremental value


def _two_customers(uplift: list[float] | None, ranking: str = "auto") -> pd.DataFrame:
    """Two active customers offered the retention voucher by e-mail: ``sure`` responds often
    whether contacted or not (small uplift), ``moved`` less often but mostly because of the contact."""
    catalog = CATALOG.model_copy(
        update={
            "actions": tuple(
                a.model_copy(update={"ranking": ranking}) if a.id == "retention" else a
                for a in CATALOG.actions
            )
        }
    )
    ids = pd.Index(["sure", "moved"], name="customer_id")
    keys = [(c, "retention", "email") for c in ids]
    columns = {"response": [0.40, 0.15]} | ({"uplift": uplift} if uplift is not None else {})
    propensity = pd.DataFrame(
        columns, index=pd.MultiIndex.from_tuples(keys, names=["customer_id", "action_id", "channel"])
    )

    def both(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([frame.set_axis(["sure"]), frame.set_axis(["moved"])]).rename_axis(frame.index.name)

    inputs = _inputs(customers=both, consent=both, propensity=lambda _: propensity)
    out = arbitrate(catalog, inputs, channels=["email"], actions=["retention"])
    return out.set_index("customer_id")


def test_an_action_whose_uplift_was_learnt_is_ranked_by_the_value_the_contact_adds() -> None:
    out = _two_customers([0.02, 0.12])
    assert (out["ranked_by"] == "uplift").all()
    value = 400 * 0.6 * 0.5
    for cid, up in (("sure", 0.02), ("moved", 0.12)):
        assert out.loc[cid, "score"] == pytest.approx(up * value - 0.05)
        assert out.loc[cid, "incremental_value"] == pytest.approx(up * value)
        assert out.loc[cid, "expected_value"] == pytest.approx(out.loc[cid, "propensity"] * value)
    # by response the sure thing would come first; by what the contact adds, the other
    assert out.loc["moved", "score"] > out.loc["sure", "score"]
    assert out.loc["sure", "propensity"] > out.loc["moved", "propensity"]


def test_ranking_by_response_where_chosen_or_where_no_uplift_was_learnt() -> None:
    for out in (_two_customers([0.02, 0.12], ranking="response"), _two_customers(None)):
        assert (out["ranked_by"] == "response").all()
        assert out.loc["sure", "score"] == pytest.approx(0.40 * 120 - 0.05)
        assert out.loc["sure", "score"] > out.loc["moved", "score"]
    # asked to rank by uplift the model never learnt: no score, said so (not a silent fallback)
    out = _two_customers(None, ranking="uplift")
    assert (out["ranked_by"] == "uplift").all() and (out["reason"] == "no_score").all()


def test_a_contact_that_adds_nothing_or_harms_is_not_worth_its_cost() -> None:
    out = _two_customers([0.0, -0.03])
    assert (out["reason"] == "not_worth_it").all()  # value if contacted is high, but nothing is added


def test_the_catalog_refuses_an_unknown_ranking() -> None:
    bad = CATALOG.model_dump()
    bad["actions"][0]["ranking"] = "profit"
    with pytest.raises(ValueError, match="ranking"):
        Catalog.model_validate(bad)
