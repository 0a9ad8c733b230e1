"""Sales by age group ("sales of a product in a given age group"): revenue, margin, units and buyers
per category or product x age group (and customer type, region) over a period, the share each group
holds, the change against the previous period of the same length, and beside it the predicted
affinity of the current scoring run. No HTTP here: the API and the CLI both call ``sales_report``.

The definitions, once:

- **Period** ``[start, end)``. Without dates: the last 90 days of data, i.e. up to the end of the day
  of the latest purchase in the store (what a marketing user looking at the latest import expects;
  "up to now" would show an empty or half-filled window whenever the CRM export is a few days old).
  The previous period is ``[start - (end - start), start)``.
- **Revenue** is net: the sum of ``amount`` of every row in the period, so a return (negative
  amount) lowers the revenue of the period it is booked in, not of the original sale. **Margin**
  likewise, where given (sums skip missing margins; null when a cell has none). **Units** are the
  quantities sold minus the quantities returned (a missing quantity counts 1). **Buyers** are the
  distinct customers with a positive row (a purchase) of the item in the period. Money is rounded
  to cents, shares and changes are of the rounded sums.
- **Age group** is the contract's (``kundenwert.features.contract.age_group``), from the birth year
  at the period's last day; no birth year: ``unknown``. The same people stay in their group for the
  previous period, so the change compares the same customers, not a band they aged into. A missing
  region is ``unknown`` too.
- **Data protection**: customers who object to profiling now (consent channel ``*`` not granted)
  are not counted (nor their scores); erased customers are gone from the store. A cell (item x
  group) with fewer than ``MIN_GROUP`` buyers in the period is left out and only counted
  (``suppressed_groups``); its previous-period figures are shown only when that period had
  ``MIN_GROUP`` buyers too (else null, counted in ``suppressed_previous``). Shares are of the
  revenue and buyers the shown cells of the item hold, so no left-out cell can be worked out by
  difference.
- **Predicted affinity** (``by=category`` only): the mean ``affinity_<category>`` score of the
  group's customers in the current scoring run (as ``GET /v1/analytics/affinity-by-age-group``
  computes it, with the groups above), and its lift against all scored customers; null for a group
  with fewer than ``MIN_GROUP`` scored customers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from kundenwert.errors import ConfigurationError
from kundenwert.features.contract import AGE_GROUPS, age_group

MIN_GROUP = 20  # analytics never show a group of fewer customers
DEFAULT_DAYS = 90
MAX_DAYS = 3650  # longest period given by ``days``
# no CRM holds a sale outside these years: a date beyond them is taken at the bound, so any
# instant the API's schema allows is a period (and pandas' ns timestamps never overflow)
FIRST = pd.Timestamp("1900-01-01", tz="UTC")
LAST = pd.Timestamp("2200-01-01", tz="UTC")
EARLIEST_PREVIOUS = pd.Timestamp("1800-01-01", tz="UTC")
DAY = pd.Timedelta(days=1)
CENTS = 2  # decimals of money in the answer
UNKNOWN = "unknown"


class SalesBy(StrEnum):
    """What a row is about: a product category or a single product."""

    category = "category"
    product = "product"


class Dimension(StrEnum):
    """The customer groups a row is cut by (age group always; customer type and region on demand)."""

    age_group = "age_group"
    customer_type = "customer_type"
    region = "region"


DIMENSIONS = tuple(d.value for d in Dimension)


def _utc(t: Any) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")


@dataclass(frozen=True)
class Period:
    """``[start, end)``, UTC."""

    start: pd.Timestamp
    end: pd.Timestamp

    @property
    def previous(self) -> Period:
        """The period of the same length just before."""
        return Period(max(self.start - (self.end - self.start), EARLIEST_PREVIOUS), self.start)

    @property
    def last_day(self) -> pd.Timestamp:
        """The last instant inside the period: the date age groups refer to."""
        return self.end - pd.Timedelta(microseconds=1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "days": (self.end - self.start) / DAY,
        }


def sales_period(
    *,
    days: int | None = None,
    since: Any = None,
    until: Any = None,
    latest: pd.Timestamp | None = None,
    now: pd.Timestamp | None = None,
    option: str = "",
    strict: bool = True,
) -> Period:
    """The period a user asks for. ``strict`` (the CLI) refuses contradictory options; without it
    (the API, whose schema cannot state rules between parameters) the dates win over ``days``
    and a ``since`` not before ``until`` is an empty period: every request the schema allows is
    answered, and the answer's ``period`` says what was measured.

    Parameters
    ----------
    days:
        Length in days (default 90 when ``since`` and ``until`` are not both given).
    since, until:
        ISO dates or instants (UTC unless given); ``until`` is exclusive. Either alone takes
        ``days`` from the other end.
    latest:
        The latest purchase in the store: without ``until``, the period ends at the end of its day
        (the next midnight, UTC); without purchases at the end of today (of ``now``).
    option:
        Prefix of the option names in error messages (``"--"`` for the CLI).
    """
    if days is not None and since is not None and until is not None and not strict:
        days = None
    if days is not None and since is not None and until is not None:
        raise ConfigurationError(f"give {option}days or {option}since with {option}until, not all three")
    if days is not None and not 1 <= days <= MAX_DAYS:
        raise ConfigurationError(f"{option}days must be 1 to {MAX_DAYS}, not {days}")
    start = _instant(since, f"{option}since")
    end = _instant(until, f"{option}until")
    start = None if start is None else min(max(start, FIRST), LAST)
    end = None if end is None else min(max(end, FIRST), LAST)
    length = DAY * (days if days is not None else DEFAULT_DAYS)
    if end is None:
        if start is not None and days is not None:
            end = start + length
        else:
            last = latest if latest is not None and not pd.isna(latest) else _utc(now or pd.Timestamp.now())
            end = _utc(last).normalize() + DAY
    if start is None:
        start = end - length
    if start >= end and not strict:
        return Period(start, start)
    if start >= end:
        raise ConfigurationError(
            f"{option}since ({start:%Y-%m-%d %H:%M}) must be before {option}until ({end:%Y-%m-%d %H:%M})"
        )
    return Period(start, end)


def _instant(value: Any, name: str) -> pd.Timestamp | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:  # a year pandas cannot hold (0001, 2500) is still a date: taken at the bounds below
            parsed = datetime.fromisoformat(value.strip())
            value = parsed if not FIRST.year <= parsed.year < LAST.year else value
        except ValueError:
            pass
    if isinstance(value, datetime):  # the API's instants: any year, taken at the bounds
        if value.year < FIRST.year:
            return FIRST
        if value.year >= LAST.year:
            return LAST
    try:
        t = _utc(value)
    except (ValueError, TypeError, OverflowError):
        t = None
    if t is None or pd.isna(t):
        raise ConfigurationError(
            f"{name} must be an ISO date or instant (2025-10-01 or 2025-10-01T08:00), not {str(value)[:40]!r}"
        )
    return t


def group_dimensions(dims: Iterable[str] | None, option: str = "dims") -> tuple[str, ...]:
    """``age_group`` first, then the other asked dimensions in their fixed order; an unknown name
    is a ``ConfigurationError`` naming the option and the known dimensions."""
    asked = [str(getattr(d, "value", d)).strip() for d in (dims or ())]
    asked = [d for d in asked if d]
    unknown = [d for d in asked if d not in DIMENSIONS]
    if unknown:
        raise ConfigurationError(
            f"{option}: unknown dimension {unknown[0]!r}; dimensions are {', '.join(DIMENSIONS)}"
        )
    return tuple(d for d in DIMENSIONS if d == Dimension.age_group or d in asked)


@dataclass
class SalesReport:
    """The answer: one row per shown (item x group) cell and what was left out (counts only)."""

    by: str
    dims: tuple[str, ...]
    period: Period
    rows: pd.DataFrame
    suppressed_groups: int
    suppressed_previous: int
    objecting_customers: int
    margin_given: bool
    score_run: str | None = None
    affinity_note: str | None = None
    min_group: int = MIN_GROUP
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (missing numbers as null)."""
        rows = self.rows.astype(object).where(self.rows.notna(), None)
        return {
            "by": self.by,
            "dims": list(self.dims),
            "period": self.period.as_dict(),
            "previous_period": self.period.previous.as_dict(),
            "age_at": f"{self.period.last_day:%Y-%m-%d}",
            "min_group": self.min_group,
            "suppressed_groups": self.suppressed_groups,
            "suppressed_previous": self.suppressed_previous,
            "objecting_customers": self.objecting_customers,
            "margin_given": self.margin_given,
            "score_run": self.score_run,
            "affinity_note": self.affinity_note,
            **self.extra,
            "rows": rows.to_dict("records"),
        }


def objecting_ids(consents: pd.DataFrame | None, now: pd.Timestamp | None = None) -> pd.Index:
    """Customers who object to all direct marketing and profiling at ``now`` (default: now)."""
    if consents is None or consents.empty:
        return pd.Index([], dtype=object)
    from kundenwert.serving.live import consent_now

    state = consent_now(consents, now if now is not None else pd.Timestamp.now(tz="UTC"))
    return state.index[state["objection"].to_numpy(dtype=bool)].astype(str)


def sales_by_group(
    customers: pd.DataFrame,
    purchases: pd.DataFrame,
    period: Period,
    *,
    by: str = SalesBy.category,
    dims: Sequence[str] = (Dimension.age_group,),
    consents: pd.DataFrame | None = None,
    products: pd.DataFrame | None = None,
    scores: pd.DataFrame | None = None,
    score_run: str | None = None,
    now: pd.Timestamp | None = None,
    min_group: int = MIN_GROUP,
) -> SalesReport:
    """Sales per item x group over ``period`` (see the module's docstring for the definitions).

    Parameters
    ----------
    customers:
        ``customer_id``, ``birth_year`` and the asked dimensions (``customer_type``, ``region``).
    purchases:
        ``customer_id``, ``purchased_at`` (UTC), ``amount``, ``category`` or ``product_id``;
        ``margin`` and ``quantity`` when known.
    period:
        ``[start, end)``; the previous period is as long and ends at ``start``.
    by:
        ``category`` or ``product``.
    dims:
        Group dimensions besides ``age_group``: ``customer_type``, ``region``.
    consents:
        The consent records; customers who object at ``now`` are not counted.
    products:
        ``product_id`` and ``category``: the category shown beside a product (``by=product``).
    scores:
        The current run's scores (indexed by ``customer_id``, ``affinity_<category>`` columns):
        the predicted affinity beside each ``by=category`` row.
    """
    by = _by(by)
    dims = group_dimensions(dims)
    item = "category" if by == SalesBy.category else "product_id"
    need = ["customer_id", "purchased_at", "amount", item]
    missing = [c for c in need if c not in purchases.columns]
    missing += [
        f"customers.{c}" for c in ("customer_id", "birth_year", *dims[1:]) if c not in customers.columns
    ]
    if missing:
        raise ConfigurationError(
            f"sales by group needs the columns {', '.join(missing)} (purchases unless named)"
        )

    objecting = objecting_ids(consents, now)
    cust = customers[~customers["customer_id"].astype(str).isin(objecting)]
    cust_ids = pd.Index(cust["customer_id"].astype(str))
    labels = _group_labels(cust, dims, period.last_day)  # one categorical per dimension, per customer

    prev = period.previous
    at = purchases["purchased_at"]
    window = purchases[((at >= prev.start) & (at < period.end)).to_numpy()]
    pos = cust_ids.get_indexer(window["customer_id"].astype(str))
    counted = pos >= 0  # objecting (and unknown) customers' rows are not counted
    gone = window["customer_id"].astype(str)[~counted]
    objecting_customers = int(gone[gone.isin(objecting)].nunique())
    window, pos = window[counted], pos[counted]

    amount = window["amount"].to_numpy(dtype="float64")
    has_margin = "margin" in window.columns
    margin = window["margin"].to_numpy(dtype="float64") if has_margin else np.full(len(window), np.nan)
    qty = (
        window["quantity"].to_numpy(dtype="float64") if "quantity" in window.columns else np.ones(len(window))
    )
    qty = np.where(np.isnan(qty), 1.0, qty)
    item_codes, items = pd.factorize(window[item].astype(object), use_na_sentinel=False)
    frame = pd.DataFrame(
        {
            "item": item_codes,
            **{d: labels[d].codes[pos] for d in dims},
            "customer": pos,
            "current": (window["purchased_at"] >= period.start).to_numpy(),
            "revenue": amount,
            "margin": margin,
            "units": np.where(amount < 0, -qty, qty),
            "buyer": amount > 0,
        }
    )
    keys = ["item", *dims]
    now_cells = _cells(frame[frame["current"].to_numpy()], keys)
    before = _cells(frame[~frame["current"].to_numpy()], keys).add_prefix("previous_")
    cells = now_cells.join(before, how="outer")
    for c in ("revenue", "units", "buyers", "previous_revenue", "previous_buyers"):
        cells[c] = cells[c].fillna(0)

    shown = (cells["buyers"] >= min_group).to_numpy()
    suppressed_groups = int((~shown).sum())
    cells = cells[shown].copy()
    prev_shown = (cells["previous_buyers"] >= min_group).to_numpy()
    suppressed_previous = int((~prev_shown).sum())
    cells.loc[~prev_shown, ["previous_revenue", "previous_margin"]] = np.nan
    money = ["revenue", "margin", "previous_revenue"]
    cells[money] = cells[money].round(CENTS)  # sums of amounts, without float noise
    cells["revenue_change"] = (cells["revenue"] - cells["previous_revenue"]).round(CENTS)
    base = cells["previous_revenue"].where(cells["previous_revenue"] > 0)
    cells["revenue_change_rel"] = cells["revenue_change"] / base

    per_item = cells.groupby(level="item")[["revenue", "buyers"]].transform("sum")
    total = per_item["revenue"].where(per_item["revenue"] > 0)
    cells["revenue_share"] = cells["revenue"] / total
    cells["buyers_share"] = cells["buyers"] / per_item["buyers"]

    rows = cells.reset_index()
    rows.insert(0, item, items.take(rows["item"].to_numpy()))
    note = None
    if by == SalesBy.product:
        rows.insert(1, "category", _product_category(rows["product_id"], window, products))
    else:
        rows, note = _with_affinity(rows, scores, cust_ids, labels, dims, min_group)
    order = np.lexsort(
        [
            *(rows[d].to_numpy() for d in reversed(dims)),
            rows[item].astype(str).to_numpy(),
            -rows.groupby("item")["revenue"].transform("sum").to_numpy(),
        ]
    )
    rows = rows.iloc[order]
    for d in dims:  # codes -> labels, after sorting by the codes (the age groups' own order)
        rows[d] = labels[d].categories.take(rows[d].to_numpy())
    columns = [
        item,
        *(["category"] if by == SalesBy.product else []),
        *dims,
        "revenue",
        "margin",
        "units",
        "buyers",
        "revenue_share",
        "buyers_share",
        "previous_revenue",
        "revenue_change",
        "revenue_change_rel",
        *(["predicted_affinity", "predicted_lift"] if by == SalesBy.category else []),
    ]
    rows = rows[columns].astype({"buyers": "int64"})
    margin_given = has_margin and bool(np.isfinite(margin).any())
    return SalesReport(
        by=str(by),
        dims=dims,
        period=period,
        rows=rows.reset_index(drop=True),
        suppressed_groups=suppressed_groups,
        suppressed_previous=suppressed_previous,
        objecting_customers=objecting_customers,
        margin_given=margin_given,
        score_run=score_run if note is None and by == SalesBy.category else None,
        affinity_note=note,
        min_group=min_group,
        extra={} if margin_given else {"margin_note": _margin_note(has_margin)},
    )


def _by(by: str, option: str = "") -> SalesBy:
    try:
        return SalesBy(str(getattr(by, "value", by)))
    except ValueError:
        raise ConfigurationError(
            f"{option}by must be {' or '.join(b.value for b in SalesBy)}, not {str(by)[:40]!r}"
        ) from None


def _margin_note(has_column: bool) -> str:
    if not has_column:
        return "the purchases have no margin column: margin is null"
    return "no purchase in these periods has a margin: margin is null"


def _group_labels(cust: pd.DataFrame, dims: tuple[str, ...], at: pd.Timestamp) -> dict[str, pd.Categorical]:
    """Per customer (in ``cust``'s order) a categorical label for each dimension."""
    out = {
        "age_group": pd.Categorical(age_group(cust["birth_year"].to_numpy(), at).to_numpy(), list(AGE_GROUPS))
    }
    for d in dims[1:]:
        values = cust[d].astype(object).where(cust[d].notna(), UNKNOWN).astype(str)
        out[d] = pd.Categorical(values.to_numpy())
    return out


def _cells(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Revenue, margin, units and buyers per cell of ``keys``."""
    g = frame.groupby(keys, sort=False)
    out = pd.DataFrame(
        {
            "revenue": g["revenue"].sum(),
            "margin": g["margin"].sum(min_count=1),
            "units": g["units"].sum(),
        }
    )
    buyers = frame[frame["buyer"].to_numpy()].drop_duplicates([*keys, "customer"])
    out["buyers"] = buyers.groupby(keys, sort=False).size()
    return out


def _product_category(
    product_ids: pd.Series, window: pd.DataFrame, products: pd.DataFrame | None
) -> np.ndarray:
    """The category beside a product: the products table's, else the first in its rows."""
    known = pd.Series(dtype=object)
    if "category" in window.columns:
        known = window.dropna(subset=["product_id"]).groupby("product_id")["category"].first()
    if products is not None and not products.empty:
        known = products.set_index("product_id")["category"].combine_first(known)
    return known.reindex(product_ids.to_numpy()).to_numpy(dtype=object)


def _with_affinity(
    rows: pd.DataFrame,
    scores: pd.DataFrame | None,
    cust_ids: pd.Index,
    labels: dict[str, pd.Categorical],
    dims: tuple[str, ...],
    min_group: int,
) -> tuple[pd.DataFrame, str | None]:
    """Add ``predicted_affinity`` and ``predicted_lift`` per (category x group) from the run."""
    rows = rows.assign(predicted_affinity=np.nan, predicted_lift=np.nan)
    if scores is None:
        return rows, "no scoring run: no predicted affinity"
    cols = [c for c in scores.columns if str(c).startswith("affinity_")]
    if not cols:
        return rows, "no affinity model in this scoring run"
    pos = cust_ids.get_indexer(scores.index.astype(str))
    held = pos >= 0  # scored customers who are in the store and do not object now
    values = scores.loc[held, cols].astype("float64")
    values.columns = [c[len("affinity_") :] for c in cols]
    groups = [pd.Series(labels[d].codes[pos[held]], index=values.index, name=d) for d in dims]
    g = values.groupby(groups, sort=False)
    mean, n = g.mean(), g.size()
    lift = mean / values.mean()
    big = (n >= min_group).to_numpy()
    long = pd.DataFrame(
        {"predicted_affinity": mean[big].stack(), "predicted_lift": lift[big].stack()}
    ).reset_index()
    long.columns = [*dims, "category", "predicted_affinity", "predicted_lift"]
    key = [*dims, "category"]
    long = long.astype({d: "int64" for d in dims}).astype({"category": object})
    rows = rows.drop(columns=["predicted_affinity", "predicted_lift"])
    left = rows[key].astype({d: "int64" for d in dims}).astype({"category": object})
    found = left.merge(long, how="left", on=key, validate="many_to_one")
    rows["predicted_affinity"] = found["predicted_affinity"].to_numpy()
    rows["predicted_lift"] = found["predicted_lift"].to_numpy()
    return rows, None


def current_scores(store: Any) -> tuple[pd.DataFrame | None, str | None]:
    """The current scoring run's scores and its id, or (None, None) when the store holds none
    (the CLI's source; the service passes the scores it serves)."""
    from kundenwert.serving.scores_store import latest_run, read_scores

    if latest_run(store.engine) is None:
        return None, None
    scores, _, run = read_scores(store.engine)
    return scores, str(run["run_id"])


def sales_report(
    store: Any,
    *,
    days: int | None = None,
    since: Any = None,
    until: Any = None,
    by: str = SalesBy.category,
    dims: Sequence[str] = (),
    scores: pd.DataFrame | None = None,
    score_run: str | None = None,
    now: pd.Timestamp | None = None,
    option: str = "",
    strict: bool = True,
) -> SalesReport:
    """``sales_by_group`` on the store's tables (``Store.read_table``) for the period asked for
    (``sales_period``: the default ends with the day of the latest counted purchase)."""
    by = _by(by, option)
    dims = group_dimensions(dims, f"{option}dims")
    item = "category" if by == SalesBy.category else "product_id"
    customers = store.read_table(
        "customers", ["customer_id", "birth_year", *dims[1:]], attributes=False, ordered=False
    )
    cols = ["customer_id", "purchased_at", "amount", "margin", "quantity", item]
    if by == SalesBy.product:
        cols.append("category")
    purchases = store.read_table("purchases", cols, ordered=False)
    consents = store.read_table("consents", ordered=False)
    products = store.read_table("products", ["product_id", "category"]) if by == SalesBy.product else None
    latest = None
    if since is None or until is None:  # the default end: the latest purchase that is counted
        objecting = objecting_ids(consents, now)
        counted = purchases["purchased_at"][~purchases["customer_id"].astype(str).isin(objecting)]
        latest = counted.max() if len(counted) else None
    period = sales_period(
        days=days, since=since, until=until, latest=latest, now=now, option=option, strict=strict
    )
    return sales_by_group(
        customers,
        purchases,
        period,
        by=by,
        dims=dims,
        consents=consents,
        products=products,
        scores=scores,
        score_run=score_run,
        now=now,
    )
