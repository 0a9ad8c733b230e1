"""Arbitration: which action, on which channel, for each customer, and why the others were dropped.

Every (customer, action, channel) of the catalog is a candidate. The funnel checks, in this order,
and the first rule a candidate fails is its reason code:

1. ``objection``: the customer's latest ``*`` record is an objection (no marketing, no profiling)
2. ``no_consent``: no valid consent for the channel (latest record wins; email needs double opt-in)
3. eligibility: ``status``, ``customer_type``, ``complaint_required``, ``complaint_forbidden``,
   ``score_out_of_range`` (the detail names the score)
4. contact policy: ``contact_pressure_7d``, ``contact_pressure_30d``, ``too_soon`` (days since the
   last outbound contact on the channel), ``ignored`` (k ignored contacts of this action in a row)
5. ``no_score``: a model output the action needs is missing for the customer
6. ``not_worth_it``: propensity x value x lever - cost is not above zero
7. ``control_group``: held out (a stable hash of customer, action and month) to measure the effect

Candidates that pass every rule are ranked per customer and channel by that score. Everything is
computed on whole columns: one pass for a million customers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kundenwert.serving.catalog import Action, Catalog

REASONS = (
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
EXPLAINED = {
    "objection": "the customer objected to direct marketing and profiling",
    "no_consent": "no valid consent for this channel",
    "status": "the action is not for customers of this status",
    "customer_type": "the action is not for this customer type",
    "complaint_required": "the action needs an open complaint",
    "complaint_forbidden": "the action is not offered while a complaint is open",
    "score_out_of_range": "a score is outside the action's range",
    "contact_pressure_7d": "too many contacts on this channel in the last 7 days",
    "contact_pressure_30d": "too many contacts on this channel in the last 30 days",
    "too_soon": "the last contact on this channel was too recent",
    "ignored": "the customer ignored this action too many times in a row",
    "no_score": "a model output the action needs is missing",
    "not_worth_it": "expected value does not cover the channel cost",
    "control_group": "held out in the control group to measure the effect",
}


COLUMNS = [
    "customer_id",
    "action_id",
    "channel",
    "propensity",
    "value",
    "expected_value",
    "cost",
    "score",
    "reason",
    "detail",
    "rank",
]


@dataclass(frozen=True)
class Inputs:
    """What arbitration needs, one row per customer (index ``customer_id``) unless said otherwise.

    - ``customers``: ``status`` (active/lapsed/new), ``customer_type``, ``open_complaint`` (bool)
      and the model outputs the catalog's formulas and ranges use (``clv``, ``churn``, ...).
    - ``consent``: one bool column per channel and ``objection`` (``consent_state``); customers
      without any record are missing and count as no consent.
    - ``pressure``: per (``customer_id``, ``channel``): ``contacts_7d``, ``contacts_30d``,
      ``days_since_last``; missing means no contact yet.
    - ``ignored``: per (``customer_id``, ``action_id``): ``ignored_in_a_row``.
    - ``propensity``: per (``customer_id``, ``action_id``, ``channel``): ``response`` (and
      ``uplift``) from the response model; missing where not scored.
    - ``margins``: margin rate per category (``margin_<category>`` in formulas).
    """

    customers: pd.DataFrame
    consent: pd.DataFrame
    pressure: pd.DataFrame
    ignored: pd.DataFrame
    propensity: pd.DataFrame
    margins: dict[str, float]


def in_control_group(customer_ids: np.ndarray, action_id: str, share: float, period: str) -> np.ndarray:
    """Stable control assignment: the same customer, action and period always land the same way."""
    if share <= 0:
        return np.zeros(len(customer_ids), dtype=bool)
    key = hashlib.blake2b(f"{action_id}|{period}".encode(), digest_size=8).hexdigest()[:16]
    h = pd.util.hash_array(np.asarray(customer_ids, dtype=object), hash_key=key)
    return (h / np.float64(2**64)) < share


def _column(frame: pd.DataFrame, name: str, index: pd.Index, default) -> np.ndarray:
    if name in frame.columns:
        return frame[name].reindex(index).to_numpy()
    return np.full(len(index), default)


class _Wide:
    """One column of a keyed input (e.g. ``contacts_7d`` per customer and channel), pivoted once to
    customers x keys and kept as one float array per key, so each candidate column is an array
    lookup, not a reindex."""

    def __init__(
        self, frame: pd.DataFrame | None, column: str, levels: list[str], ids: pd.Index, default: float
    ):
        self.n, self.default = len(ids), default
        self._columns: dict = {}
        if frame is None or frame.empty:
            return
        if isinstance(frame.columns, pd.MultiIndex):  # already wide: (metric, *levels) columns
            if column not in frame.columns.get_level_values(0):
                return
            table = frame[column].reindex(ids)
        else:
            if column not in frame.columns:
                return
            values = frame[column]
            mine = values.index.get_level_values("customer_id").isin(ids)
            if not mine.any():
                return
            table = values[mine].unstack(levels).reindex(ids)
        block = table.to_numpy(dtype="float64", na_value=np.nan)
        filled = np.where(np.isnan(block), default, block)
        self._columns = {key: filled[:, j] for j, key in enumerate(table.columns)}

    def get(self, key) -> np.ndarray:
        found = self._columns.get(key)
        return found if found is not None else np.full(self.n, self.default, dtype="float64")


def _score_values(action: Action, columns: _Columns, margins: dict[str, float], extra: dict) -> dict:
    values: dict[str, object] = {f"margin_{c}": m for c, m in margins.items()}
    values.update(action.params)
    for name in action.formula("value").names | action.formula("propensity").names:
        if name in values or name in extra:
            continue
        found = columns.get(name)
        if found is not None:
            values[name] = found
    values.update(extra)
    return values


class _Columns:
    """The customers' numeric columns as float arrays, converted once per call."""

    def __init__(self, customers: pd.DataFrame) -> None:
        self.frame, self._cache = customers, {}

    def get(self, name: str) -> np.ndarray | None:
        if name not in self._cache:
            self._cache[name] = (
                self.frame[name].to_numpy(dtype="float64", na_value=np.nan)
                if name in self.frame.columns
                else None
            )
        return self._cache[name]


def _fail(reason: np.ndarray, detail: np.ndarray, mask: np.ndarray, code: str, text: str = "") -> None:
    """Give ``code`` to the candidates in ``mask`` that have no reason yet (the first rule wins)."""
    new = mask & (reason == "")
    reason[new] = code
    detail[new] = text


def arbitrate(
    catalog: Catalog,
    inputs: Inputs,
    *,
    channels: list[str] | None = None,
    actions: list[str] | None = None,
    period: str = "",
) -> pd.DataFrame:
    """Every candidate with its funnel result, one row per (customer, action, channel).

    Columns: ``customer_id``, ``action_id``, ``channel``, ``propensity``, ``value``,
    ``expected_value`` (propensity x value), ``cost``, ``score`` (expected value x lever - cost),
    ``reason`` (empty when kept), ``detail`` and ``rank`` (1 = best per customer and channel;
    0 when dropped). ``period`` (e.g. ``"2026-11"``) keys the control-group draw.
    """
    cust = inputs.customers
    ids = cust.index
    n = len(ids)
    status = _column(cust, "status", ids, "new").astype(str)
    ctype = _column(cust, "customer_type", ids, "consumer").astype(str)
    complaint = _column(cust, "open_complaint", ids, False).astype(bool)
    objection = (
        inputs.consent["objection"].reindex(ids).fillna(False).to_numpy(dtype=bool)
        if "objection" in inputs.consent.columns
        else np.zeros(n, dtype=bool)
    )
    chosen = [a for a in catalog.actions if actions is None or a.id in actions]
    # every keyed input pivoted once for this call
    known = inputs.consent.reindex(ids)
    consent = {
        ch: known[ch].fillna(False).to_numpy(dtype=bool) for ch in inputs.consent.columns if ch != "objection"
    }
    no_consent = np.zeros(n, dtype=bool)
    pressure = {
        "contacts_7d": _Wide(inputs.pressure, "contacts_7d", ["channel"], ids, 0.0),
        "contacts_30d": _Wide(inputs.pressure, "contacts_30d", ["channel"], ids, 0.0),
        "days_since_last": _Wide(inputs.pressure, "days_since_last", ["channel"], ids, np.inf),
    }
    ignored = _Wide(inputs.ignored, "ignored_in_a_row", ["action_id"], ids, 0.0)
    pair = ["action_id", "channel"]
    propensities = {k: _Wide(inputs.propensity, k, pair, ids, np.nan) for k in ("response", "uplift")}
    numeric = _Columns(cust)
    parts = []
    for action in chosen:
        value_formula, propensity_formula = action.formula("value"), action.formula("propensity")
        el = action.eligibility
        # eligibility does not depend on the channel: checked once, applied after consent
        el_reason, el_detail = np.full(n, "", dtype=object), np.full(n, "", dtype=object)
        _fail(el_reason, el_detail, ~np.isin(status, el.status), "status", f"{'/'.join(el.status)} only")
        _fail(
            el_reason,
            el_detail,
            ~np.isin(ctype, el.customer_types),
            "customer_type",
            f"{'/'.join(el.customer_types)} only",
        )
        if el.complaint == "required":
            _fail(el_reason, el_detail, ~complaint, "complaint_required")
        elif el.complaint == "forbidden":
            _fail(el_reason, el_detail, complaint, "complaint_forbidden")
        for score, (lo, hi) in el.scores.items():
            s = _column(cust, score, ids, np.nan).astype("float64")
            out = np.isnan(s) | (s < (-np.inf if lo is None else lo)) | (s > (np.inf if hi is None else hi))
            _fail(el_reason, el_detail, out, "score_out_of_range", f"{score} outside [{lo}, {hi}]")

        control = None
        for channel, cost in action.channels.items():
            if channels is not None and channel not in channels:
                continue
            reason, detail = np.full(n, "", dtype=object), np.full(n, "", dtype=object)
            _fail(reason, detail, objection, "objection")
            permitted = consent.get(channel, no_consent)
            _fail(reason, detail, ~permitted, "no_consent", channel)
            take = (el_reason != "") & (reason == "")
            reason[take], detail[take] = el_reason[take], el_detail[take]

            policy = catalog.channel_policy(action, channel)
            c7, c30, since = (
                pressure[k].get(channel) for k in ("contacts_7d", "contacts_30d", "days_since_last")
            )
            if policy.max_contacts_7d is not None:
                _fail(
                    reason,
                    detail,
                    c7 >= policy.max_contacts_7d,
                    "contact_pressure_7d",
                    f"at most {policy.max_contacts_7d}",
                )
            if policy.max_contacts_30d is not None:
                _fail(
                    reason,
                    detail,
                    c30 >= policy.max_contacts_30d,
                    "contact_pressure_30d",
                    f"at most {policy.max_contacts_30d}",
                )
            if policy.min_days_between is not None:
                _fail(
                    reason,
                    detail,
                    since < policy.min_days_between,
                    "too_soon",
                    f"at least {policy.min_days_between:g} days",
                )
            if policy.suppress_after_ignored is not None:
                ign = ignored.get(action.id)
                _fail(
                    reason,
                    detail,
                    ign >= policy.suppress_after_ignored,
                    "ignored",
                    f"{policy.suppress_after_ignored} in a row",
                )

            extra = {k: propensities[k].get((action.id, channel)) for k in ("response", "uplift")}
            values = _score_values(action, numeric, inputs.margins, extra)
            with np.errstate(invalid="ignore", divide="ignore"):
                propensity = np.broadcast_to(propensity_formula(values), (n,)).astype("float64")
                value = np.broadcast_to(value_formula(values), (n,)).astype("float64")
                expected = propensity * value
                score = expected * action.lever - cost
            _fail(reason, detail, ~np.isfinite(score), "no_score")
            _fail(reason, detail, score <= 0, "not_worth_it")
            if control is None:  # one draw per action, whatever the channel
                control = in_control_group(np.asarray(ids), action.id, action.control_share, period)
            _fail(reason, detail, control, "control_group", f"{action.control_share:.0%} held out")
            parts.append(
                (action.id, channel, float(cost), propensity, value, expected, score, reason, detail)
            )
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    k = len(parts)
    ids_array = np.asarray(ids, dtype=object)
    out = pd.DataFrame(
        {
            "customer_id": np.tile(ids_array, k),
            "action_id": np.repeat([p[0] for p in parts], n),
            "channel": np.repeat([p[1] for p in parts], n),
            "propensity": np.concatenate([p[3] for p in parts]),
            "value": np.concatenate([p[4] for p in parts]),
            "expected_value": np.concatenate([p[5] for p in parts]),
            "cost": np.repeat([p[2] for p in parts], n),
            "score": np.concatenate([p[6] for p in parts]),
            "reason": np.concatenate([p[7] for p in parts]),
            "detail": np.concatenate([p[8] for p in parts]),
        }
    )
    kept = out["reason"] == ""
    ranked = out[kept].sort_values("score", ascending=False, kind="stable")
    rank = ranked.groupby(["customer_id", "channel"], sort=False).cumcount() + 1
    out["rank"] = 0
    out.loc[rank.index, "rank"] = rank.to_numpy()
    return out
