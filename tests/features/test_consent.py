"""Consent rules of the contract: latest record wins, email needs double opt-in, '*' objection blocks all."""

from __future__ import annotations

import pandas as pd

from kundenwert.features.consent import consent_state


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
