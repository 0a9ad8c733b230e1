"""Labels at a cutoff, exactly as the contract defines them.

Status uses rows strictly before the cutoff (it says *who* gets which label); every label uses rows
at or after the cutoff only. A purchase is a purchase row with a positive amount (a return is not).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

DAY = pd.Timedelta(days=1)


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


def response_labels(contacts: pd.DataFrame, cutoff, config: LabelConfig | None = None) -> pd.DataFrame:
    """One row per outbound contact in ``[cutoff, cutoff + horizon)``: channel, action, treated or
    control, and whether it got a response (``responded`` or ``converted``) within the response window."""
    cfg = config or LabelConfig()
    t = _utc(cutoff)
    k = contacts[
        (contacts["direction"] == "outbound")
        & (contacts["contacted_at"] >= t)
        & (contacts["contacted_at"] < t + cfg.horizon * DAY)
    ]
    return pd.DataFrame(
        {
            "contact_id": k["contact_id"].to_numpy(),
            "customer_id": k["customer_id"].to_numpy(),
            "contacted_at": k["contacted_at"].to_numpy(),
            "channel": k["channel"].to_numpy(),
            "action_id": k["action_id"].to_numpy(),
            "treated": ~k["is_control"].fillna(False).astype(bool).to_numpy(),
            "responded": k["outcome"].isin(["responded", "converted"]).to_numpy(),
        }
    )


def purchase_days_between(purchases: pd.DataFrame, start, end) -> pd.Series:
    """Days with a purchase (a positive amount) in ``[start, end)`` per customer: the holdout
    count of the BTYD models (repeat transactions, a day being one transaction)."""
    t0, t1 = _utc(start), _utc(end)
    p = purchases[
        (purchases["amount"] > 0) & (purchases["purchased_at"] >= t0) & (purchases["purchased_at"] < t1)
    ]
    days = p["purchased_at"].dt.floor("D")
    return days.groupby(p["customer_id"]).nunique().rename("purchase_days").astype("float64")
