"""Candidates: what a decision needs that does not change between requests, worked out once per
scoring run from the rule table (``rules.RULES``): every (action, channel) pair of the catalog,
the rules tested once per run or period (eligibility, value, control group) folded into arrays,
and per pair the limits and detail texts of the rules tested live.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from kundenwert.serving.catalog import Action, Catalog
from kundenwert.serving.rules import (
    NOT_SCORED,
    RULES,
    CustomerColumns,
    CustomerTest,
    LiveTest,
    PeriodTest,
    Rule,
    ScoreTest,
    check_table,
    with_unavailable,
)


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
        fast = _pivot_long(values, ids, keys, default)
        if fast is not None:
            return fast
        mine = values.index.get_level_values("customer_id").isin(ids)
        if not mine.any():
            return out
        table = values[mine].unstack(list(values.index.names[1:]))
    wanted = pd.MultiIndex.from_tuples(keys) if keys and isinstance(keys[0], tuple) else pd.Index(keys)
    block = table.reindex(index=ids, columns=wanted).to_numpy(dtype="float64", na_value=np.nan)
    return np.where(np.isnan(block), default, block)


def _pivot_long(values: pd.Series, ids: pd.Index, keys: list, default: float) -> np.ndarray | None:
    """``pivot`` of a long column indexed by (customer_id, key levels...) through the index's
    codes (no unstack: 10x faster for a run's million customer-pairs); None when the index
    does not suit (not a MultiIndex with one level per key part, or a customer-key repeated:
    ``unstack`` refuses those)."""
    index = values.index
    if not keys or not isinstance(keys[0], tuple) or not isinstance(index, pd.MultiIndex):
        return None
    if index.nlevels != 1 + len(keys[0]) or index.names[0] != "customer_id" or not ids.is_unique:
        return None
    row = ids.get_indexer(index.levels[0])[index.codes[0]]
    row[index.codes[0] < 0] = -1
    # the position of each row's key among ``keys``: the key levels' codes as one number
    sizes = [len(level) for level in index.levels[1:]]
    code = np.zeros(len(index), dtype=np.int64)
    missing = row < 0
    for level_codes, size in zip(index.codes[1:], sizes, strict=True):
        code = code * (size + 1) + level_codes + 1  # +1: a missing label is code 0, never wanted
    known = np.full(len(keys), -1, dtype=np.int64)
    ok = np.ones(len(keys), dtype=bool)
    for j, level in enumerate(index.levels[1:]):
        at = level.get_indexer([k[j] for k in keys])
        ok &= at >= 0
        known = np.where(j == 0, at + 1, known * (sizes[j] + 1) + at + 1)
    column_of = np.full(int(np.prod([s + 1 for s in sizes])), -1, dtype=np.int64)
    column_of[known[ok]] = np.flatnonzero(ok)
    col = column_of[code]
    take = ~missing & (col >= 0)
    cells = row[take] * len(keys) + col[take]
    if len(cells) and np.bincount(cells, minlength=len(ids) * len(keys)).max() > 1:
        return None
    out = np.full((len(ids), len(keys)), default, dtype="float64")
    v = values.to_numpy(dtype="float64", na_value=np.nan)[take]
    out.reshape(-1)[cells] = np.where(np.isnan(v), default, v)
    return out


class Details:
    """Detail texts by number, so a detail is a small int until it is shown."""

    def __init__(self) -> None:
        self.texts: list[str] = [""]
        self._index = {"": 0}

    def __call__(self, text: str) -> int:
        if text not in self._index:
            self._index[text] = len(self.texts)
            self.texts.append(text)
        return self._index[text]


# (reason number(s), failing cells (None: where the numbers are not 0), detail number(s))
Part = tuple[Any, np.ndarray | None, Any]


def _apply(code: np.ndarray, detail: np.ndarray, part: Part) -> None:
    """Give ``part``'s reason and detail to the cells it fails that have none yet (the first
    failed rule wins)."""
    number, failed, text = part
    new = (number > 0 if failed is None else failed) & (code == 0)
    np.copyto(code, number, where=new, casting="unsafe")
    np.copyto(detail, text, where=new, casting="unsafe")


def _fold(parts: Sequence[Part], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(reason number, detail number) per cell of rules in funnel order."""
    code = np.zeros(shape, dtype=np.int8)
    detail = np.zeros(shape, dtype=np.int16)
    for part in parts:
        _apply(code, detail, part)
    return code, detail


def _fold_into(parts: list, part: Part, shape: tuple[int, int]) -> None:
    """Add a rule that does not depend on the period to a segment's ``parts``: folded at once
    into the segment's open run (3 bytes a cell however many rules the run holds)."""
    if not parts or not isinstance(parts[-1], list):
        parts.append([np.zeros(shape, dtype=np.int8), np.zeros(shape, dtype=np.int16)])
    code, detail = parts[-1]
    _apply(code, detail, part)


def _customer_part(
    rule: Rule, actions: list[Action], columns: CustomerColumns, d: Details
) -> tuple[np.ndarray, np.ndarray]:
    """(failing, detail number) per customer x action of one ``CustomerTest`` rule (its checks
    in order, the first failed check's detail)."""
    test = rule.test
    assert isinstance(test, CustomerTest)
    n = len(columns.frame)
    failed = np.zeros((n, len(actions)), dtype=bool)
    detail = np.zeros((n, len(actions)), dtype=np.int16)
    for i, action in enumerate(actions):
        for mask, text in test.failing(action, columns):
            new = mask & ~failed[:, i]
            failed[:, i] |= mask
            detail[new, i] = d(text)
    return failed, detail


def eligibility(
    actions: list[Action],
    customers: pd.DataFrame,
    details: Details | None = None,
    rules: tuple[Rule, ...] = RULES,
    unavailable: Mapping[str, str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(reason number, detail number) per customer x action of the rules on a scored customer
    (``CustomerTest``: status, customer type, open complaint, score ranges), in funnel order
    (0: eligible). Needs only the customers' scores, not the response model: batch scoring asks
    the response model only about the pairs a customer is eligible for. ``unavailable``: actions
    the run cannot serve (``Catalog.unavailable``), failing ``model_missing`` first."""
    d = details or Details()
    rules, numbers = with_unavailable(rules, unavailable)
    columns = CustomerColumns(customers, unavailable)
    parts = [
        (numbers[r.code], *_customer_part(r, actions, columns, d))
        for r in rules
        if isinstance(r.test, CustomerTest)
    ]
    return _fold(parts, (len(customers), len(actions)))


@dataclass(frozen=True)
class Step:
    """One stop of the funnel as the decide functions walk it: a live rule, or a run of
    consecutive rules worked out ahead (``segment``: its index in ``Candidates.after``)."""

    number: int  # the live rule's reason number; 0 for a segment
    rule: Rule | None = None
    segment: int = -1
    live: LiveTest | None = None  # the live rule's test


class Candidates:
    """The part of a decision that does not change between requests, for every customer of
    ``customers`` and every (action, channel) pair of the catalog: the rules of ``rules`` that
    are not live, worked out per customer and pair (``after``), propensity, value and score; per
    pair the limits and details of the live rules. Built once per scoring run (and per call of
    ``arbitrate``); ``decide`` adds the live state on top for any rows.

    One extra row at the end stands for a customer without scores: every action fails it with
    ``no_score`` at the first rule on a scored customer (after consent: an objecting customer is
    never scored and shows ``objection``).

    ``unavailable``: the actions the scoring run cannot serve, with why (``Catalog.unavailable``:
    a score they need comes from a model the run has none of); they fail ``model_missing``
    (``rules.MODEL_MISSING``) at the first rule on a scored customer, for every customer.
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
        rules: tuple[Rule, ...] = RULES,
        unavailable: Mapping[str, str] | None = None,
    ) -> None:
        check_table(rules)
        rules, self.code = with_unavailable(rules, unavailable)
        self.catalog, self.rules = catalog, rules
        self.reason_names = np.array(["", *self.code], dtype=object)
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
        self.details = d = Details()
        # the live rules per pair: limit (never failing when the policy leaves it open) and detail
        self.limits: dict[str, np.ndarray] = {}
        self.limit_detail: dict[str, np.ndarray] = {}
        policies = [catalog.channel_policy(self.actions[i], ch) for i, ch in pairs]
        for rule in rules:
            t = rule.test
            if not isinstance(t, LiveTest):
                continue
            limits = [getattr(p, t.limit) if isinstance(t.limit, str) else t.limit for p in policies]
            self.limits[rule.code] = np.array([t.unset if v is None else v for v in limits])
            self.limit_detail[rule.code] = np.array(
                [
                    0 if v is None or not t.detail else d(t.detail.format(channel=ch, limit=v))
                    for v, (_, ch) in zip(limits, pairs, strict=True)
                ],
                dtype=np.int16,
            )
        # propensity, value and score per (customer, pair); the last row: none
        keys = [(self.actions[i].id, ch) for i, ch in pairs]
        model = {m: pivot(propensity, m, ids, keys, np.nan) for m in ("response", "uplift")}
        columns = CustomerColumns(customers, unavailable)
        self.propensity = np.full((n + 1, k), np.nan)
        self.value = np.full((n + 1, k), np.nan)
        # the model's uplift (NaN where the run has none): target lists keep it for their results
        self.uplift = np.full((n + 1, k), np.nan)
        self.uplift[:n] = model["uplift"]
        # what a contact adds: the propensity formula with the model's uplift for the response
        self.incremental = np.full((n + 1, k), np.nan)
        self.ranked_by = np.empty(k, dtype=object)  # per pair: "uplift" or "response"
        for j, (i, _ch) in enumerate(pairs):
            action = self.actions[i]
            values = _score_values(action, columns, margins, {m: model[m][:, j] for m in model})
            with np.errstate(invalid="ignore", divide="ignore"):
                propensity = action.formula("propensity")
                self.propensity[:n, j] = np.broadcast_to(propensity(values), (n,))
                self.value[:n, j] = np.broadcast_to(action.formula("value")(values), (n,))
                self.incremental[:n, j] = np.broadcast_to(
                    propensity({**values, "response": model["uplift"][:, j]}), (n,)
                )
            learnt = bool(np.isfinite(model["uplift"][:, j]).any())
            self.ranked_by[j] = (
                "uplift"
                if action.ranking == "uplift" or (action.ranking == "auto" and learnt)
                else "response"
            )
        self.lever = np.array([self.actions[i].lever for i, _ in pairs], dtype="float64")
        by_uplift = self.ranked_by == "uplift"
        with np.errstate(invalid="ignore"):
            # ranked by uplift: the incremental value the contact earns; by response: the value if
            # contacted (an action ranked by uplift whose uplift the model never learnt: NaN, no_score)
            self.score = (
                np.where(by_uplift, self.incremental, self.propensity) * self.value * self.lever - self.cost
            )
        # the funnel as the decide functions walk it; the rules worked out ahead, by segment
        self.steps: list[Step] = []
        self._segments: list[list[Any]] = []  # per segment: Parts, or PeriodTest rules
        self._period_detail: dict[str, np.ndarray] = {}
        no_scores = np.zeros((n + 1, 1), dtype=bool)
        no_scores[n] = True
        first_customer_rule = True
        for rule in rules:
            t = rule.test
            if isinstance(t, LiveTest):
                self.steps.append(Step(self.code[rule.code], rule, live=t))
                continue
            if not self.steps or self.steps[-1].segment < 0:
                self.steps.append(Step(0, segment=len(self._segments)))
                self._segments.append([])
            parts = self._segments[-1]
            number = self.code[rule.code]
            shape = (n + 1, k)
            if isinstance(t, CustomerTest):
                if first_customer_rule:  # a customer without scores: nothing to test
                    _fold_into(parts, (self.code[NOT_SCORED], no_scores, d("not scored")), shape)
                    first_customer_rule = False
                failed, detail = _customer_part(rule, self.actions, columns, d)
                extra = np.zeros((1, len(self.actions)), dtype=bool)
                failed = np.vstack([failed, extra])[:, self.pair_action]
                detail = np.vstack([detail, extra])[:, self.pair_action]
                _fold_into(parts, (number, failed, detail), shape)
            elif isinstance(t, ScoreTest):
                _fold_into(parts, (number, t.failing(self.score), d(t.detail)), shape)
            elif isinstance(t, PeriodTest):
                parts.append(rule)  # drawn per period; its details numbered now, not in a request
                texts = np.array([d(t.detail(a)) for a in self.actions], dtype=np.int16)
                self._period_detail[rule.code] = texts[self.pair_action]
            else:
                raise TypeError(f"rule {rule.code}: unknown test {type(t).__name__}")
        self._segments = [
            [(p[0], None, p[1]) if isinstance(p, list) else p for p in parts] for parts in self._segments
        ]  # runs closed: (reason numbers, failing where not 0, detail numbers)
        self._after: dict[str, tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]] = {}
        self._selections: dict = {}
        self._positions = dict(zip(ids, range(n), strict=True))

    @property
    def before(self) -> np.ndarray:
        """Reason numbers per customer and pair of the rules on a scored customer (eligibility;
        0: eligible), or of whatever else the table folds into their segment."""
        for parts in self._segments:
            if len(parts) == 1 and not isinstance(parts[0], Rule):
                return parts[0][0]
        raise AttributeError("the rule table has no segment worked out once per run")

    def _fold_all(self, period: str) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        shape = (len(self.ids) + 1, len(self.action_ids))
        codes, details = [], []
        for parts in self._segments:
            if len(parts) == 1 and not isinstance(parts[0], Rule):
                code, _, detail = parts[0]  # nothing of it depends on the period: shared
            else:
                code, detail = _fold(
                    [self._period_part(p, period) if isinstance(p, Rule) else p for p in parts], shape
                )
            codes.append(code)
            details.append(detail)
        return tuple(codes), tuple(details)

    def _period_part(self, rule: Rule, period: str) -> Part:
        """A ``PeriodTest`` rule in ``period``: one draw per action and customer, whatever the channel."""
        t = rule.test
        assert isinstance(t, PeriodTest)
        ids = np.asarray(self.ids, dtype=object)
        found = np.zeros((len(ids) + 1, len(self.actions)), dtype=bool)
        for i, action in enumerate(self.actions):
            found[: len(ids), i] = t.failing(ids, action, period)
        return self.code[rule.code], found[:, self.pair_action], self._period_detail[rule.code]

    def position(self, customer_id: str) -> int | None:
        """The row of a scored customer, None for any other."""
        return self._positions.get(customer_id)

    def positions(self, customer_ids) -> np.ndarray:
        """Rows of ``customer_ids`` (the no-scores row for customers without scores)."""
        get, missing = self._positions.get, len(self.ids)
        return np.fromiter((get(c, missing) for c in customer_ids), dtype=np.intp, count=len(customer_ids))

    def after(self, period: str) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """(codes, details): per segment of rules worked out ahead (eligibility; value and
        ``period``'s control group), the first failed rule's number and detail per customer
        (+ the no-scores row) and pair.
        Worked out once per period; kept with the latest other one (the service works out the
        coming month ahead, so the first request of a month does not)."""
        found = self._after.get(period)
        if found is None:
            found = self._fold_all(period)
            latest = max(self._after, default=None)  # the month in use, when this one is the next
            kept = {} if latest is None else {latest: self._after[latest]}
            self._after = {**kept, period: found}  # one swap: readers see old or new
        return found

    def selection(self, channels: list[str] | None, actions: list[str] | None) -> Selection:
        """The pairs of some channels and actions with everything per pair ``decide`` needs."""
        key = (None if channels is None else tuple(channels), None if actions is None else tuple(actions))
        found = self._selections.get(key)
        if found is None:
            found = Selection.of(self, channels, actions)
            if len(self._selections) > 256:
                self._selections.clear()
            self._selections[key] = found
        return found


class Check(NamedTuple):
    """One step of the funnel for one pair, as ``decide_one`` tests it: the pair fails when
    ``fails(read[step][at], limit)``, where ``read[step]`` is what the step reads for the
    customer (a live value per customer, channel or action; a segment's reasons per pair)."""

    step: int
    at: int
    fails: Callable[[Any, Any], Any]
    limit: Any


class Outcome(NamedTuple):
    """What a pair gets when it fails a step: reason and detail numbers (``reason`` 0: a
    segment worked out ahead, whose value read is the reason and whose details are its own)."""

    reason: int
    detail: int


class HeadCheck(NamedTuple):
    """A leading step on a per-customer value with the same limit for every pair (the
    objection): tested once per customer, failing every pair or none."""

    step: int
    fails: Callable[[Any, Any], Any]
    limit: Any


class PairChecks(NamedTuple):
    """One pair of a selection as ``decide_one`` walks it: its ``column`` in ``Candidates``,
    its ``checks`` after the head, and per step its ``outcomes``."""

    column: int
    checks: tuple[tuple, ...]  # Check's fields, as plain tuples
    outcomes: tuple[tuple, ...]  # Outcome's fields, as plain tuples


@dataclass(frozen=True)
class Selection:
    """The pairs of some channels and actions (``k``: their columns; None: all) with what the
    decide functions read per pair."""

    k: np.ndarray | None
    pa: np.ndarray
    pc: np.ndarray
    limits: dict
    limit_detail: dict
    rank_in_channel: np.ndarray  # rank of each position once sorted by channel, then score
    action_ids: np.ndarray
    channel_names: np.ndarray
    cost: np.ndarray
    ranked_by: np.ndarray
    columns: list[int]
    head: tuple[HeadCheck, ...]  # decide_one: steps tested once per customer, then per pair
    pairs: list[PairChecks]

    @classmethod
    def of(cls, cands: Candidates, channels: list[str] | None, actions: list[str] | None) -> Selection:
        keep = np.ones(len(cands.action_ids), dtype=bool)
        if channels is not None:
            keep &= np.isin(cands.channel_names, list(channels))
        if actions is not None:
            keep &= np.isin(cands.action_ids, list(actions))
        k = None if keep.all() else np.flatnonzero(keep)
        pick = (lambda a: a) if k is None else (lambda a: a[..., k])
        pc = pick(cands.pair_channel)
        in_order = np.sort(pc, kind="stable")
        columns = list(range(len(cands.action_ids))) if k is None else [int(c) for c in k]
        every = [list(_checks(cands, col)) for col in columns]
        head: list[HeadCheck] = []
        for s, step in enumerate(cands.steps):
            limits = {pair[s][0].limit for pair in every}
            if step.live is None or step.live.per != "customer" or len(limits) != 1:
                break
            head.append(HeadCheck(s, step.live.fails, limits.pop()))
        return cls(
            k=k,
            pa=pick(cands.pair_action),
            pc=pc,
            limits={name: pick(v) for name, v in cands.limits.items()},
            limit_detail={name: pick(v) for name, v in cands.limit_detail.items()},
            rank_in_channel=np.arange(len(pc)) - np.searchsorted(in_order, in_order) + 1,
            action_ids=pick(cands.action_ids),
            channel_names=pick(cands.channel_names),
            cost=pick(cands.cost),
            ranked_by=pick(cands.ranked_by),
            columns=columns,
            head=tuple(head),
            pairs=[
                # checks and outcomes as plain tuples in their records' field order: the loop
                # unpacks them, and CPython unpacks an exact tuple faster than a NamedTuple
                PairChecks(
                    col, tuple(tuple(c) for c, _ in pair[len(head) :]), tuple(tuple(o) for _, o in pair)
                )
                for col, pair in zip(columns, every, strict=True)
            ],
        )


def _checks(cands: Candidates, col: int):
    """The funnel's steps for pair ``col`` as ``decide_one`` tests them: (``Check``, ``Outcome``)."""
    for s, step in enumerate(cands.steps):
        if step.live is None or step.rule is None:
            yield Check(s, col, operator.ne, 0), Outcome(0, 0)
            continue
        t, code = step.live, step.rule.code
        at = {"customer": 0, "channel": cands.pair_channel[col], "action": cands.pair_action[col]}[t.per]
        check = Check(s, int(at), t.fails, cands.limits[code][col].item())
        yield check, Outcome(step.number, int(cands.limit_detail[code][col]))


def _score_values(action: Action, columns: CustomerColumns, margins: dict[str, float], extra: dict) -> dict:
    values: dict[str, object] = {f"margin_{c}": m for c, m in margins.items()}
    values.update(action.params)
    for name in action.formula("value").names | action.formula("propensity").names:
        if name in values or name in extra:
            continue
        found = columns.numbers(name)
        # a score no model of the run gives: missing (the action is unavailable, model_missing)
        values[name] = found if found is not None else np.full(len(columns.frame), np.nan)
    values.update(extra)
    return values
