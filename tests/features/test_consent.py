"""Consent rules of the contract: latest record wins, email needs double opt-in, '*' objection blocks all."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kundenwert.features.consent import consent_matrix, consent_of_records, consent_state
from kundenwert.features.contract import MARKETING_CHANNELS


def _consents(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["customer_id", "channel", "granted", "recorded_at", "double_opt_in"])
    df["recorded_at"] = pd.to_datetime(df["recorded_at"]).dt.tz_localize("UTC")
    df["double_opt_in"] = df["double_opt_in"].astype("boolean")
    return df


RECORDS = _consents(
    [
        ("a", "email", True, "2024-01-01", True),
        ("a", "email", False, "2024-06-01", None),  # withdrawn later
        ("b", "email", True, "2024-01-01", False),  # single opt-in only
        ("b", "sms", True, "2024-01-01", None),
        ("c", "phone", True, "2024-01-01", None),
        ("c", "*", False, "2024-03-01", None),  # objection to all marketing
        ("d", "mail", True, "2024-01-01", None),
        ("d", "*", False, "2024-02-01", None),
        ("d", "*", True, "2024-04-01", None),  # objection lifted: mail consent applies again
    ]
)


def test_latest_record_wins() -> None:
    assert consent_state(RECORDS, "2024-05-01").loc["a", "email"]
    assert not consent_state(RECORDS, "2024-07-01").loc["a", "email"]


def test_email_needs_double_opt_in_other_channels_do_not() -> None:
    s = consent_state(RECORDS, "2024-05-01")
    assert not s.loc["b", "email"] and s.loc["b", "sms"]


def test_objection_blocks_every_channel_until_lifted() -> None:
    before, after = consent_state(RECORDS, "2024-02-15"), consent_state(RECORDS, "2024-05-01")
    assert before.loc["c", "phone"] and not after.loc["c", "phone"] and after.loc["c", "objection"]
    assert not before.loc["d", "mail"] and before.loc["d", "objection"]
    assert after.loc["d", "mail"] and not after.loc["d", "objection"]


def test_cutoff_is_point_in_time() -> None:
    exact = "2024-06-01"
    assert not consent_state(RECORDS, exact, inclusive=True).loc["a", "email"]
    assert consent_state(RECORDS, exact, inclusive=False).loc["a", "email"]


def test_no_record_means_no_consent() -> None:
    s = consent_state(RECORDS, "2024-05-01")
    assert not s.loc["c", "email"] and not s.loc["a", "sms"]


def test_a_star_grant_lifts_an_objection_but_grants_nothing() -> None:
    only_star = _consents([("e", "*", True, "2024-01-01", None), ("f", "*", False, "2024-01-01", None)])
    s = consent_state(only_star, "2024-05-01")
    assert not s.loc["e", list(MARKETING_CHANNELS)].any() and not s.loc["e", "objection"]
    assert s.loc["f", "objection"] and not s.loc["f", list(MARKETING_CHANNELS)].any()


def test_the_rule_on_arrays_needs_no_sorting_from_its_caller() -> None:
    """``consent_matrix`` sorts records itself (ties in input order) or takes them presorted:
    the same answer either way, as consent_state, the snapshot and the live path rely on."""
    rng = np.random.default_rng(3)
    m = 2_000
    customer = rng.integers(0, 50, m)
    channel = rng.integers(0, len(MARKETING_CHANNELS) + 1, m)  # the last: "*"
    t = rng.integers(0, 30, m)  # many ties
    granted, doi = rng.random(m) < 0.6, rng.random(m) < 0.7
    args = dict(n=50, channels=MARKETING_CHANNELS)
    permitted, objection = consent_matrix(customer, channel, t, granted, doi, **args)
    order = np.lexsort((t, channel, customer))
    sorted_args = (a[order] for a in (customer, channel, t, granted, doi))
    again = consent_matrix(*sorted_args, presorted=True, **args)
    np.testing.assert_array_equal(permitted, again[0])
    np.testing.assert_array_equal(objection, again[1])
    # the latest record per (customer, channel) decides, checked one cell at a time
    for c, k in [(0, 0), (7, 1), (13, 2), (21, 3)]:
        mine = np.flatnonzero((customer == c) & (channel == k))
        if len(mine):
            last = mine[np.lexsort((mine, t[mine]))][-1]
            star = np.flatnonzero((customer == c) & (channel == len(MARKETING_CHANNELS)))
            objects = len(star) and not granted[star[np.lexsort((star, t[star]))][-1]]
            grants = granted[last] and (MARKETING_CHANNELS[k] != "email" or doi[last])
            assert permitted[c, k] == (bool(grants) and not objects), (c, k)


def test_the_one_customer_variant_decides_as_the_array_rule() -> None:
    """``consent_of_records`` (plain Python, a request's rows) equals ``consent_matrix`` for
    every customer of random records with many ties."""
    rng = np.random.default_rng(5)
    m = 3_000
    customer = rng.integers(0, 200, m)
    channel = rng.integers(0, len(MARKETING_CHANNELS) + 1, m)
    t = rng.integers(0, 40, m)
    granted, doi = rng.random(m) < 0.6, rng.random(m) < 0.7
    permitted, objection = consent_matrix(
        customer, channel, t, granted, doi, n=200, channels=MARKETING_CHANNELS
    )
    names = (*MARKETING_CHANNELS, "*")
    order = np.argsort(t, kind="stable")  # time order, ties in input order
    for c in range(200):
        rows = [(names[channel[i]], bool(granted[i]), bool(doi[i])) for i in order if customer[i] == c]
        mine, objecting = consent_of_records(rows, MARKETING_CHANNELS)
        assert mine == permitted[c].tolist() and objecting == objection[c], c
