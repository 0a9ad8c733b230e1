"""Labels at a cutoff, exactly as the contract defines them.

Status uses rows strictly before the cutoff (it says *who* gets which label); every label uses rows
at or after the cutoff only. A purchase is a purchase row with a positive amount (a return is not).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

DAY = pd.Timedelta(days=1)

# Outcomes that may count as a response: what the customer did (not none, unsubscribed, bounced).
ResponseOutcome = Literal["opened", "clicked", "responded", "converted"]


class LabelConfig(BaseModel):
    """Horizons and the value definition of the labels (the contract's defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    horizon: int = Field(90, gt=0, description="days: churn, win-back and affinity horizon")
    clv_horizon: int = Field(365, gt=0, description="days of future value in CLV")
    discount_rate: float = Field(0.1, ge=0, description="annual discount rate of CLV")
    clv_value: str = Field(
        "auto", pattern="^(auto|revenue|margin)$", description="margin when given, else revenue"
    )
    activity_window: int = Field(180, gt=0, description="days: active = purchased within it")
    response_window: int = Field(14, ge=0, description="days after a contact in which a response counts")
    response_outcomes: tuple[ResponseOutcome, ...] = Field(
        ("responded", "converted"),
        min_length=1,
        description="contact outcomes that count as a response (add clicked, or opened, to count those)",
    )
    attribution: Literal["last_touch", "every_touch"] = Field(
        "last_touch",
        description="a response counts for the latest contact of its action before it (last_touch) "
        "or for every contact of that action in the response window before it (every_touch)",
    )

    @field_validator("response_outcomes")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v))


def _utc(t: pd.Timestamp | str) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")


def customer_status(
    customers: pd.DataFrame, purchases: pd.DataFrame, cutoff, activity_window: int = 180
) -> pd.Series:
    """``active``, ``lapsed`` or ``new`` for every customer registered before ``cutoff``."""
    t = _utc(cutoff)
    ids = customers.loc[customers["created_at"] < t, "customer_id"]
    pos = purchases[(purchases["amount"] > 0) & (purchases["purchased_at"] < t)]
    last = pos.groupby("customer_id")["purchased_at"].max().reindex(ids.to_numpy())
    status = np.where(last.isna(), "new", np.where(last >= t - activity_window * DAY, "active", "lapsed"))
    return pd.Series(status, index=pd.Index(ids.to_numpy(), name="customer_id"), name="status")


def labels_at(frames: dict[str, pd.DataFrame], cutoff, config: LabelConfig | None = None) -> pd.DataFrame:
    """Per customer: status, churn (active only), win-back (lapsed only), discounted CLV, affinity per category."""
    cfg = config or LabelConfig()
    t = _utc(cutoff)
    purchases = frames["purchases"]
    status = customer_status(frames["customers"], purchases, t, cfg.activity_window)
    out = status.to_frame()
    future = purchases[(purchases["purchased_at"] >= t)]
    pos_h = future[(future["amount"] > 0) & (future["purchased_at"] < t + cfg.horizon * DAY)]
    bought = out.index.isin(pos_h["customer_id"].unique())
    out["churn"] = pd.Series(
        np.where(out["status"] == "active", (~bought).astype(float), np.nan), index=out.index
    )
    out["winback"] = pd.Series(
        np.where(out["status"] == "lapsed", bought.astype(float), np.nan), index=out.index
    )
    in_clv = future[future["purchased_at"] < t + cfg.clv_horizon * DAY]
    use_margin = cfg.clv_value == "margin" or (cfg.clv_value == "auto" and in_clv["margin"].notna().any())
    value = in_clv["margin"].fillna(0.0) if use_margin else in_clv["amount"]
    years = (in_clv["purchased_at"] - t) / (365.0 * DAY)
    discounted = value / (1.0 + cfg.discount_rate) ** years
    out["clv"] = discounted.groupby(in_clv["customer_id"]).sum().reindex(out.index).fillna(0.0)
    for c in sorted(purchases["category"].dropna().unique()):
        got = pos_h.loc[pos_h["category"] == c, "customer_id"].unique()
        out[f"affinity_{c}"] = out.index.isin(got).astype(float)
    return out


def campaign_position(contacts: pd.DataFrame) -> pd.DataFrame:
    """Where each outbound contact stands in its campaign, as known when it is made: the earlier
    outbound contacts of the same campaign to the same customer (``campaign_contacts_before``)
    and the days since the first of them (``days_since_campaign_start``, 0 for the first
    contact). A contact without a ``campaign_id`` is the first of its own campaign. Indexed like
    the outbound rows of ``contacts``."""
    out = contacts[contacts["direction"] == "outbound"]
    campaign = _keys(out, "campaign_id")
    alone = pd.isna(campaign)  # no campaign: a campaign of its own
    campaign[~alone] = "campaign:" + campaign[~alone]
    campaign[alone] = ("contact:" + out["contact_id"].astype("str")).to_numpy(dtype=object)[alone]
    frame = pd.DataFrame(
        {"customer": out["customer_id"].astype("str"), "key": campaign, "at": out["contacted_at"]},
        index=out.index,
    )
    frame = frame.sort_values(["customer", "key", "at"], kind="stable")
    group = frame.groupby(["customer", "key"], sort=False)
    before = group.cumcount().astype("float64")
    first = group["at"].transform("min")
    days = (frame["at"] - first) / DAY
    return pd.DataFrame(
        {"campaign_contacts_before": before, "days_since_campaign_start": days.astype("float64")}
    ).reindex(out.index)


def response_labels(contacts: pd.DataFrame, cutoff, config: LabelConfig | None = None) -> pd.DataFrame:
    """One row per outbound contact (treated, or held out as control) whose whole response window
    lies in the label window, ``[cutoff, cutoff + horizon - response_window)``: channel, action,
    treated or control, where it stands in its campaign (``campaign_position``), and whether it
    got a response.

    A response is a contact row (either direction) with an outcome of ``response_outcomes``; it
    counts for the outbound contacts of the same action (its ``action_id``; a response with only a
    ``campaign_id``: of that campaign) and customer made at most
    ``response_window`` days before it: under ``last_touch`` for the latest of them only (a
    response recorded on an outbound contact is that contact's own), under ``every_touch`` for
    each of them. So a campaign of several calls whose outcome is recorded on the last call has
    one responding call (last touch), or every call of the last ``response_window`` days (every
    touch). Labels read only rows at or after the cutoff and none after the label window; the
    campaign position also counts the campaign's earlier contacts (known when the contact is made)."""
    cfg = config or LabelConfig()
    t = _utc(cutoff)
    window = cfg.response_window * DAY
    end = t + cfg.horizon * DAY
    rows = contacts[(contacts["contacted_at"] >= t) & (contacts["contacted_at"] < end)]
    outbound = (rows["direction"] == "outbound").to_numpy()
    labelled = outbound & (rows["contacted_at"] < end - window).to_numpy()
    k = rows[labelled]
    responded = attributed_responses(rows, outbound, cfg)[labelled]
    # the campaigns of these contacts, as far as they had come by the latest of them
    same = contacts["contacted_at"] < end - window
    if "campaign_id" in contacts:
        same &= contacts["campaign_id"].isin(k["campaign_id"].dropna().unique())
    same |= contacts.index.isin(k.index)  # every labelled contact (one without a campaign too)
    position = campaign_position(contacts[same & contacts["customer_id"].isin(k["customer_id"].unique())])
    position = position.reindex(k.index)
    return pd.DataFrame(
        {
            "contact_id": k["contact_id"].to_numpy(),
            "customer_id": k["customer_id"].to_numpy(),
            "contacted_at": k["contacted_at"].to_numpy(),
            "channel": k["channel"].to_numpy(),
            "action_id": k["action_id"].to_numpy(),
            "treated": ~k["is_control"].fillna(False).astype(bool).to_numpy(),
            "campaign_contacts_before": position["campaign_contacts_before"].to_numpy(),
            "days_since_campaign_start": position["days_since_campaign_start"].to_numpy(),
            "responded": responded,
        }
    )


def attributed_responses(rows: pd.DataFrame, outbound: np.ndarray, cfg: LabelConfig) -> np.ndarray:
    """Per row of ``rows`` (by position): whether a response of ``rows`` counts for it, an
    outbound contact (see ``response_labels``; campaign results use the same rule). A response with an ``action_id`` counts for the
    contacts of that action; one with only a ``campaign_id`` (a reply logged against the
    campaign) for the contacts of that campaign."""
    outcome = rows["outcome"] if "outcome" in rows else pd.Series(np.nan, index=rows.index)
    is_response = outcome.astype("object").isin(cfg.response_outcomes).to_numpy()
    credited = is_response & outbound  # a response recorded on the contact itself is its own
    window = cfg.response_window * DAY
    customer = rows["customer_id"].astype("str").to_numpy()
    at = rows["contacted_at"].array
    action = _keys(rows, "action_id")
    campaign = _keys(rows, "campaign_id")
    # responses are matched by their action where they name one, else by their campaign
    passes = (
        (action, is_response & pd.notna(action)),
        (campaign, is_response & pd.isna(action) & pd.notna(campaign)),
    )
    for sent_key, matched in passes:
        if cfg.attribution == "last_touch":
            matched &= ~outbound  # on an outbound contact it is that contact's own
        sending = outbound & pd.notna(sent_key)
        if not matched.any() or not sending.any():
            continue
        sent = pd.DataFrame(
            {
                "row": np.flatnonzero(sending),
                "customer": customer[sending],
                "key": sent_key[sending],
                "at": at[sending],
            }
        )
        found = pd.DataFrame({"customer": customer[matched], "key": sent_key[matched], "at": at[matched]})
        if cfg.attribution == "last_touch":  # the latest contact of its key before it
            hit = pd.merge_asof(
                found.sort_values("at", kind="stable"),
                sent.sort_values("at", kind="stable"),
                on="at",
                by=["customer", "key"],
                direction="backward",
                tolerance=window,
            )["row"].dropna()
        else:  # every contact of its key in [response - window, response]
            pairs = sent.merge(found.rename(columns={"at": "response_at"}), on=["customer", "key"])
            lag = pairs["response_at"] - pairs["at"]
            hit = pairs.loc[(lag >= pd.Timedelta(0)) & (lag <= window), "row"]
        credited[hit.to_numpy(dtype="int64")] = True
    return credited


def _keys(rows: pd.DataFrame, column: str) -> np.ndarray:
    """``column`` as text keys (object array; missing: None), or all missing without the column."""
    if column not in rows:
        return np.full(len(rows), None, dtype=object)
    values = rows[column].astype("object")
    out = values.astype("str").to_numpy(dtype=object)
    out[values.isna().to_numpy()] = None
    return out


def purchase_days_between(purchases: pd.DataFrame, start, end) -> pd.Series:
    """Days with a purchase (a positive amount) in ``[start, end)`` per customer: the holdout
    count of the BTYD models (repeat transactions, a day being one transaction)."""
    t0, t1 = _utc(start), _utc(end)
    p = purchases[
        (purchases["amount"] > 0) & (purchases["purchased_at"] >= t0) & (purchases["purchased_at"] < t1)
    ]
    days = p["purchased_at"].dt.floor("D")
    return days.groupby(p["customer_id"]).nunique().rename("purchase_days").astype("float64")
