"""The live state a decision needs beyond the models: consent, contact pressure and ignored offers
at the moment of the decision (not at the snapshot's cutoff: a consent withdrawn this morning
counts this morning).

Contacts that count are outbound and not held out in a control group (a control member was not
contacted). An offer is ignored when its contact is older than the response window and its outcome
is none or opened (or missing); ``ignored_in_a_row`` counts them since the last contact of the same
action that was clicked, responded, converted, unsubscribed or bounced.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kundenwert.features.consent import consent_state
from kundenwert.features.contract import MARKETING_CHANNELS

DAY = pd.Timedelta(days=1)
IGNORED = ("none", "opened")


def _utc(t) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")


def consent_now(consents: pd.DataFrame, now) -> pd.DataFrame:
    """Permitted channels and ``objection`` per customer with any record (records up to ``now``)."""
    state = consent_state(consents, _utc(now), channels=MARKETING_CHANNELS, inclusive=True)
    return state[[*MARKETING_CHANNELS, "objection"]]


def _outbound(contacts: pd.DataFrame, now: pd.Timestamp) -> pd.DataFrame:
    c = contacts[(contacts["contacted_at"] <= now) & (contacts["direction"] == "outbound")]
    control = c["is_control"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    return c[~control]


def contact_pressure(contacts: pd.DataFrame, now) -> pd.DataFrame:
    """Per (customer_id, channel): ``contacts_7d``, ``contacts_30d`` and ``days_since_last``."""
    now = _utc(now)
    c = _outbound(contacts, now)
    age = ((now - c["contacted_at"]) / DAY).to_numpy(dtype="float64")
    frame = pd.DataFrame(
        {
            "customer_id": c["customer_id"].to_numpy(),
            "channel": c["channel"].to_numpy(),
            "in_7d": age < 7,
            "in_30d": age < 30,
            "age": age,
        }
    )
    g = frame.groupby(["customer_id", "channel"], sort=False)
    return pd.DataFrame(
        {
            "contacts_7d": g["in_7d"].sum(),
            "contacts_30d": g["in_30d"].sum(),
            "days_since_last": g["age"].min(),
        }
    ).astype({"contacts_7d": "int64", "contacts_30d": "int64"})


def ignored_offers(contacts: pd.DataFrame, now, response_window: int = 14) -> pd.DataFrame:
    """Per (customer_id, action_id): ``ignored_in_a_row``, the ignored contacts of the action since
    its last answered one (only actions with at least one ignored contact are listed)."""
    now = _utc(now)
    c = _outbound(contacts, now)
    c = c[c["action_id"].notna()]
    matured = (c["contacted_at"] <= now - response_window * DAY).to_numpy()
    outcome = c["outcome"].astype("object").to_numpy()
    ignored = matured & (pd.isna(outcome) | np.isin(outcome, IGNORED))
    answered = ~pd.isna(outcome) & ~np.isin(outcome, IGNORED)
    frame = pd.DataFrame(
        {
            "customer_id": c["customer_id"].to_numpy(),
            "action_id": c["action_id"].astype(str).to_numpy(),
            "at": c["contacted_at"].to_numpy(),
            "ignored": ignored,
            "answered": answered,
        }
    ).sort_values(["customer_id", "action_id", "at"], kind="stable")
    keys = ["customer_id", "action_id"]
    # contacts after the last answered one: a running count of answers, compared with its total
    answers_so_far = frame.groupby(keys, sort=False)["answered"].cumsum()
    total = frame.groupby(keys, sort=False)["answered"].transform("sum")
    after_last_answer = (answers_so_far == total).to_numpy() & ~frame["answered"].to_numpy()
    frame = frame[after_last_answer & frame["ignored"].to_numpy()]
    out = frame.groupby(keys, sort=False).size().rename("ignored_in_a_row").to_frame()
    return out
