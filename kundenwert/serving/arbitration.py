"""Arbitration: which action, on which channel, for each customer, and why the others were dropped.

Every (customer, action, channel) of the catalog is a candidate. The funnel is the rule table
``rules.RULES`` (consent, eligibility, contact policy, value, control group), and the first rule
a candidate fails is its reason code. Candidates that pass every rule are ranked per customer and
channel by score (propensity x value x lever - cost). ``decide`` runs the funnel on whole columns
(one pass for a million customers), ``decide_one`` for one customer in plain Python; both walk
the same table (``Candidates.steps``), and a test holds them equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from kundenwert.serving.candidates import Candidates, Details, Selection, eligibility, pivot
from kundenwert.serving.catalog import Catalog
from kundenwert.serving.rules import CODE, EXPLAINED, REASON_OF_CODE, REASONS, RULES, in_control_group

__all__ = [
    "CODE",
    "COLUMNS",
    "EXPLAINED",
    "REASONS",
    "REASON_OF_CODE",
    "RULES",
    "Candidates",
    "Decisions",
    "Details",
    "Inputs",
    "Live",
    "LiveOne",
    "Selection",
    "arbitrate",
    "decide",
    "decide_one",
    "eligibility",
    "in_control_group",
    "pivot",
]

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
    "uplift",
    "ranked_by",
    "incremental_value",
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


# per customer: numpy arrays from decide, plain (nested) lists from decide_one
Rows = Any


@dataclass(frozen=True)
class Decisions:
    """Arbitration's result for n customers x k pairs (in the catalog's pair order): ``reason``
    codes (0: kept; ``reason_names``), ``detail`` numbers (``details``), ``rank`` (1 = best per
    customer and channel, 0 when dropped), ``propensity``, ``value``, ``score``; per pair:
    ``action_ids``, ``channels``, ``cost``."""

    customer_ids: Rows
    action_ids: np.ndarray
    channels: np.ndarray
    cost: np.ndarray
    propensity: Rows
    value: Rows
    score: Rows
    reason: Rows
    detail: Rows
    rank: Rows
    details: list[str]
    # reason code by number, of the rule table the decisions were made with
    reason_names: np.ndarray = field(default_factory=lambda: REASON_OF_CODE)
    # per customer: an objection to profiling holds at the moment of the decision (GDPR Art. 21)
    objection: Rows = None
    # the response model's uplift per (customer, pair) as scored (NaN: the run has none)
    uplift: Rows = None
    # per pair: what its score ranks by, "uplift" (incremental value) or "response"
    ranked_by: np.ndarray | None = None
    # per (customer, pair): the propensity formula with the uplift for the response (NaN: none)
    incremental: Rows = None

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
        if all(p.objection is not None for p in parts):
            rows["objection"] = np.concatenate([np.asarray(p.objection, dtype=bool) for p in parts])[order]
        for name in ("uplift", "incremental"):
            if all(getattr(p, name) is not None for p in parts):
                rows[name] = np.concatenate([np.asarray(getattr(p, name), dtype="float64") for p in parts])[
                    order
                ]
        first = parts[0]
        return Decisions(
            action_ids=first.action_ids,
            channels=first.channels,
            cost=first.cost,
            ranked_by=first.ranked_by,
            details=first.details,
            reason_names=first.reason_names,
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
                "reason": self.reason_names[flat(self.reason)],
                "detail": np.asarray(self.details, dtype=object)[flat(self.detail)],
                "rank": flat(self.rank).astype("int64"),
                "uplift": np.full(n * k, np.nan) if self.uplift is None else flat(np.asarray(self.uplift)),
                "ranked_by": np.repeat(
                    np.full(k, "response", dtype=object) if self.ranked_by is None else self.ranked_by, n
                ),
                "incremental_value": np.full(n * k, np.nan)
                if self.incremental is None
                else flat(np.asarray(self.incremental) * np.asarray(self.value)),
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
    codes, details = cands.after(period)
    shape = (len(rows), len(sel.action_ids))
    steps = cands.steps
    if steps and steps[-1].rule is None:  # the last segment as it is: a copy (fancy indexing)
        reason, detail = pick(codes[steps[-1].segment]), pick(details[steps[-1].segment])
        steps = steps[:-1]
    else:
        reason, detail = np.zeros(shape, dtype=np.int8), np.zeros(shape, dtype=np.int16)
    at = {"channel": sel.pc, "action": sel.pa}
    # the steps last to first, so that the first failed rule is the one kept
    for step in reversed(steps):
        if step.live is None or step.rule is None:
            code = pick(codes[step.segment])
            failed = code > 0
            np.copyto(reason, code, where=failed)
            np.copyto(detail, pick(details[step.segment]), where=failed)
            continue
        t, name = step.live, step.rule.code
        value = getattr(live, t.value)
        value = value[:, None] if t.per == "customer" else value[:, at[t.per]]
        failed = t.fails(value, sel.limits[name])
        np.copyto(reason, step.number, where=failed, casting="unsafe")
        np.copyto(detail, sel.limit_detail[name], where=failed)
    score = pick(cands.score)
    kept = reason == 0
    # rank per customer and channel: each row sorted by channel, then score (ties: pair order)
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
        reason_names=cands.reason_names,
        objection=np.asarray(live.objection, dtype=bool),
        uplift=pick(cands.uplift),
        ranked_by=sel.ranked_by,
        incremental=pick(cands.incremental),
    )


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
    ``expected_value`` (propensity x value), ``cost``, ``score`` (ranked by uplift: the
    incremental value x lever - cost; by response: expected value x lever - cost), ``ranked_by``,
    ``reason`` (empty when kept), ``detail`` and ``rank`` (1 = best per customer and channel;
    0 when dropped). ``period`` (e.g. ``"2026-11"``) keys the control-group draw.
    """
    cands = Candidates(
        catalog, inputs.customers, inputs.propensity, inputs.margins, channels=channels, actions=actions
    )
    ids = inputs.customers.index
    live = Live.from_frames(cands, ids, inputs.consent, inputs.pressure, inputs.ignored)
    return decide(cands, ids, live, period=period).frame()


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
    cost dominates arrays this small. The same steps of the same table, each pair tested step by
    step until one fails (``Selection.pairs``); a test holds both paths equal for every customer
    of a world. The rows of the result are lists (one customer), not arrays."""
    row = cands.position(customer_id)
    row = len(cands.ids) if row is None else row
    sel = cands.selection(channels, actions)
    codes, details = cands.after(period)
    # what each step reads for this customer, indexed as its checks say
    read: list[list] = []
    told: list[list | None] = []
    for step in cands.steps:
        if step.live is None:
            read.append(codes[step.segment][row].tolist())
            told.append(details[step.segment][row].tolist())
        else:
            t = step.live
            value = getattr(live, t.value)
            read.append([value] if t.per == "customer" else value)
            told.append(None)
    reason, detail, kept = [], [], []
    for head in sel.head:  # failed for every pair, or for none
        if head.fails(read[head.step][0], head.limit):
            reason = [pair.outcomes[head.step][0] for pair in sel.pairs]
            detail = [pair.outcomes[head.step][1] for pair in sel.pairs]
            break
    for j, pair in enumerate(sel.pairs if not reason else ()):
        for s, at, fails, limit in pair.checks:
            value = read[s][at]
            if fails(value, limit):
                number, why = pair.outcomes[s]
                if number:
                    reason.append(number)
                    detail.append(why)
                else:  # a segment worked out ahead: the value read is the reason
                    reason.append(value)
                    detail.append(told[s][at])
                break
        else:
            reason.append(0)
            detail.append(0)
            kept.append(j)
    channel_of = sel.pc.tolist()
    columns = sel.columns
    score_row = cands.score[row].tolist()
    scores = [score_row[c] for c in columns]
    rank = [0] * len(columns)
    last_channel, n = None, 0
    for j in sorted(kept, key=lambda j: (channel_of[j], -scores[j])):  # stable: pair order on ties
        n = n + 1 if channel_of[j] == last_channel else 1
        last_channel = channel_of[j]
        rank[j] = n
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
        reason_names=cands.reason_names,
        objection=[bool(live.objection)],
        uplift=[[cands.uplift[row].tolist()[c] for c in columns]],
        ranked_by=sel.ranked_by,
        incremental=[[cands.incremental[row].tolist()[c] for c in columns]],
    )
