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
from typing import NamedTuple

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


CODE = {r: i + 1 for i, r in enumerate(REASONS)}  # 0: kept
REASON_OF_CODE = np.array(["", *REASONS], dtype=object)


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
      ``uplift``) from the response model; missing where not scored. Also taken wide: columns
      (metric, action_id, channel), a row per customer.
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


def pivot(frame: pd.DataFrame | None, column: str, ids: pd.Index, keys: list, default: float) -> np.ndarray:
    """One column of a keyed input (``contacts_7d`` per customer and channel, ``response`` per
    customer, action and channel, ...) as a customers x ``keys`` float array, ``default`` where
    missing. ``frame`` is long (index customer_id + key levels) or wide (columns metric + keys)."""
    out = np.full((len(ids), len(keys)), default, dtype="float64")
    if frame is None or frame.empty:
        return out
    if isinstance(frame.columns, pd.MultiIndex):
        if column not in frame.columns.get_level_values(0):
            return out
        table = frame[column]
    else:
        if column not in frame.columns:
            return out
        values = frame[column]
        mine = values.index.get_level_values("customer_id").isin(ids)
        if not mine.any():
            return out
        table = values[mine].unstack(list(values.index.names[1:]))
    wanted = pd.MultiIndex.from_tuples(keys) if keys and isinstance(keys[0], tuple) else pd.Index(keys)
    block = table.reindex(index=ids, columns=wanted).to_numpy(dtype="float64", na_value=np.nan)
    return np.where(np.isnan(block), default, block)


class _Details:
    """Detail texts by number, so a detail is a small int until it is shown."""

    def __init__(self) -> None:
        self.texts: list[str] = [""]
        self._index = {"": 0}

    def __call__(self, text: str) -> int:
        if text not in self._index:
            self._index[text] = len(self.texts)
            self.texts.append(text)
        return self._index[text]


def _fail(code: np.ndarray, detail: np.ndarray, mask: np.ndarray, reason: str, text: int = 0) -> None:
    """Give ``reason`` to the rows in ``mask`` that have none yet (the first rule wins)."""
    new = mask & (code == 0)
    code[new] = CODE[reason]
    detail[new] = text


def eligibility(
    actions: list[Action], customers: pd.DataFrame, details: _Details | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(reason code, detail number) per customer x action of the eligibility rules, in funnel
    order (0: eligible): status, customer type, open complaint, score ranges. Needs only the
    customers' scores, not the response model: batch scoring asks the response model only about
    the pairs a customer is eligible for."""
    d = details or _Details()
    ids = customers.index
    n = len(ids)
    codes = np.zeros((n, len(actions)), dtype=np.int8)
    texts = np.zeros((n, len(actions)), dtype=np.int16)
    status = _column(customers, "status", ids, "new").astype(str)
    ctype = _column(customers, "customer_type", ids, "consumer").astype(str)
    complaint = _column(customers, "open_complaint", ids, False).astype(bool)
    for i, action in enumerate(actions):
        code, detail = codes[:, i], texts[:, i]  # views
        el = action.eligibility
        _fail(code, detail, ~np.isin(status, el.status), "status", d(f"{'/'.join(el.status)} only"))
        _fail(
            code,
            detail,
            ~np.isin(ctype, el.customer_types),
            "customer_type",
            d(f"{'/'.join(el.customer_types)} only"),
        )
        if el.complaint == "required":
            _fail(code, detail, ~complaint, "complaint_required")
        elif el.complaint == "forbidden":
            _fail(code, detail, complaint, "complaint_forbidden")
        for score, (lo, hi) in el.scores.items():
            s = _column(customers, score, ids, np.nan).astype("float64")
            out = np.isnan(s) | (s < (-np.inf if lo is None else lo)) | (s > (np.inf if hi is None else hi))
            _fail(code, detail, out, "score_out_of_range", d(f"{score} outside [{lo}, {hi}]"))
    return codes, texts


class Candidates:
    """The part of a decision that does not change between requests, for every customer of
    ``customers`` and every (action, channel) pair of the catalog: eligibility, propensity,
    value and score, and the reason a pair is not worth it. Built once per scoring run (and
    per call of ``arbitrate``); ``decide`` adds the live state on top for any rows.

    One extra row at the end stands for a customer without scores: every action fails it with
    ``no_score`` (after consent: an objecting customer is never scored and shows ``objection``).
    """

    def __init__(
        self,
        catalog: Catalog,
        customers: pd.DataFrame,
        propensity: pd.DataFrame | None,
        margins: dict[str, float],
        *,
        channels: list[str] | None = None,
        actions: list[str] | None = None,
    ) -> None:
        self.catalog = catalog
        ids = customers.index
        self.ids = ids
        n = len(ids)
        self.actions = [a for a in catalog.actions if actions is None or a.id in actions]
        self.action_id_list = [a.id for a in self.actions]
        pairs = [
            (i, ch)
            for i, a in enumerate(self.actions)
            for ch in a.channels
            if channels is None or ch in channels
        ]
        self.channels = list(dict.fromkeys(ch for _, ch in pairs))
        self.pair_action = np.array([i for i, _ in pairs], dtype=np.intp)
        self.pair_channel = np.array([self.channels.index(ch) for _, ch in pairs], dtype=np.intp)
        self.action_ids = np.array([self.actions[i].id for i, _ in pairs], dtype=object)
        self.channel_names = np.array([ch for _, ch in pairs], dtype=object)
        k = len(pairs)
        self.cost = np.array([self.actions[i].channels[ch] for i, ch in pairs], dtype="float64")
        self.details = d = _Details()
        # contact policy per pair: thresholds (never failing when unset) and their detail texts
        self.limits = {
            name: np.full(k, np.inf if name != "min_days_between" else -np.inf) for name in _POLICY
        }
        self.limit_detail = {name: np.zeros(k, dtype=np.int16) for name in _POLICY}
        for j, (i, ch) in enumerate(pairs):
            policy = catalog.channel_policy(self.actions[i], ch)
            for name, (_, text) in _POLICY.items():
                value = getattr(policy, name)
                if value is not None:
                    self.limits[name][j] = value
                    self.limit_detail[name][j] = d(text.format(value))
        self.consent_detail = np.array([d(ch) for _, ch in pairs], dtype=np.int16)
        self.control_detail = np.array(
            [d(f"{self.actions[i].control_share:.0%} held out") for i, _ in pairs], dtype=np.int16
        )
        # eligibility per (customer, action), the last row: no scores
        code, detail = eligibility(self.actions, customers, d)
        code = np.vstack([code, np.full((1, len(self.actions)), CODE["no_score"], np.int8)])
        detail = np.vstack([detail, np.full((1, len(self.actions)), d("not scored"), np.int16)])
        # the rules before the contact policy (eligibility) per pair, ready to copy
        self.before, self.before_detail = code[:, self.pair_action], detail[:, self.pair_action]
        # propensity, value and score per (customer, pair); the last row: none
        keys = [(self.actions[i].id, ch) for i, ch in pairs]
        model = {m: pivot(propensity, m, ids, keys, np.nan) for m in ("response", "uplift")}
        numeric = _Columns(customers)
        self.propensity = np.full((n + 1, k), np.nan)
        self.value = np.full((n + 1, k), np.nan)
        for j, (i, _ch) in enumerate(pairs):
            action = self.actions[i]
            values = _score_values(action, numeric, margins, {m: model[m][:, j] for m in model})
            with np.errstate(invalid="ignore", divide="ignore"):
                self.propensity[:n, j] = np.broadcast_to(action.formula("propensity")(values), (n,))
                self.value[:n, j] = np.broadcast_to(action.formula("value")(values), (n,))
        self.lever = np.array([self.actions[i].lever for i, _ in pairs], dtype="float64")
        with np.errstate(invalid="ignore"):
            self.score = self.propensity * self.value * self.lever - self.cost
        self.worth = np.zeros((n + 1, k), dtype=np.int8)
        self.worth[~np.isfinite(self.score)] = CODE["no_score"]
        self.worth[(self.worth == 0) & (self.score <= 0)] = CODE["not_worth_it"]
        self._after: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._selections: dict = {}
        self._positions = dict(zip(ids, range(n), strict=True))

    def position(self, customer_id: str) -> int | None:
        """The row of a scored customer, None for any other."""
        return self._positions.get(customer_id)

    def positions(self, customer_ids) -> np.ndarray:
        """Rows of ``customer_ids`` (the no-scores row for customers without scores)."""
        get, missing = self._positions.get, len(self.ids)
        return np.fromiter((get(c, missing) for c in customer_ids), dtype=np.intp, count=len(customer_ids))

    def control(self, period: str) -> np.ndarray:
        """(customers + 1) x actions: held out in ``period``'s control groups (one draw per action
        and customer, whatever the channel)."""
        ids = np.asarray(self.ids, dtype=object)
        found = np.zeros((len(ids) + 1, len(self.actions)), dtype=bool)
        for i, action in enumerate(self.actions):
            found[: len(ids), i] = in_control_group(ids, action.id, action.control_share, period)
        return found

    def after(self, period: str) -> tuple[np.ndarray, np.ndarray]:
        """(code, detail) per customer and pair of the rules after the contact policy:
        ``no_score``, ``not_worth_it``, then ``period``'s control group. Worked out once per
        period; kept with the latest other one (the service works out the coming month ahead,
        so the first request of a month does not)."""
        found = self._after.get(period)
        if found is None:
            control = self.control(period)[:, self.pair_action] & (self.worth == 0)
            code = np.where(control, CODE["control_group"], self.worth).astype(np.int8)
            detail = np.where(control, self.control_detail, 0).astype(np.int16)
            found = code, detail
            latest = max(self._after, default=None)  # the month in use, when this one is the next
            kept = {} if latest is None else {latest: self._after[latest]}
            self._after = {**kept, period: found}  # one swap: readers see old or new
        return found

    def selection(self, channels: list[str] | None, actions: list[str] | None) -> _Selection:
        """The pairs of some channels and actions with everything per pair ``decide`` needs."""
        key = (None if channels is None else tuple(channels), None if actions is None else tuple(actions))
        found = self._selections.get(key)
        if found is None:
            keep = np.ones(len(self.action_ids), dtype=bool)
            if channels is not None:
                keep &= np.isin(self.channel_names, list(channels))
            if actions is not None:
                keep &= np.isin(self.action_ids, list(actions))
            k = None if keep.all() else np.flatnonzero(keep)
            pick = (lambda a: a) if k is None else (lambda a: a[..., k])
            pc = pick(self.pair_channel)
            in_order = np.sort(pc, kind="stable")
            found = _Selection(
                k=k,
                pa=pick(self.pair_action),
                pc=pc,
                limits={name: pick(v) for name, v in self.limits.items()},
                limit_detail={name: pick(v) for name, v in self.limit_detail.items()},
                consent_detail=pick(self.consent_detail),
                rank_in_channel=np.arange(len(pc)) - np.searchsorted(in_order, in_order) + 1,
                action_ids=pick(self.action_ids),
                channel_names=pick(self.channel_names),
                cost=pick(self.cost),
                pairs=[
                    (
                        int(col),
                        int(self.pair_action[col]),
                        int(self.pair_channel[col]),
                        *(float(self.limits[name][col]) for name in _POLICY),
                        *(int(self.limit_detail[name][col]) for name in _POLICY),
                        int(self.consent_detail[col]),
                    )
                    for col in (range(len(self.action_ids)) if k is None else k)
                ],
            )
            if len(self._selections) > 256:
                self._selections.clear()
            self._selections[key] = found
        return found


@dataclass(frozen=True)
class _Selection:
    k: np.ndarray | None  # the pairs' columns; None: all
    pa: np.ndarray
    pc: np.ndarray
    limits: dict
    limit_detail: dict
    consent_detail: np.ndarray
    rank_in_channel: np.ndarray  # rank of each position once sorted by channel, then score
    action_ids: np.ndarray
    channel_names: np.ndarray
    cost: np.ndarray
    pairs: list[tuple]  # per pair, for decide_one: (column, action, channel, limits..., details...)


# contact policy: catalog field -> (reason code, detail text)
_POLICY = {
    "max_contacts_7d": ("contact_pressure_7d", "at most {}"),
    "max_contacts_30d": ("contact_pressure_30d", "at most {}"),
    "min_days_between": ("too_soon", "at least {:g} days"),
    "suppress_after_ignored": ("ignored", "{} in a row"),
}


@dataclass(frozen=True)
class Live:
    """The live state of some customers, as arrays in a ``Candidates``' channel and action order:
    ``objection`` (n), ``consent`` (n x channels), ``contacts_7d``, ``contacts_30d``,
    ``days_since_last`` (n x channels; 0, 0 and infinity without contacts) and ``ignored``
    (n x actions: ignored offers in a row)."""

    objection: np.ndarray
    consent: np.ndarray
    contacts_7d: np.ndarray
    contacts_30d: np.ndarray
    days_since_last: np.ndarray
    ignored: np.ndarray

    @classmethod
    def from_frames(
        cls,
        cands: Candidates,
        ids: pd.Index,
        consent: pd.DataFrame,
        pressure: pd.DataFrame,
        ignored: pd.DataFrame,
    ) -> Live:
        known = consent.reindex(ids)
        objection = (
            known["objection"].fillna(False).to_numpy(dtype=bool)
            if "objection" in known.columns
            else np.zeros(len(ids), dtype=bool)
        )
        permitted = np.zeros((len(ids), len(cands.channels)), dtype=bool)
        for j, ch in enumerate(cands.channels):
            if ch in known.columns:
                permitted[:, j] = known[ch].fillna(False).to_numpy(dtype=bool)
        return cls(
            objection=objection,
            consent=permitted,
            contacts_7d=pivot(pressure, "contacts_7d", ids, cands.channels, 0.0),
            contacts_30d=pivot(pressure, "contacts_30d", ids, cands.channels, 0.0),
            days_since_last=pivot(pressure, "days_since_last", ids, cands.channels, np.inf),
            ignored=pivot(ignored, "ignored_in_a_row", ids, [a.id for a in cands.actions], 0.0),
        )


class LiveOne(NamedTuple):
    """``Live`` for one customer as plain lists (what ``decide_one`` reads)."""

    objection: bool
    consent: list[bool]
    contacts_7d: list[float]
    contacts_30d: list[float]
    days_since_last: list[float]
    ignored: list[float]


@dataclass(frozen=True)
class Decisions:
    """Arbitration's result for n customers x k pairs (in the catalog's pair order): ``reason``
    codes (0: kept; ``REASON_OF_CODE``), ``detail`` numbers (``details``), ``rank`` (1 = best per
    customer and channel, 0 when dropped), ``propensity``, ``value``, ``score``; per pair:
    ``action_ids``, ``channels``, ``cost``."""

    customer_ids: np.ndarray
    action_ids: np.ndarray
    channels: np.ndarray
    cost: np.ndarray
    propensity: np.ndarray
    value: np.ndarray
    score: np.ndarray
    reason: np.ndarray
    detail: np.ndarray
    rank: np.ndarray
    details: list[str]

    @staticmethod
    def concat(parts: list[Decisions], customer_ids: list[str]) -> Decisions:
        """Several ``Decisions`` of the same pairs as one, rows in ``customer_ids`` order."""
        ids = np.concatenate([p.customer_ids for p in parts])
        where = {cid: i for i, cid in enumerate(ids)}
        order = np.array([where[c] for c in customer_ids], dtype=np.intp)
        rows = {
            name: np.concatenate([getattr(p, name) for p in parts])[order]
            for name in ("customer_ids", "propensity", "value", "score", "reason", "detail", "rank")
        }
        first = parts[0]
        return Decisions(
            action_ids=first.action_ids,
            channels=first.channels,
            cost=first.cost,
            details=first.details,
            **rows,
        )

    def frame(self) -> pd.DataFrame:
        """One row per (customer, action, channel), pair by pair (``COLUMNS``)."""
        n, k = self.reason.shape
        if k == 0:
            return pd.DataFrame(columns=COLUMNS)
        flat = lambda a: a.T.reshape(-1)  # noqa: E731  pair-major: a pair's customers together
        return pd.DataFrame(
            {
                "customer_id": np.tile(np.asarray(self.customer_ids, dtype=object), k),
                "action_id": np.repeat(self.action_ids, n),
                "channel": np.repeat(self.channels, n),
                "propensity": flat(self.propensity),
                "value": flat(self.value),
                "expected_value": flat(self.propensity * self.value),
                "cost": np.repeat(self.cost, n),
                "score": flat(self.score),
                "reason": REASON_OF_CODE[flat(self.reason)],
                "detail": np.asarray(self.details, dtype=object)[flat(self.detail)],
                "rank": flat(self.rank).astype("int64"),
            }
        )


def decide(
    cands: Candidates,
    customer_ids,
    live: Live,
    *,
    period: str,
    channels: list[str] | None = None,
    actions: list[str] | None = None,
) -> Decisions:
    """The funnel for ``customer_ids`` (their rows of ``cands``; customers without scores get
    the no-scores row) with their ``live`` state (same order): the first failed rule of each pair
    is its reason; the pairs left are ranked per customer and channel by score.
    ``channels``/``actions`` keep only those pairs."""
    rows = cands.positions(customer_ids)
    sel = cands.selection(channels, actions)
    pick = (lambda a: a[rows]) if sel.k is None else (lambda a: a[rows][:, sel.k])
    after, after_detail = cands.after(period)
    reason, detail = pick(after), pick(after_detail)  # copies: fancy indexing
    # the earlier rules, last to first, so that the first failed rule is the one kept
    lim, lim_detail = sel.limits, sel.limit_detail
    for failed, code, text in (
        (live.ignored[:, sel.pa] >= lim["suppress_after_ignored"], "ignored", "suppress_after_ignored"),
        (live.days_since_last[:, sel.pc] < lim["min_days_between"], "too_soon", "min_days_between"),
        (live.contacts_30d[:, sel.pc] >= lim["max_contacts_30d"], "contact_pressure_30d", "max_contacts_30d"),
        (live.contacts_7d[:, sel.pc] >= lim["max_contacts_7d"], "contact_pressure_7d", "max_contacts_7d"),
    ):
        np.copyto(reason, CODE[code], where=failed, casting="unsafe")
        np.copyto(detail, lim_detail[text], where=failed)
    before = pick(cands.before)
    failed = before > 0
    np.copyto(reason, before, where=failed)
    np.copyto(detail, pick(cands.before_detail), where=failed)
    failed = ~live.consent[:, sel.pc]
    np.copyto(reason, CODE["no_consent"], where=failed, casting="unsafe")
    np.copyto(detail, sel.consent_detail, where=failed)
    failed = live.objection[:, None]
    np.copyto(reason, CODE["objection"], where=failed, casting="unsafe")
    np.copyto(detail, 0, where=failed, casting="unsafe")
    score = pick(cands.score)
    kept = reason == 0
    # rank per customer and channel: each row sorted by channel, then score (ties: pair order)
    shape = reason.shape
    key = np.where(kept, -score, np.inf)  # dropped pairs sort last in their channel
    order = np.lexsort((key, np.broadcast_to(sel.pc, shape)), axis=-1)
    rank = np.empty(shape, dtype=np.int32)
    np.put_along_axis(rank, order, np.broadcast_to(sel.rank_in_channel, shape), axis=-1)
    rank[~kept] = 0
    return Decisions(
        customer_ids=np.asarray(customer_ids, dtype=object),
        action_ids=sel.action_ids,
        channels=sel.channel_names,
        cost=sel.cost,
        propensity=pick(cands.propensity),
        value=pick(cands.value),
        score=score,
        reason=reason,
        detail=detail,
        rank=rank,
        details=cands.details.texts,
    )


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
    cands = Candidates(
        catalog, inputs.customers, inputs.propensity, inputs.margins, channels=channels, actions=actions
    )
    ids = inputs.customers.index
    live = Live.from_frames(cands, ids, inputs.consent, inputs.pressure, inputs.ignored)
    return decide(cands, ids, live, period=period).frame()


_P7, _P30, _SOON, _IGN = (CODE[_POLICY[name][0]] for name in _POLICY)


def decide_one(
    cands: Candidates,
    customer_id: str,
    live: LiveOne,
    *,
    period: str,
    channels: list[str] | None = None,
    actions: list[str] | None = None,
) -> Decisions:
    """``decide`` for one customer, in plain Python over the few dozen pairs: numpy's per-call
    cost dominates arrays this small (0.15 ms there, a fifth of that here). The same rules in
    the same order; a test holds both equal for every customer of a world. The rows of the
    result are lists (one customer), not arrays."""
    row = cands.position(customer_id)
    row = len(cands.ids) if row is None else row
    sel = cands.selection(channels, actions)
    after, after_detail = cands.after(period)
    after, after_detail = after[row].tolist(), after_detail[row].tolist()
    before, before_detail = cands.before[row].tolist(), cands.before_detail[row].tolist()
    score_row = cands.score[row].tolist()
    objection, consent, c7, c30, since, ignored = live
    reason, detail, kept = [], [], []
    for j, (col, a, c, l7, l30, ldays, lign, d7, d30, ddays, dign, dconsent) in enumerate(sel.pairs):
        if objection:
            code, text = CODE["objection"], 0
        elif not consent[c]:
            code, text = CODE["no_consent"], dconsent
        elif before[col]:
            code, text = before[col], before_detail[col]
        elif c7[c] >= l7:
            code, text = _P7, d7
        elif c30[c] >= l30:
            code, text = _P30, d30
        elif since[c] < ldays:
            code, text = _SOON, ddays
        elif ignored[a] >= lign:
            code, text = _IGN, dign
        else:
            code, text = after[col], after_detail[col]
        reason.append(code)
        detail.append(text)
        if code == 0:
            kept.append(j)
    rank = [0] * len(sel.pairs)
    scores = [score_row[p[0]] for p in sel.pairs]
    last_channel, n = None, 0
    for j in sorted(kept, key=lambda j: (sel.pairs[j][2], -scores[j])):  # stable: pair order on ties
        n = n + 1 if sel.pairs[j][2] == last_channel else 1
        last_channel = sel.pairs[j][2]
        rank[j] = n
    columns = [p[0] for p in sel.pairs]
    propensity, value = cands.propensity[row].tolist(), cands.value[row].tolist()
    return Decisions(  # one row as plain lists: cheaper to build and to read than tiny arrays
        customer_ids=[customer_id],
        action_ids=sel.action_ids,
        channels=sel.channel_names,
        cost=sel.cost,
        propensity=[[propensity[c] for c in columns]],
        value=[[value[c] for c in columns]],
        score=[scores],
        reason=[reason],
        detail=[detail],
        rank=[rank],
        details=cands.details.texts,
    )
