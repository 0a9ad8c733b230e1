"""The rule table drives the funnel: both arbitration paths (``decide`` for many customers,
``decide_one`` for one) produce every reason of the table and agree on every pair, and a rule
added to the table shows up in both, at its place in the order."""

from __future__ import annotations

import dataclasses
import operator

import numpy as np
import pandas as pd
import pytest

from kundenwert.errors import ConfigurationError
from kundenwert.features.consent import consent_state
from kundenwert.serving.arbitration import Live, LiveOne, decide, decide_one
from kundenwert.serving.candidates import Candidates
from kundenwert.serving.catalog import Catalog
from kundenwert.serving.rules import CODE, EXPLAINED, REASONS, RULES, CustomerTest, LiveTest, Rule

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
                "value": "clv * churn * 0.5",
                "control_share": 0.3,
                "eligibility": {"status": ["active"], "scores": {"churn": [0.3, 1.0]}},
            },
            {
                "id": "service",
                "kind": "service_follow_up",
                "title": "Call",
                "channels": {"phone": 1.0},
                "value": "clv",
                "propensity": "0.5",
                "control_share": 0.0,
                "eligibility": {"complaint": "required", "customer_types": ["consumer"]},
            },
            {
                "id": "news",
                "kind": "newsletter",
                "title": "Newsletter",
                "channels": {"email": 0.01, "sms": 50.0},
                "value": "clv * 0.01",
                "control_share": 0.0,
                "eligibility": {"complaint": "forbidden"},
            },
            {
                "id": "winback",
                "kind": "win_back",
                "title": "Come back",
                "channels": {"mail": 0.8},
                "value": "winback * 100",
                "control_share": 0.0,
            },
        ],
    }
)
N = 400


def _world(seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame, Live]:
    """Customers, response propensities and live state, random enough to fail every rule."""
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"c{i}" for i in range(N)], name="customer_id")
    customers = pd.DataFrame(
        {
            "status": rng.choice(["active", "lapsed", "new"], N, p=[0.7, 0.2, 0.1]),
            "customer_type": rng.choice(["consumer", "business"], N, p=[0.8, 0.2]),
            "open_complaint": rng.random(N) < 0.3,
            "clv": rng.gamma(2.0, 200.0, N),
            "churn": rng.random(N),
            "winback": np.where(rng.random(N) < 0.3, np.nan, rng.random(N)),
        },
        index=ids,
    )
    keys = [
        ("retention", "email"),
        ("retention", "phone"),
        ("news", "email"),
        ("news", "sms"),
        ("winback", "mail"),
    ]
    propensity = pd.DataFrame(
        rng.random((N, len(keys))) * 0.3,
        index=ids,
        columns=pd.MultiIndex.from_tuples([("response", a, c) for a, c in keys]),
    )
    cands = Candidates(CATALOG, customers, propensity, {})
    nch, nact = len(cands.channels), len(cands.actions)
    c7 = rng.integers(0, 3, (N, nch)).astype(float)
    live = Live(
        objection=rng.random(N) < 0.05,
        consent=rng.random((N, nch)) < 0.8,
        contacts_7d=c7,
        contacts_30d=c7 + rng.integers(0, 5, (N, nch)),
        days_since_last=np.where(rng.random((N, nch)) < 0.5, np.inf, rng.random((N, nch)) * 12),
        ignored=rng.integers(0, 3, (N, nact)).astype(float),
    )
    return customers, propensity, live


def _one(live: Live, i: int) -> LiveOne:
    return LiveOne(*(bool(v[i]) if v.ndim == 1 else v[i].tolist() for v in dataclasses.astuple(live)))


def _both(cands: Candidates, live: Live, period: str = "2026-11") -> tuple[np.ndarray, set[str]]:
    """The batch path's reason numbers, after checking the one-customer path gives the same
    reasons, details and ranks for every customer; the reason names both produced."""
    ids = list(cands.ids)
    batch = decide(cands, ids, live, period=period)
    for i, cid in enumerate(ids):
        one = decide_one(cands, cid, _one(live, i), period=period)
        assert one.reason[0] == batch.reason[i].tolist(), cid
        assert one.detail[0] == batch.detail[i].tolist(), cid
        assert one.rank[0] == batch.rank[i].tolist(), cid
    return batch.reason, set(batch.frame()["reason"]) - {""}


def test_the_table_is_the_funnel_order_and_its_reason_codes() -> None:
    assert REASONS == (
        "objection",
        "no_consent",
        "status",
        "customer_type",
        "complaint_required",
        "complaint_forbidden",
        "score_out_of_range",
        "contact_pressure_7d",
        "contact_pressure_30d",
        "too_soon",
        "ignored",
        "no_score",
        "not_worth_it",
        "control_group",
    )
    assert list(CODE) == list(REASONS) and list(EXPLAINED) == list(REASONS)
    assert all(r.explanation and r.reads for r in RULES)


def test_every_rule_of_the_table_is_produced_by_both_paths() -> None:
    customers, propensity, live = _world()
    cands = Candidates(CATALOG, customers, propensity, {})
    reason, names = _both(cands, live)
    assert names == set(REASONS)
    assert (reason == 0).any()  # and some pairs are kept


def test_a_customer_without_scores_fails_at_eligibility_with_no_score() -> None:
    customers, propensity, live = _world()
    cands = Candidates(CATALOG, customers, propensity, {})
    quiet = LiveOne(
        False, [True] * len(cands.channels), *([[99.0] * len(cands.channels)] * 2), [0.0] * 4, [0.0] * 4
    )
    one = decide_one(cands, "nobody", quiet, period="2026-11")
    # contact pressure would fail too; no_score comes first for an unscored customer
    assert set(one.reason[0]) == {CODE["no_score"]}
    assert {cands.details.texts[d] for d in one.detail[0]} == {"not scored"}


def test_a_rule_added_to_the_table_shows_up_in_both_paths_at_its_place() -> None:
    customers, propensity, live = _world()
    big_only = Rule(
        "small_customer",
        "the action is for customers worth at least 100",
        "clv",
        CustomerTest(lambda a, c: [(c.number("clv") < 100, "clv below 100")]),
    )
    one_a_day = Rule(
        "contacted_today",
        "at most one contact a day on any channel",
        "days_since_last",
        LiveTest("days_since_last", "channel", operator.lt, 0.5, detail="{channel} today"),
    )
    at = REASONS.index("status") + 1
    rules = (*RULES[:at], big_only, *RULES[at:])
    at = rules.index(next(r for r in rules if r.code == "contact_pressure_7d"))
    rules = (*rules[:at], one_a_day, *rules[at:])
    cands = Candidates(CATALOG, customers, propensity, {}, rules=rules)
    reason, names = _both(cands, live)
    assert {"small_customer", "contacted_today"} <= names
    assert names == {r.code for r in rules}
    # the order is the table's: status before the new rule, the new rule before customer_type
    small = (customers["clv"] < 100).to_numpy()
    code = cands.code
    rows = np.flatnonzero(small & (customers["status"] != "active").to_numpy())
    retention = cands.action_ids == "retention"
    got = reason[np.ix_(rows, np.flatnonzero(retention))]
    assert not np.isin(got, [code["small_customer"]]).any()
    assert np.isin(got, [code["status"], code["objection"], code["no_consent"]]).all()
    # the old funnel is untouched where the new rules do not fail
    plain, _ = _both(Candidates(CATALOG, customers, propensity, {}), live)
    renumber = np.array([0, *[code[r] for r in REASONS]])
    untouched = ~np.isin(reason, [code["small_customer"], code["contacted_today"]])
    np.testing.assert_array_equal(renumber[plain][untouched], reason[untouched])


def test_a_table_without_no_score_or_with_a_code_twice_is_refused() -> None:
    customers, propensity, _ = _world()
    for rules in (tuple(r for r in RULES if r.code != "no_score"), (*RULES, RULES[0])):
        with pytest.raises(ConfigurationError, match="unique codes"):
            Candidates(CATALOG, customers, propensity, {}, rules=rules)


@pytest.mark.parametrize("at", ["2024-01-15", "2024-02-15", "2024-03-15", "2024-05-01", "2024-07-01"])
def test_the_live_path_applies_the_same_consent_rule(at) -> None:
    """One customer's prepared rows (the service's fast path) give what ``consent_state`` gives."""
    from kundenwert.features.contract import MARKETING_CHANNELS
    from kundenwert.serving.live import live_of_prepared, prepare_rows
    from tests.features.test_consent import RECORDS

    t = pd.Timestamp(at, tz="UTC")
    state = consent_state(RECORDS, t)
    for cid, rows in RECORDS.groupby("customer_id"):
        raw = [
            (
                r.channel,
                r.granted,
                r.recorded_at.value // 1000,
                None if pd.isna(r.double_opt_in) else r.double_opt_in,
            )
            for r in rows.itertuples()
        ]
        live = live_of_prepared(prepare_rows(raw, []), t.value // 1000, list(MARKETING_CHANNELS), [])
        want = (
            state.loc[cid]
            if cid in state.index
            else pd.Series(False, index=[*MARKETING_CHANNELS, "objection"])
        )
        assert live.consent == [bool(want[ch]) for ch in MARKETING_CHANNELS], (cid, at)
        assert live.objection == bool(want["objection"]), (cid, at)
