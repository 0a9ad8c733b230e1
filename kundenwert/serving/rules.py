"""The arbitration funnel as one table: each rule once, in funnel order.

Every (customer, action, channel) of the catalog is a candidate; the first rule of ``RULES`` a
candidate fails is its reason code. A rule says what it is called, what the customer is told,
which catalog field or input it reads and how it tests a pair. How it tests a pair also says when
it can be tested:

- ``LiveTest``: on the live state of a request (consent, contact pressure, ignored offers), as
  the store holds it at that moment; ``fails(value, limit)`` is an operator that works elementwise
  on arrays (the batch path) and on plain values (the one-customer path) alike.
- ``CustomerTest``: on a scored customer and an action (eligibility), once per scoring run.
- ``ScoreTest``: on a pair's score (propensity x value x lever - cost), once per scoring run.
- ``PeriodTest``: on a customer and an action in a period (the control group), once per period.

Both arbitration paths (``decide`` over many customers, ``decide_one`` for one) walk this table;
adding a rule is adding a row. A customer without scores has no data the customer rules could
test: they fail at the first customer rule with ``no_score`` (``NOT_SCORED``).
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from kundenwert.errors import ConfigurationError
from kundenwert.serving.catalog import Action

NOT_SCORED = "no_score"  # the reason of every pair of a customer without scores


class CustomerColumns:
    """The scored customers' columns as arrays, each converted once per scoring run;
    ``unavailable``: the actions the run cannot serve and why (``Catalog.unavailable``)."""

    def __init__(self, customers: pd.DataFrame, unavailable: Mapping[str, str] | None = None) -> None:
        self.frame = customers
        self.unavailable: Mapping[str, str] = unavailable or {}
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def _get(self, name: str, default, kind: str, convert: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        key = (name, kind)
        if key not in self._cache:
            f = self.frame
            raw = f[name].to_numpy() if name in f.columns else np.full(len(f), default)
            self._cache[key] = convert(raw)
        return self._cache[key]

    def text(self, name: str, default: str) -> np.ndarray:
        return self._get(name, default, "text", lambda a: a.astype(str))

    def flag(self, name: str) -> np.ndarray:
        return self._get(name, False, "flag", lambda a: a.astype(bool))

    def number(self, name: str) -> np.ndarray:
        return self._get(name, np.nan, "number", lambda a: a.astype("float64"))

    def numbers(self, name: str) -> np.ndarray | None:
        """A numeric column for a formula (missing values: NaN), None when there is none."""
        if name not in self.frame.columns:
            return None
        return self._get(
            name, np.nan, "formula", lambda _: self.frame[name].to_numpy(dtype="float64", na_value=np.nan)
        )


@dataclass(frozen=True)
class LiveTest:
    """Fails a pair when ``fails(value, limit)``: ``value`` is the ``Live`` field of the customer
    (``per`` customer, or at the pair's channel or action), ``limit`` a constant or the pair's
    ``ChannelPolicy`` field (``unset`` when the policy leaves it open: never failing).
    ``detail`` is formatted with the pair's ``channel`` and ``limit``."""

    value: str
    per: Literal["customer", "channel", "action"]
    fails: Callable[[Any, Any], Any]
    limit: str | bool | float
    unset: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class CustomerTest:
    """``failing(action, columns)``: (failing customers, detail text) for each check of the rule
    the action asks for (none: the action does not use the rule)."""

    failing: Callable[[Action, CustomerColumns], Iterable[tuple[np.ndarray, str]]]


@dataclass(frozen=True)
class ScoreTest:
    """``failing(score)``: the failing (customer, pair) cells of a customers x pairs score."""

    failing: Callable[[np.ndarray], np.ndarray]
    detail: str = ""


@dataclass(frozen=True)
class PeriodTest:
    """``failing(customer_ids, action, period)``: the customers failing in ``period``;
    ``detail(action)`` the text shown."""

    failing: Callable[[np.ndarray, Action, str], np.ndarray]
    detail: Callable[[Action], str]


@dataclass(frozen=True)
class Rule:
    """One rule of the funnel: its reason ``code``, the ``explanation`` the customer's funnel
    shows, the catalog field or input it ``reads``, and its ``test``."""

    code: str
    explanation: str
    reads: str
    test: LiveTest | CustomerTest | ScoreTest | PeriodTest

    @property
    def live(self) -> bool:
        """Tested on each request (as opposed to once per scoring run or period)."""
        return isinstance(self.test, LiveTest)


def in_control_group(customer_ids: np.ndarray, action_id: str, share: float, period: str) -> np.ndarray:
    """Stable control assignment: the same customer, action and period always land the same way."""
    if share <= 0:
        return np.zeros(len(customer_ids), dtype=bool)
    key = hashlib.blake2b(f"{action_id}|{period}".encode(), digest_size=8).hexdigest()[:16]
    h = pd.util.hash_array(np.asarray(customer_ids, dtype=object), hash_key=key)
    return (h / np.float64(2**64)) < share


def _status(a: Action, c: CustomerColumns):
    yield ~np.isin(c.text("status", "new"), a.eligibility.status), f"{'/'.join(a.eligibility.status)} only"


def _customer_type(a: Action, c: CustomerColumns):
    types = a.eligibility.customer_types
    yield ~np.isin(c.text("customer_type", "consumer"), types), f"{'/'.join(types)} only"


def _complaint(needed: str, open_fails: bool):
    def failing(a: Action, c: CustomerColumns):
        if a.eligibility.complaint == needed:
            yield c.flag("open_complaint") == open_fails, ""

    return failing


def _score_ranges(a: Action, c: CustomerColumns):
    for score, (lo, hi) in a.eligibility.scores.items():
        s = c.number(score)
        out = np.isnan(s) | (s < (-np.inf if lo is None else lo)) | (s > (np.inf if hi is None else hi))
        yield out, f"{score} outside [{lo}, {hi}]"


def _no_score(score: np.ndarray) -> np.ndarray:
    return ~np.isfinite(score)


def _not_worth_it(score: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return score <= 0


def _control(ids: np.ndarray, a: Action, period: str) -> np.ndarray:
    return in_control_group(ids, a.id, a.control_share, period)


RULES: tuple[Rule, ...] = (
    Rule(
        "objection",
        "the customer objected to direct marketing and profiling",
        "consents: the latest '*' record",
        LiveTest("objection", "customer", operator.eq, True),
    ),
    Rule(
        "no_consent",
        "no valid consent for this channel",
        "consents of the channel",
        LiveTest("consent", "channel", operator.eq, False, detail="{channel}"),
    ),
    Rule(
        "status",
        "the action is not for customers of this status",
        "eligibility.status",
        CustomerTest(_status),
    ),
    Rule(
        "customer_type",
        "the action is not for this customer type",
        "eligibility.customer_types",
        CustomerTest(_customer_type),
    ),
    Rule(
        "complaint_required",
        "the action needs an open complaint",
        "eligibility.complaint",
        CustomerTest(_complaint("required", False)),
    ),
    Rule(
        "complaint_forbidden",
        "the action is not offered while a complaint is open",
        "eligibility.complaint",
        CustomerTest(_complaint("forbidden", True)),
    ),
    Rule(
        "score_out_of_range",
        "a score is outside the action's range",
        "eligibility.scores",
        CustomerTest(_score_ranges),
    ),
    Rule(
        "contact_pressure_7d",
        "too many contacts on this channel in the last 7 days",
        "policy.max_contacts_7d",
        LiveTest("contacts_7d", "channel", operator.ge, "max_contacts_7d", np.inf, "at most {limit}"),
    ),
    Rule(
        "contact_pressure_30d",
        "too many contacts on this channel in the last 30 days",
        "policy.max_contacts_30d",
        LiveTest("contacts_30d", "channel", operator.ge, "max_contacts_30d", np.inf, "at most {limit}"),
    ),
    Rule(
        "too_soon",
        "the last contact on this channel was too recent",
        "policy.min_days_between",
        LiveTest(
            "days_since_last", "channel", operator.lt, "min_days_between", -np.inf, "at least {limit:g} days"
        ),
    ),
    Rule(
        "ignored",
        "the customer ignored this action too many times in a row",
        "policy.suppress_after_ignored",
        LiveTest("ignored", "action", operator.ge, "suppress_after_ignored", np.inf, "{limit} in a row"),
    ),
    Rule(
        "no_score",
        "a model output the action needs is missing",
        "the action's value and propensity formulas",
        ScoreTest(_no_score),
    ),
    Rule(
        "not_worth_it",
        "expected value does not cover the channel cost",
        "channels (cost), lever",
        ScoreTest(_not_worth_it),
    ),
    Rule(
        "control_group",
        "held out in the control group to measure the effect",
        "control_share",
        PeriodTest(_control, lambda a: f"{a.control_share:.0%} held out"),
    ),
)


def _unavailable(a: Action, c: CustomerColumns):
    why = c.unavailable.get(a.id)
    if why:
        yield np.ones(len(c.frame), dtype=bool), why


# Not a row of ``RULES``: added in front of the customer rules by ``with_unavailable`` for a
# scoring run without some models (its number after the table's, which keep theirs), so a run
# with every model walks exactly the table.
MODEL_MISSING = Rule(
    "model_missing",
    "the action needs a score no model of the current scoring run gives",
    "the scoring run's models (kw_score_runs.models) and the action's formulas and score ranges",
    CustomerTest(_unavailable),
)


def with_unavailable(
    rules: tuple[Rule, ...], unavailable: Mapping[str, str] | None
) -> tuple[tuple[Rule, ...], dict[str, int]]:
    """(rules, reason numbers) of a funnel in which the actions of ``unavailable`` fail
    ``MODEL_MISSING`` at the first customer rule; ``rules`` and ``codes_of`` as they are when
    every action is available."""
    if not unavailable or any(r.code == MODEL_MISSING.code for r in rules):
        return rules, codes_of(rules)
    at = next((i for i, r in enumerate(rules) if isinstance(r.test, CustomerTest)), len(rules))
    return (*rules[:at], MODEL_MISSING, *rules[at:]), {**codes_of(rules), MODEL_MISSING.code: len(rules) + 1}


def explanation(code: str) -> str:
    """What a reason code means (the code itself for an unknown one)."""
    return MODEL_MISSING.explanation if code == MODEL_MISSING.code else EXPLAINED.get(code, code)


def check_table(rules: tuple[Rule, ...]) -> None:
    """A table arbitration can run: unique codes that fit a reason array, ``NOT_SCORED`` among them."""
    codes = [r.code for r in rules]
    if len(set(codes)) != len(codes) or NOT_SCORED not in codes or len(codes) > 127:
        raise ConfigurationError(
            f"arbitration rule table: it needs unique codes (at most 127) including {NOT_SCORED!r}, "
            f"got {', '.join(codes)}; give each Rule its own code and keep the {NOT_SCORED!r} rule"
        )


def codes_of(rules: tuple[Rule, ...]) -> dict[str, int]:
    """Reason code -> number (0: kept), in funnel order."""
    return {r.code: i + 1 for i, r in enumerate(rules)}


REASONS = tuple(r.code for r in RULES)
EXPLAINED = {r.code: r.explanation for r in RULES}
CODE = codes_of(RULES)
REASON_OF_CODE = np.array(["", *REASONS], dtype=object)
