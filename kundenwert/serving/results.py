"""Campaign results: did it work? Lift against the control group, with confidence.

No HTTP here: the routes, the CLI and the plots read what ``campaign_results`` returns.

**Exposures.** The unit is a customer in a campaign (an *exposure*): treated (contacted) or held
out as control. Two sources give them:

- the contact history: every outbound contact with a ``campaign_id`` (or an ``action_id``)
  is one; the contacts of one campaign to one customer are one exposure (dated by the first of
  them), and a contact without a campaign is an exposure of its own (as ``campaign_position``
  counts it). Treated unless every row of it is ``is_control``;
- a target list of this service: its members, target (treated) or control, as drawn when the
  list was made. Its campaign starts with the first contact recorded for it (a contact whose
  ``campaign_id`` is the list id: imported, or written by feedback naming the list); every member,
  target and control alike, is dated then (intention to treat: the groups stay comparable).

**Outcomes per exposure**, the same rule for both groups:

- ``responded``: a recorded response (an outcome of ``response_outcomes``, by default responded or
  converted) attributed to it within ``response_window`` days, by the rule of the response labels
  (``features.labels.attributed_responses``: a response naming the action, else the campaign);
- ``converted``: the same for outcome ``converted`` only;
- ``bought``: a purchase (a positive amount; in the action's category when the action names one)
  within ``attribution_days`` after the exposure: the one outcome a control group always has,
  because it does not depend on anybody recording the contact;
- ``revenue`` and ``margin`` per customer in ``attribution_days`` (returns included: net).

**Statistics** (``kundenwert.models.lift``): Newcombe's score interval for differences of rates,
the log interval of their ratio, Welch (or a bootstrap) for revenue and margin, which are heavy
tailed, incremental counts with their intervals, cost and the incremental return on cost, and
Benjamini-Hochberg over the cells of one report. **Checks**, each a warning of its cell: the
control group too small for the observed effect (the minimum detectable effect at 80% power), a
sample-ratio mismatch (when the drawn control share is known), treated and control that differ
before the campaign (standardised mean differences of their purchase history), an attribution
window that had not closed by the end of the data, a control group without any recorded outcome.

Customers who object now are left out of both groups (GDPR Art. 21: no analysis of them);
erased customers are gone from the store. A cell with fewer than ``MIN_GROUP`` treated or control
customers is suppressed: its keys are shown, its figures are not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from kundenwert.errors import ConfigurationError
from kundenwert.features.labels import LabelConfig, ResponseOutcome, attributed_responses
from kundenwert.models import lift as L

MIN_GROUP = 20  # results never show a group of fewer customers
DAY = pd.Timedelta(days=1)
Dimension = Literal["campaign", "action", "channel", "month"]
DIMENSIONS: tuple[str, ...] = ("campaign", "action", "channel", "month")
RATES = ("responded", "converted", "bought")
VALUES = ("revenue", "margin")
# the history behind the balance check: known at the exposure, from purchases and customers
BALANCE = ("purchases_365d", "revenue_365d", "days_since_last_purchase", "tenure_days")
SMD_LIMIT = 0.1  # |standardised mean difference| above it: the groups differ before the campaign
BALANCE_ALPHA = 0.01  # ... and more than chance explains at this level (over all BALANCE features)
SRM_ALPHA = 0.001  # a sample-ratio mismatch at this p-value is not chance


class ResultsQuery(BaseModel):
    """What a results report covers and how it measures."""

    campaign_id: str | None = None
    list_id: str | None = None
    action_id: str | None = None
    channel: str | None = None
    since: pd.Timestamp | None = Field(None, description="exposures from this instant on")
    until: pd.Timestamp | None = Field(None, description="exposures before this instant")
    by: tuple[Dimension, ...] = ("action", "channel")
    response_window: int = Field(14, ge=0, description="days after a contact in which a response counts")
    attribution_days: int = Field(30, ge=1, description="days after a contact whose purchases count")
    response_outcomes: tuple[ResponseOutcome, ...] = ("responded", "converted")
    alpha: float = Field(0.05, gt=0, lt=0.5)
    power: float = Field(0.8, gt=0, lt=1)
    method: Literal["welch", "bootstrap"] = "welch"
    control_share: float | None = Field(
        None, gt=0, lt=1, description="the control share that was drawn (for the sample-ratio check)"
    )

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


def _utc(t) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")


def contact_exposures(contacts: pd.DataFrame, query: ResultsQuery) -> pd.DataFrame:
    """The exposures of the contact history (see the module doc), with ``responded`` and
    ``converted`` attributed over every contact row (either direction)."""
    c = contacts.sort_values("contacted_at", kind="stable").reset_index(drop=True)
    outbound = (c["direction"] == "outbound").to_numpy()
    cfg = LabelConfig(response_window=query.response_window, response_outcomes=query.response_outcomes)
    responded = attributed_responses(c, outbound, cfg)
    converted = attributed_responses(
        c, outbound, LabelConfig(response_window=query.response_window, response_outcomes=("converted",))
    )
    campaign = c["campaign_id"].astype("object") if "campaign_id" in c else pd.Series(None, index=c.index)
    action = c["action_id"].astype("object") if "action_id" in c else pd.Series(None, index=c.index)
    keep = outbound & (campaign.notna() | action.notna()).to_numpy()
    rows = c[keep]
    key = campaign[keep].where(campaign[keep].notna(), "contact:" + rows["contact_id"].astype(str))
    control = rows["is_control"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    frame = pd.DataFrame(
        {
            "campaign_id": key.to_numpy(dtype=object),
            "customer_id": rows["customer_id"].astype(str).to_numpy(dtype=object),
            "action_id": action[keep].to_numpy(dtype=object),
            "channel": rows["channel"].astype(str).to_numpy(dtype=object),
            "treated": ~control,
            "at": rows["contacted_at"].to_numpy(),
            "responded": responded[keep],
            "converted": converted[keep],
            "recorded": rows["outcome"].notna().to_numpy()
            if "outcome" in rows
            else np.zeros(len(rows), bool),
        }
    )
    g = frame.groupby(["campaign_id", "customer_id"], sort=False)
    out = g.agg(
        action_id=("action_id", "first"),
        channel=("channel", "first"),
        treated=("treated", "any"),
        at=("at", "min"),
        last_at=("at", "max"),
        responded=("responded", "any"),
        converted=("converted", "any"),
        recorded=("recorded", "any"),
    ).reset_index()
    out["uplift"] = np.nan  # no prediction of the contact history's campaigns is on record
    return out


def list_exposures(
    list_id: str, members: pd.DataFrame, contacts: pd.DataFrame, query: ResultsQuery, channel: str
) -> tuple[pd.DataFrame, bool]:
    """The exposures of one target list's members and whether the list was sent (a contact of
    it is recorded). All members are dated by the first contact of the list; a response counts
    from then to ``response_window`` days after its last contact."""
    campaign = contacts["campaign_id"].astype("object") if "campaign_id" in contacts else None
    sent = contacts[campaign == list_id] if campaign is not None else contacts.iloc[:0]
    base = pd.DataFrame(
        {
            "campaign_id": list_id,
            "customer_id": members["customer_id"].astype(str).to_numpy(dtype=object),
            "action_id": members["action_id"].to_numpy(dtype=object),
            "channel": channel,
            "treated": (members["group"] == "target").to_numpy(),
            "uplift": members["uplift"].to_numpy(dtype="float64") if "uplift" in members else np.nan,
        }
    )
    if sent.empty:
        base["at"] = pd.NaT
        base["last_at"] = pd.NaT
        for col in ("responded", "converted", "recorded"):
            base[col] = False
        return base, False
    start, end = sent["contacted_at"].min(), sent["contacted_at"].max() + query.response_window * DAY
    base["at"], base["last_at"] = start, sent["contacted_at"].max()
    c = contacts[
        contacts["customer_id"].isin(base["customer_id"])
        & (contacts["contacted_at"] >= start)
        & (contacts["contacted_at"] <= end)
        & contacts["outcome"].notna()
    ]
    member_action = dict(zip(base["customer_id"], base["action_id"], strict=True))
    mine = (c["campaign_id"].astype("object") == list_id).to_numpy() | (
        c["action_id"].astype("object").to_numpy() == c["customer_id"].map(member_action).to_numpy()
    )
    c = c[mine]
    outcome = c["outcome"].astype("object")
    for col, hit in (
        ("responded", outcome.isin(query.response_outcomes)),
        ("converted", outcome == "converted"),
        ("recorded", outcome.notna()),
    ):
        base[col] = base["customer_id"].isin(c.loc[hit.to_numpy(), "customer_id"]).to_numpy()
    return base, True


def with_purchases(
    exposures: pd.DataFrame,
    purchases: pd.DataFrame,
    customers: pd.DataFrame,
    categories: Mapping[str, str | None],
    attribution_days: int,
) -> pd.DataFrame:
    """``exposures`` with their purchase outcomes (``bought``, ``revenue``, ``margin`` in the
    attribution window) and their purchase history at the exposure (``BALANCE``), all by
    binary search over the purchases sorted per customer: no join of every exposure with every
    purchase. ``categories``: action id -> the category whose purchase counts as ``bought``."""
    e = exposures.copy()
    dated = e["at"].notna().to_numpy()
    at = pd.to_datetime(e["at"], utc=True)
    p = purchases[purchases["customer_id"].isin(e["customer_id"].unique())]
    t0 = at.to_numpy(dtype="datetime64[ns]")
    t1 = (at + attribution_days * DAY).to_numpy(dtype="datetime64[ns]")
    before = (at - 365 * DAY).to_numpy(dtype="datetime64[ns]")
    index = _PurchaseIndex(p)
    revenue = index.sums(e["customer_id"], t0, t1, "amount")
    margin = index.sums(e["customer_id"], t0, t1, "margin")
    e["revenue"] = np.where(dated, revenue, np.nan)
    e["margin"] = np.where(dated, margin, np.nan) if p["margin"].notna().any() else np.nan
    bought = np.zeros(len(e), dtype=bool)
    cat_of = e["action_id"].map(lambda a: categories.get(a) if isinstance(a, str) else None)
    for cat in [None, *sorted({c for c in cat_of.dropna().unique()})]:
        rows = (cat_of.isna() if cat is None else cat_of == cat).to_numpy()
        if not rows.any():
            continue
        sub = index if cat is None else _PurchaseIndex(p[p["category"] == cat])
        bought[rows] = sub.counts(e["customer_id"][rows], t0[rows], t1[rows], positive=True) > 0
    e["bought"] = bought & dated
    e["purchases_365d"] = index.counts(e["customer_id"], before, t0, positive=True).astype("float64")
    e["revenue_365d"] = index.sums(e["customer_id"], before, t0, "amount")
    last = index.last_before(e["customer_id"], t0)
    e["days_since_last_purchase"] = (t0 - last) / np.timedelta64(1, "D")
    created = customers.drop_duplicates("customer_id").set_index("customer_id")["created_at"]
    created = pd.DatetimeIndex(pd.to_datetime(created.reindex(e["customer_id"].to_numpy()), utc=True))
    e["tenure_days"] = (t0 - created.tz_localize(None).to_numpy(dtype="datetime64[ns]")) / np.timedelta64(
        1, "D"
    )
    return e


class _PurchaseIndex:
    """Purchases sorted by (customer, time) with running sums: a window's sum is two binary
    searches on one key per purchase, ``code * span + time`` (milliseconds; seconds when a very
    long history would overflow 64 bits)."""

    def __init__(self, p: pd.DataFrame) -> None:
        p = p.sort_values(["customer_id", "purchased_at"], kind="stable")
        ids = p["customer_id"].astype(str)
        self.codes = pd.Index(pd.unique(ids))
        code = self.codes.get_indexer(ids).astype("int64")
        ms = p["purchased_at"].to_numpy(dtype="datetime64[ms]").astype("int64")
        self.unit = "ms"
        if len(ms) and (ms.max() - ms.min() + 3) * (len(self.codes) + 1) >= 2**62:
            self.unit = "s"
            ms = p["purchased_at"].to_numpy(dtype="datetime64[s]").astype("int64")
        self.t0 = int(ms.min()) - 1 if len(ms) else 0
        self.span = (int(ms.max()) - self.t0 + 2) if len(ms) else 2
        self.key = code * self.span + (ms - self.t0)
        self.code, self.t = code, p["purchased_at"].to_numpy(dtype="datetime64[ns]")
        self.cum = {
            col: np.r_[0.0, np.cumsum(p[col].fillna(0.0).to_numpy(dtype="float64"))]
            for col in ("amount", "margin")
        }
        self.cum_pos = np.r_[0, np.cumsum((p["amount"] > 0).to_numpy())]

    def _search(self, customer: pd.Series, t) -> tuple[np.ndarray, np.ndarray]:
        """Positions of (customer, t) in the sorted purchases, and whether the customer has any."""
        code = self.codes.get_indexer(customer.astype(str))
        known = code >= 0
        when = np.asarray(t, dtype="datetime64[ns]").astype(f"datetime64[{self.unit}]")
        off = np.clip(when.astype("int64") - self.t0, 0, self.span - 1)
        off[np.isnat(when)] = 0
        pos = np.searchsorted(self.key, np.where(known, code, 0) * self.span + off, side="left")
        return np.where(known, pos, 0), known

    def _window(self, customer: pd.Series, t0, t1) -> tuple[np.ndarray, np.ndarray]:
        lo, known = self._search(customer, t0)
        hi, _ = self._search(customer, t1)
        return lo, np.where(known, hi, lo)

    def sums(self, customer: pd.Series, t0, t1, col: str) -> np.ndarray:
        lo, hi = self._window(customer, t0, t1)
        return self.cum[col][hi] - self.cum[col][lo]

    def counts(self, customer: pd.Series, t0, t1, positive: bool = False) -> np.ndarray:
        lo, hi = self._window(customer, t0, t1)
        return (self.cum_pos[hi] - self.cum_pos[lo]) if positive else (hi - lo)

    def last_before(self, customer: pd.Series, t) -> np.ndarray:
        """The time of the customer's latest purchase before ``t`` (NaT where none)."""
        pos, known = self._search(customer, t)
        i = pos - 1
        code = self.codes.get_indexer(customer.astype(str))
        ok = known & (i >= 0)
        ok[ok] &= self.code[i[ok]] == code[ok]
        out = np.full(len(pos), np.datetime64("NaT"), dtype="datetime64[ns]")
        out[ok] = self.t[i[ok]]
        return out


def _interval(iv: L.Interval) -> dict:
    return {
        "estimate": _num(iv.estimate),
        "low": _num(iv.low),
        "high": _num(iv.high),
    }


def _num(x) -> float | None:
    """A JSON number, or None for what is not defined (no NaN or infinity leaves this module)."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def _cell_keys(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    keys = pd.DataFrame(index=frame.index)
    for d in by:
        if d == "campaign":
            keys[d] = frame["campaign_id"]
        elif d == "action":
            keys[d] = frame["action_id"].fillna("(none)")
        elif d == "channel":
            keys[d] = frame["channel"]
        elif d == "month":
            keys[d] = pd.to_datetime(frame["at"], utc=True).dt.strftime("%Y-%m").fillna("(not sent)")
        else:
            raise ConfigurationError(f"unknown results dimension {d!r}; use {', '.join(DIMENSIONS)}")
    return keys


def results_report(
    e: pd.DataFrame,
    query: ResultsQuery,
    as_of: pd.Timestamp,
    drawn_share: Mapping[str, float] | None = None,
    unit_costs: Mapping[tuple[str, str], float] | None = None,
    member_costs: pd.Series | None = None,
) -> dict:
    """The report of exposures ``e`` (``with_purchases`` applied), one cell per value of
    ``query.by``. ``as_of``: the end of the data (windows closing later are flagged).
    ``drawn_share``: campaign id -> the control share drawn (``query.control_share`` wins).
    ``unit_costs``: (action, channel) -> cost of one contact; ``member_costs``: cost per
    exposure (a target list's own), which wins where given."""
    by = list(dict.fromkeys(query.by))
    cost = _costs(e, unit_costs, member_costs)
    keys = _cell_keys(e, by) if by else pd.DataFrame({"all": np.zeros(len(e), dtype=int)}, index=e.index)
    groups = e.groupby([keys[c] for c in keys.columns], sort=True, dropna=False).indices if len(e) else {}
    cells = []
    for key, rows in groups.items():
        key = key if isinstance(key, tuple) else (key,)
        labels: dict[str, str] = {str(d): str(k) for d, k in zip(by, key, strict=False)}  # by=(): one cell
        cells.append(_cell(e.iloc[rows], labels, query, as_of, drawn_share or {}, cost[rows]))
    _adjust(cells, query.alpha)
    totals = {
        "exposures": int(len(e)),
        "treated": int(e["treated"].sum()) if len(e) else 0,
        "control": int((~e["treated"]).sum()) if len(e) else 0,
    }
    return {
        "as_of": as_of.isoformat(),
        "by": by,
        "response_window_days": query.response_window,
        "attribution_days": query.attribution_days,
        "alpha": query.alpha,
        "revenue_method": query.method,
        "totals": totals,
        "cells": cells,
        "suppressed_cells": sum(1 for c in cells if c.get("suppressed")),
    }


def _costs(
    e: pd.DataFrame,
    unit_costs: Mapping[tuple[str, str], float] | None,
    member_costs: pd.Series | None,
) -> np.ndarray:
    """Cost of each exposure: a treated contact's (action, channel) cost; a control costs
    nothing; NaN where the cost is unknown (an action not in the catalog)."""
    pairs = zip(e["action_id"].to_numpy(dtype=object), e["channel"].to_numpy(dtype=object), strict=True)
    unit = np.array([(unit_costs or {}).get((a, ch), np.nan) for a, ch in pairs], dtype="float64")
    if member_costs is not None:
        given = member_costs.reindex(e.index).to_numpy(dtype="float64")
        unit = np.where(np.isnan(given), unit, given)
    return np.where(e["treated"].to_numpy(dtype=bool), unit, 0.0)


def _cell(
    e: pd.DataFrame,
    labels: dict[str, str],
    query: ResultsQuery,
    as_of: pd.Timestamp,
    drawn_share: Mapping[str, float],
    cost: np.ndarray,
) -> dict:
    t = e["treated"].to_numpy(dtype=bool)
    n1, n0 = int(t.sum()), int((~t).sum())
    cell: dict = {"keys": labels}
    if n1 < MIN_GROUP or n0 < MIN_GROUP:
        return {**cell, "suppressed": True, "why": f"fewer than {MIN_GROUP} treated or control customers"}
    cell |= {"treated": n1, "control": n0, "control_share": n0 / (n1 + n0)}
    warnings: list[dict] = []
    metrics: dict = {}
    # a cell pooling several campaigns counts a customer once per campaign: their outcomes are
    # correlated, so the intervals are widened by the design effect (cluster-robust, by customer)
    who = e["customer_id"].to_numpy(dtype=object)
    repeats = bool(pd.Series(who).duplicated().any())
    for m in RATES:
        y = e[m].to_numpy(dtype=bool)
        x1, x0 = int(y[t].sum()), int(y[~t].sum())
        k = L.design_effect(y, t, who) if repeats else 1.0
        d = L.diff_proportions(x1 / k, n1 / k, x0 / k, n0 / k, alpha=query.alpha)
        r = L.ratio_proportions(x1 / k, n1 / k, x0 / k, n0 / k, alpha=query.alpha)
        inc = L.incremental(d, n1)
        metrics[m] = {
            "treated_rate": x1 / n1,
            "control_rate": x0 / n0,
            "lift": _interval(d),
            "relative_lift": _interval(r),
            "p_value": _num(d.p_value),
            "incremental": _interval(inc),
            "design_effect": k,
        }
    for m in VALUES:
        y = e[m].to_numpy(dtype="float64")
        if np.isnan(y).all():
            metrics[m] = None  # no margin in the purchases
            continue
        y = np.nan_to_num(y)
        y1, y0 = y[t], y[~t]
        k = L.design_effect(y, t, who) if repeats else 1.0
        if query.method == "bootstrap":
            d = _widened(L.diff_means_bootstrap(y1, y0, alpha=query.alpha), k)
        else:
            d = L.diff_means_welch(y1, y0, alpha=query.alpha, deff=k)
        metrics[m] = {
            "treated_mean": float(y1.mean()),
            "control_mean": float(y0.mean()),
            "lift": _interval(d),
            "p_value": _num(d.p_value),
            "incremental": _interval(L.incremental(d, n1)),
            "design_effect": k,
        }
    cell["metrics"] = metrics
    total_cost = float(np.sum(cost)) if not np.isnan(cost).any() else None
    cell["cost"] = total_cost
    value = metrics["margin"] or metrics["revenue"]
    if total_cost and value is not None:
        inc = value["incremental"]
        cell["incremental_return_on_cost"] = {
            "value": "margin" if metrics["margin"] else "revenue",
            **{
                k: None if inc[k] is None else (inc[k] - total_cost) / total_cost
                for k in ("estimate", "low", "high")
            },
        }
    else:
        cell["incremental_return_on_cost"] = None
    warnings += _checks(e, t, n1, n0, metrics, query, as_of, drawn_share)
    cell["warnings"] = warnings
    return cell


def _widened(iv: L.Interval, deff: float) -> L.Interval:
    """A bootstrap interval of independent rows widened by a design effect (its half-widths by
    the square root); its bootstrap p-value then no longer applies (None where widened)."""
    if deff <= 1.0:
        return iv
    s = float(np.sqrt(deff))
    est = float(iv.estimate)
    return L.Interval(est, est - s * (est - float(iv.low)), est + s * (float(iv.high) - est), None)


def _checks(
    e: pd.DataFrame,
    t: np.ndarray,
    n1: int,
    n0: int,
    metrics: dict,
    query: ResultsQuery,
    as_of: pd.Timestamp,
    drawn_share: Mapping[str, float],
) -> list[dict]:
    """The warnings a statistician would give on this cell (see the module doc)."""
    out: list[dict] = []
    main = "responded" if e.loc[~t, "recorded"].any() or not e.loc[t, "recorded"].any() else "bought"
    if main == "bought" and e.loc[t, "recorded"].any():
        out.append(
            {
                "check": "control_unmeasured",
                "detail": "outcomes are recorded for treated customers only: the control group has none, so "
                "the response and conversion lifts compare a measured group with an unmeasured one; "
                "judge by bought, revenue and margin (from purchases)",
            }
        )
    m = metrics[main]
    x0 = int(round(m["control_rate"] * n0))
    p0 = (x0 + 0.5) / (n0 + 1.0)  # never 0 or 1: a control without responders still has a rate
    k = m.get("design_effect", 1.0)
    mde = L.minimum_detectable_effect(p0, n1 / k, n0 / k, alpha=query.alpha, power=query.power)
    observed = abs(m["lift"]["estimate"] or 0.0)
    significant = m["p_value"] is not None and m["p_value"] < query.alpha
    if not significant and not (np.isfinite(mde) and observed >= mde):
        need = _control_needed(p0, observed, n0 / (n1 + n0), query)
        detectable = f"is {mde:.2%} points" if np.isfinite(mde) else "is beyond any lift"
        out.append(
            {
                "check": "control_too_small",
                "metric": main,
                "minimum_detectable_lift": _num(mde),
                "observed_lift": m["lift"]["estimate"],
                "detail": f"with {n1} treated and {n0} control customers the smallest {main} lift detectable "
                f"at {query.power:.0%} power {detectable}; the observed {observed:.2%} is below it"
                + (f" (detecting it would take about {need:,} control customers)" if need else ""),
            }
        )
    share = query.control_share
    if share is None:
        shares = {drawn_share.get(c) for c in e["campaign_id"].unique()}
        share = shares.pop() if len(shares) == 1 else None
    if share is not None:
        chi2, p = L.sample_ratio_mismatch(n1, n0, share)
        if p < SRM_ALPHA:
            out.append(
                {
                    "check": "sample_ratio_mismatch",
                    "drawn_control_share": share,
                    "observed_control_share": n0 / (n1 + n0),
                    "p_value": float(p),
                    "detail": f"{share:.1%} were drawn as control, {n0 / (n1 + n0):.1%} are: the groups are not "
                    "the random split they should be (customers lost or moved between groups); do not trust "
                    "this cell's lift",
                }
            )
    smd = {
        f: L.standardized_mean_difference(
            e.loc[t, f].to_numpy(dtype="float64"), e.loc[~t, f].to_numpy(dtype="float64")
        )
        for f in BALANCE
    }
    # beyond the rule of thumb and beyond chance: a random split of small groups differs by
    # chance (the SMD's standard error is about sqrt(1/n1 + 1/n0)); Bonferroni over the features
    chance = stats.norm.ppf(1 - BALANCE_ALPHA / (2 * len(BALANCE))) * np.sqrt(1 / n1 + 1 / n0)
    off = {f: float(v) for f, v in smd.items() if np.isfinite(v) and abs(v) > max(SMD_LIMIT, chance)}
    if off:
        out.append(
            {
                "check": "imbalance",
                "standardized_mean_differences": off,
                "detail": "treated and control differed before the campaign by more than chance explains "
                f"(|SMD| > {max(SMD_LIMIT, chance):.2f}): {', '.join(off)}; the split was not random, "
                "or customers were lost from one group",
            }
        )
    closes = (
        pd.to_datetime(e["last_at"], utc=True).max()
        + max(query.response_window, query.attribution_days) * DAY
    )
    if pd.notna(closes) and closes > as_of:
        out.append(
            {
                "check": "window_open",
                "closes_at": closes.isoformat(),
                "detail": f"the attribution window closes on {closes:%Y-%m-%d}, after the data ends "
                f"({as_of:%Y-%m-%d}): later responses and purchases are still to come",
            }
        )
    return out


def _control_needed(p0: float, lift: float, share: float, query: ResultsQuery) -> int | None:
    """Control customers needed to detect ``lift`` at this control share (None: no lift to
    detect, or none that is possible)."""
    if lift <= 0 or not 0 < share < 1:
        return None
    try:
        return L.required_sizes(p0, lift, share, alpha=query.alpha, power=query.power)[2]
    except ValueError:
        return None


def _adjust(cells: list[dict], alpha: float) -> None:
    """Benjamini-Hochberg over the cells of one report, per metric: ``p_adjusted`` and
    ``significant`` (at ``alpha``, after adjustment)."""
    shown = [c for c in cells if not c.get("suppressed")]
    for m in (*RATES, *VALUES):
        have = [c for c in shown if c["metrics"].get(m)]
        if not have:
            continue
        p = np.array(
            [np.nan if c["metrics"][m]["p_value"] is None else c["metrics"][m]["p_value"] for c in have]
        )
        adjusted, significant = L.benjamini_hochberg(p, alpha=alpha)
        for c, a, s in zip(have, adjusted, significant, strict=True):
            c["metrics"][m]["p_adjusted"] = _num(a)
            c["metrics"][m]["significant"] = bool(s)


# --- the store: what the CLI and the routes call ---------------------------------------------


def list_ids(engine) -> list[str]:
    """Every stored target list's id, oldest first."""
    import sqlalchemy as sa

    from kundenwert.db.errors import map_exceptions
    from kundenwert.db.migrate import ensure_tables
    from kundenwert.db.schema import TARGET_LIST_MEMBERS, TARGET_LISTS

    ensure_tables(engine, TARGET_LISTS, TARGET_LIST_MEMBERS)
    with map_exceptions("reading target lists", TARGET_LISTS.name), engine.connect() as conn:
        rows = conn.execute(
            sa.select(TARGET_LISTS.c.list_id).order_by(TARGET_LISTS.c.created_at, TARGET_LISTS.c.list_id)
        )
        return [r.list_id for r in rows]


@dataclass(frozen=True)
class _World:
    contacts: pd.DataFrame
    purchases: pd.DataFrame
    customers: pd.DataFrame
    objecting: set[str]
    as_of: pd.Timestamp


def _read(store, now: pd.Timestamp) -> _World:
    from kundenwert.serving.live import consent_now

    frames = store.read_tables(
        ("contacts", "purchases", "customers", "consents"),
        {
            "contacts": [
                "contact_id",
                "customer_id",
                "contacted_at",
                "channel",
                "direction",
                "campaign_id",
                "action_id",
                "is_control",
                "outcome",
            ],
            "purchases": ["customer_id", "purchased_at", "amount", "margin", "category"],
            "customers": ["customer_id", "created_at"],
        },
        ordered=False,
    )
    contacts, purchases, customers = frames["contacts"], frames["purchases"], frames["customers"]
    consent = consent_now(frames["consents"], now)
    objecting = set(consent.index[consent["objection"].to_numpy(dtype=bool)].astype(str))
    ends = [contacts["contacted_at"].max(), purchases["purchased_at"].max()]
    ends = [t for t in ends if pd.notna(t)]
    as_of = min(max(ends), now) if ends else now
    return _World(contacts, purchases, customers, objecting, _utc(as_of))


def exposures_of(store, catalog, query: ResultsQuery, now=None) -> tuple[pd.DataFrame, dict, dict]:
    """(exposures with purchases, drawn shares, facts) for ``query`` from the store: the
    contact history's campaigns and the target lists (``query.list_id``: that list only;
    ``query.campaign_id``: that campaign, or the list of that id). ``facts``: ``as_of``, the
    lists not sent yet, and how many customers were left out because they object now."""
    from kundenwert.serving.target_lists import NotFoundError, load_target_list

    now = _utc(now if now is not None else pd.Timestamp.now(tz="UTC"))
    lists = list_ids(store.engine)
    wanted = query.list_id or (query.campaign_id if query.campaign_id in lists else None)
    if query.list_id and query.list_id not in lists:
        raise NotFoundError(f"no target list {query.list_id!r}")
    if query.campaign_id is not None and wanted is None and not _named_by_contacts(store, query.campaign_id):
        # asked before the whole history is read: an unknown campaign costs one query, not a read of all
        raise NotFoundError(
            f"no campaign {query.campaign_id!r}: no contact names it and no target list has that id"
        )
    w = _read(store, now)
    parts, drawn, not_sent = [], {}, []
    if wanted is None:
        c = w.contacts
        if query.campaign_id is not None:
            c = c[(c["campaign_id"].astype("object") == query.campaign_id).to_numpy()]
            if c.empty:
                raise NotFoundError(
                    f"no campaign {query.campaign_id!r}: no contact names it and no target list has that id"
                )
            # responses logged against the campaign's action by other rows still count
            c = w.contacts[w.contacts["customer_id"].isin(c["customer_id"].unique())]
        ce = contact_exposures(c, query)
        ce = ce[~ce["campaign_id"].isin(lists)]  # a list's contacts are measured as the list
        if query.campaign_id is not None:
            ce = ce[ce["campaign_id"] == query.campaign_id]
        parts.append(ce.assign(cost=np.nan))
    for lid in [wanted] if wanted else ([] if query.campaign_id else lists):
        meta, members = load_target_list(store.engine, lid, uplift=True)
        le, sent = list_exposures(lid, members, w.contacts, query, meta["request"]["channel"])
        if not sent:
            not_sent.append(lid)
        drawn[lid] = float(meta["request"].get("control_share", 0.0)) or None
        parts.append(le.assign(cost=members["cost"].to_numpy(dtype="float64")))
    e = pd.concat(parts, ignore_index=True) if parts else contact_exposures(w.contacts.iloc[:0], query)
    e = _scoped(e, query)
    objecting = e["customer_id"].isin(w.objecting).to_numpy()
    e = e[~objecting].reset_index(drop=True)
    categories = {a.id: a.category for a in catalog.actions}
    e = with_purchases(e, w.purchases, w.customers, categories, query.attribution_days)
    e = e[e["at"].notna().to_numpy()].reset_index(drop=True)  # a list not sent yet has no results
    facts = {
        "as_of": w.as_of,
        "not_sent": not_sent,
        "left_out_objecting": int(objecting.sum()),
    }
    return e, {k: v for k, v in drawn.items() if v}, facts


def _named_by_contacts(store, campaign_id: str) -> bool:
    """Whether any contact names ``campaign_id`` (one bound query, never the whole table)."""
    import sqlalchemy as sa

    from kundenwert.db.errors import map_exceptions
    from kundenwert.db.schema import TABLE_DEFS

    contacts = TABLE_DEFS["contacts"]
    with map_exceptions("reading contacts", contacts.name), store.engine.connect() as conn:
        found = conn.execute(
            sa.select(contacts.c.contact_id).where(contacts.c.campaign_id == campaign_id).limit(1)
        ).first()
    return found is not None


def _scoped(e: pd.DataFrame, q: ResultsQuery) -> pd.DataFrame:
    keep = np.ones(len(e), dtype=bool)
    if q.action_id is not None:
        keep &= (e["action_id"] == q.action_id).to_numpy()
    if q.channel is not None:
        keep &= (e["channel"] == q.channel).to_numpy()
    at = pd.to_datetime(e["at"], utc=True)
    if q.since is not None:
        keep &= (at >= _utc(q.since)).to_numpy()
    if q.until is not None:
        keep &= (at < _utc(q.until)).to_numpy()
    return e[keep].reset_index(drop=True)


def campaign_results(store, catalog, query: ResultsQuery, now=None) -> dict:
    """The results report of ``query`` on the store (see the module doc); a target list's
    report also says whether the model helped (``model``, see ``model_check``)."""
    return measure(store, catalog, query, now)[0]


def _reported(store, catalog, query: ResultsQuery, now=None) -> tuple[pd.DataFrame, dict, dict]:
    """(exposures, the bare report, facts) of ``query``: the catalog's channel costs per contact,
    a list's own member costs where they are given."""
    e, drawn, facts = exposures_of(store, catalog, query, now)
    unit = {(a.id, ch): cost for a in catalog.actions for ch, cost in a.channels.items()}
    return e, results_report(e, query, facts["as_of"], drawn, unit, e["cost"]), facts


def measure(store, catalog, query: ResultsQuery, now=None) -> tuple[dict, pd.DataFrame]:
    """(report, exposures) of ``query``: the exposures feed the plots."""
    e, report, facts = _reported(store, catalog, query, now)
    scope = {
        k: v
        for k, v in query.model_dump(include={"campaign_id", "list_id", "action_id", "channel"}).items()
        if v
    }
    for k in ("since", "until"):
        if getattr(query, k) is not None:
            scope[k] = _utc(getattr(query, k)).isoformat()
    report = {"scope": scope, **report, "left_out_objecting": facts["left_out_objecting"]}
    if facts["not_sent"]:
        report["not_sent"] = facts["not_sent"]
    if query.list_id:
        report["model"] = model_check(e)
    return report, e


def campaigns_overview(store, catalog, now=None, query: ResultsQuery | None = None) -> list[dict]:
    """Every campaign (of the contact history, and every target list) with its size, period,
    actions, channels and headline: the lift of responses (or, where the control group has no
    recorded outcome, of buyers) with its interval."""
    q = (query or ResultsQuery()).model_copy(update={"by": ("campaign",)})
    e, report, facts = _reported(store, catalog, q, now)
    meta = e.groupby("campaign_id").agg(
        start=("at", "min"),
        end=("last_at", "max"),
        actions=("action_id", lambda s: sorted({str(a) for a in s.dropna()})),
        channels=("channel", lambda s: sorted(set(s))),
        exposures=("customer_id", "size"),
    )
    lists = set(list_ids(store.engine))
    out = []
    for cell in report["cells"]:
        cid = cell["keys"]["campaign"]
        m = meta.loc[cid]
        row = {
            "campaign_id": cid,
            "kind": "target_list" if cid in lists else "contact_history",
            "start": None if pd.isna(m["start"]) else _utc(m["start"]).isoformat(),
            "end": None if pd.isna(m["end"]) else _utc(m["end"]).isoformat(),
            "actions": m["actions"],
            "channels": m["channels"],
        }
        if cell.get("suppressed"):
            out.append({**row, "suppressed": True})
            continue
        main = "bought" if any(w["check"] == "control_unmeasured" for w in cell["warnings"]) else "responded"
        metric = cell["metrics"][main]
        out.append(
            {
                **row,
                "treated": cell["treated"],
                "control": cell["control"],
                "headline": {
                    "metric": main,
                    **metric["lift"],
                    "significant": metric.get("significant", False),
                },
                "warnings": [w["check"] for w in cell["warnings"]],
            }
        )
    for lid in facts["not_sent"]:
        out.append({"campaign_id": lid, "kind": "target_list", "not_sent": True})
    return out


def cumulative_incremental_revenue(
    e: pd.DataFrame, purchases: pd.DataFrame, days: int, alpha: float = 0.05
) -> pd.DataFrame:
    """Per day after the contact (1..``days``): the incremental revenue of the treated so far
    (treated minus control revenue per customer, times the treated count) with Welch's interval:
    how the campaign's effect built up. Exposures ``e`` need ``at``; aggregates only."""
    e = e[e["at"].notna().to_numpy()]
    t = e["treated"].to_numpy(dtype=bool)
    n1 = int(t.sum())
    index = _PurchaseIndex(purchases[purchases["customer_id"].isin(e["customer_id"].unique())])
    at = pd.to_datetime(e["at"], utc=True)
    t0 = at.to_numpy(dtype="datetime64[ns]")
    rows = []
    for d in range(1, days + 1):
        y = index.sums(e["customer_id"], t0, (at + d * DAY).to_numpy(dtype="datetime64[ns]"), "amount")
        iv = L.incremental(L.diff_means_welch(y[t], y[~t], alpha=alpha), n1)
        rows.append({"day": d, "incremental": _num(iv.estimate), "low": _num(iv.low), "high": _num(iv.high)})
    return pd.DataFrame(rows, columns=["day", "incremental", "low", "high"])


def model_check(e: pd.DataFrame, metric: str = "bought", n_boot: int = 500, seed: int = 0) -> dict | None:
    """Did the model help? On exposures with the uplift predicted when they were decided (a
    target list's members) and both groups: the Qini coefficient with a bootstrap interval, and
    the incremental ``metric`` of the model's top 10/20/30% against a random selection of the
    same size. None where no uplift is on record."""
    u = e["uplift"].to_numpy(dtype="float64") if "uplift" in e else np.full(len(e), np.nan)
    rows = np.isfinite(u)
    t = e["treated"].to_numpy(dtype=bool)
    if rows.sum() < 2 * MIN_GROUP or t[rows].sum() < MIN_GROUP or (~t[rows]).sum() < MIN_GROUP:
        return None
    y = e[metric].to_numpy(dtype="float64")[rows]
    tr, s = t[rows].astype("float64"), u[rows]
    q = L.qini_coefficient_interval(y, tr, s, n_boot=n_boot, seed=seed)
    x, curve = L.qini_curve(y, tr, s, bins=20)
    top = [
        {
            "fraction": r.fraction,
            "customers": r.n_targeted,
            "model_incremental": _interval(r.model_incremental),
            "random_incremental": _interval(r.random_incremental),
        }
        for r in L.incremental_at_top(y, tr, s)
    ]
    return {
        "metric": metric,
        "customers": int(rows.sum()),
        "qini": _interval(q),
        "curve": {
            "fraction": [float(v) for v in x],
            "incremental": [_num(v) for v in curve],
        },
        "top": top,
    }


def report_rows(report: dict) -> list[dict]:
    """The cells of a report as flat rows (CSV, a table): keys, sizes, rates and lifts with
    intervals, incremental figures, cost and return, and the warnings' names."""
    rows = []
    for cell in report["cells"]:
        row: dict = dict(cell["keys"])
        if cell.get("suppressed"):
            rows.append({**row, "suppressed": True})
            continue
        row |= {"treated": cell["treated"], "control": cell["control"]}
        for m, v in cell["metrics"].items():
            if v is None:
                continue
            if m in RATES:
                row |= {f"{m}_treated_rate": v["treated_rate"], f"{m}_control_rate": v["control_rate"]}
            else:
                row |= {f"{m}_treated_mean": v["treated_mean"], f"{m}_control_mean": v["control_mean"]}
            for part in ("estimate", "low", "high"):
                row[f"{m}_lift_{part}" if part != "estimate" else f"{m}_lift"] = v["lift"][part]
            row[f"{m}_p_adjusted"] = v.get("p_adjusted")
            row[f"{m}_significant"] = v.get("significant")
            row[f"{m}_incremental"] = v["incremental"]["estimate"]
        row["cost"] = cell["cost"]
        roc = cell["incremental_return_on_cost"]
        row["incremental_return_on_cost"] = None if roc is None else roc["estimate"]
        row["warnings"] = " ".join(w["check"] for w in cell["warnings"])
        rows.append(row)
    return rows


def planning(
    expected_rate: float,
    treated: int,
    control: int,
    lift: float | None = None,
    power: float = 0.8,
    alpha: float = 0.05,
) -> dict:
    """Power planning of a list with ``treated`` and ``control`` customers whose response rate
    without contact is about ``expected_rate``: the smallest lift it can detect and, for a
    ``lift`` to detect, the list size needed at its control share and the control share needed
    at its size (None: no share reaches it)."""
    n = treated + control
    share = control / n if n else 0.0
    out: dict = {
        "base_rate": expected_rate,
        "power": power,
        "alpha": alpha,
        "minimum_detectable_lift": _num(
            L.minimum_detectable_effect(expected_rate, treated, control, alpha=alpha, power=power)
        )
        if treated and control
        else None,
    }
    if lift is not None:
        try:
            need = (
                L.required_sizes(expected_rate, lift, share, alpha=alpha, power=power)
                if 0 < share < 1
                else None
            )
        except ValueError:  # a lift too small for any list, or beyond what the rate allows
            need = None
        out |= {
            "lift": lift,
            "list_size_needed": None if need is None else int(np.ceil(need[0])),
            "control_needed": None if need is None else int(np.ceil(need[2])),
            "control_share_needed": _num(
                L.required_control_share(expected_rate, lift, n, alpha=alpha, power=power)
            )
            if n
            else None,
        }
    return out


def parse_query(
    *, by: str | Sequence[str] = ("action", "channel"), since=None, until=None, **given
) -> ResultsQuery:
    """A ``ResultsQuery`` from the CLI's or the API's words: ``by`` as ``"action,channel"``,
    dates as text; anything wrong is a ``ConfigurationError`` naming the option."""
    from pydantic import ValidationError

    dims = [d.strip() for d in by.split(",")] if isinstance(by, str) else list(by)
    dims = [d for d in dims if d]
    unknown = [d for d in dims if d not in DIMENSIONS]
    if unknown:
        raise ConfigurationError(
            f"--by: unknown dimension(s) {', '.join(unknown)}; use {', '.join(DIMENSIONS)}"
        )
    when = {}
    for name, value in (("since", since), ("until", until)):
        if value is None:
            continue
        try:
            when[name] = _utc(value)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"--{name}: {value!r} is not a date ({exc})") from None
    if "since" in when and "until" in when and when["since"] >= when["until"]:
        raise ConfigurationError(f"--since ({since}) must be before --until ({until})")
    if given.get("campaign_id") and given.get("list_id"):
        raise ConfigurationError("give --campaign or --list, not both")
    try:
        return ResultsQuery(by=tuple(dims), **when, **{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "--" + "-".join(str(x) for x in first["loc"]).replace("_", "-")
        raise ConfigurationError(f"{where}: {first['msg']}") from None


def plan(
    rate: float,
    lift: float | None = None,
    size: int | None = None,
    control_share: float = 0.1,
    power: float = 0.8,
    alpha: float = 0.05,
) -> dict:
    """``planning`` for a list of ``size`` (or, without a size, the size a ``lift`` needs at
    ``control_share``); a rate or lift outside what a rate can be is a ``ConfigurationError``."""
    if not 0 < rate < 1:
        raise ConfigurationError(f"--rate must lie between 0 and 1 (a share, e.g. 0.03), not {rate}")
    if not 0 < control_share < 1:
        raise ConfigurationError(f"--control-share must lie between 0 and 1, not {control_share}")
    if lift is not None and not 0 < lift < 1 - rate:
        raise ConfigurationError(f"--lift must lie between 0 and 1 - rate ({1 - rate:g}), not {lift}")
    if size is None and lift is None:
        raise ConfigurationError("give --size (what can it detect?) or --lift (what does it need?)")
    if size is not None and size < 2:
        raise ConfigurationError(f"--size must be at least 2, not {size}")
    if size is None:
        assert lift is not None
        try:
            n, n1, n0 = L.required_sizes(rate, lift, control_share, alpha=alpha, power=power)
        except ValueError as exc:
            raise ConfigurationError(f"--lift {lift:g}: {exc}") from None
        return {
            "base_rate": rate,
            "lift": lift,
            "control_share": control_share,
            "list_size_needed": n,
            "treated": n1,
            "control": n0,
            "power": power,
        }
    control = int(round(size * control_share))
    out = planning(rate, size - control, control, lift, power=power, alpha=alpha)
    return {"list_size": size, "control_share": control_share, **out}


def result_plots(store, report: dict, e: pd.DataFrame, query: ResultsQuery) -> dict[str, bytes]:
    """PNG plots of a report: the lift of responses (and of buyers) per cell with intervals,
    and the cumulative incremental revenue over the attribution window (aggregates only)."""
    from kundenwert.experiments import plots

    out = {
        name: plots.png(plots.campaign_lift(report, m))
        for m, name in (("responded", "lift"), ("bought", "lift_bought"))
    }
    if len(e) and e["treated"].sum() >= MIN_GROUP and (~e["treated"]).sum() >= MIN_GROUP:
        purchases = store.read_table(
            "purchases", ["customer_id", "purchased_at", "amount", "margin"], ordered=False
        )
        curve = cumulative_incremental_revenue(e, purchases, query.attribution_days, query.alpha)
        out["cumulative_revenue"] = plots.png(plots.cumulative_incremental(curve))
    return out


class OverviewCache:
    """``campaigns_overview`` for a service, computed again only when the store has changed (or
    after ``max_age`` seconds, as attribution windows close with the calendar). The overview
    reads the whole contact and purchase history (seconds on a large store) and the campaigns
    page, the analytics page and ``GET /v1/campaigns`` all show it. Changed means: the change
    log moved (every contact and consent written, feedback included, and one entry per bulk
    write: an import, an erasure) or a target list was made or deleted."""

    def __init__(self, max_age: float = 3600.0) -> None:
        self.max_age = max_age
        self._lock = threading.Lock()
        self._held: tuple[tuple, float, list[dict]] | None = None

    @staticmethod
    def fingerprint(store, catalog) -> tuple:
        import sqlalchemy as sa

        from kundenwert.db.schema import LIVE_CHANGES, TARGET_LISTS

        with store.engine.connect() as conn:
            seq = conn.execute(sa.select(sa.func.max(LIVE_CHANGES.c.seq))).scalar()
            lists = conn.execute(
                sa.select(sa.func.count(), sa.func.max(TARGET_LISTS.c.created_at)).select_from(TARGET_LISTS)
            ).one()
        return (str(store.engine.url), catalog, seq, tuple(lists))  # the catalog compared by content

    def overview(self, store, catalog) -> list[dict]:
        from kundenwert.db.errors import map_exceptions

        with map_exceptions("reading the campaigns' fingerprint"):
            key = self.fingerprint(store, catalog)
        with self._lock:  # one computation at a time; the others wait for it and share it
            held = self._held
            if held is not None and held[0] == key and time.monotonic() - held[1] < self.max_age:
                return held[2]
            rows = campaigns_overview(store, catalog)
            self._held = (key, time.monotonic(), rows)
            return rows
