"""Point-in-time customer snapshots: what we knew about each customer at a cutoff.

Every feature at cutoff ``t`` is computed from rows strictly before ``t`` (the contract's rule).
Where a row's *meaning* arrives later than its timestamp, the later moment counts: a campaign
contact's outcome is only used once its response window has closed before ``t``; an offer or a
complaint is open at ``t`` unless it was closed before ``t``.

The work is one pure function, ``snapshot_shard(frames, cutoff, spec)``, over all rows of a set of
customers. ``snapshot`` splits the customers into shards by a stable hash of ``customer_id`` and
runs it per shard (in processes with ``jobs > 1``); the same function fits Spark's
``groupBy(shard).applyInPandas``. Everything that would differ between shards (the category and
channel columns) is fixed beforehand in ``SnapshotSpec``, so the result does not depend on the
shard count.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from kundenwert.features.consent import consent_matrix
from kundenwert.features.contract import ALL_CHANNELS, MARKETING_CHANNELS, TABLES, age_group
from kundenwert.features.validate import missing_column

DAY = pd.Timedelta(days=1)
RESPONSES = ("responded", "converted")
Frames = dict[str, pd.DataFrame]


class SnapshotConfig(BaseModel):
    """How snapshots are computed (validated; part of every experiment configuration)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    unit: Literal["D", "W"] = Field("D", description="time unit of recency and T: days or weeks (7 days)")
    windows: tuple[int, ...] = Field((30, 90, 180, 365), description="purchase windows in days")
    contact_windows: tuple[int, ...] = Field((90, 365), description="contact windows in days")
    activity_window: int = Field(180, gt=0, description="days: active = purchased within it")
    response_window: int = Field(14, ge=0, description="days after a contact in which a response counts")
    response_prior: float = Field(0.03, gt=0, lt=1, description="prior response rate for smoothing")
    response_prior_weight: float = Field(5.0, gt=0, description="prior strength in contacts")


@dataclass(frozen=True)
class SnapshotSpec:
    """Everything a shard needs besides its rows: config and the column sets fixed for all shards."""

    config: SnapshotConfig = field(default_factory=SnapshotConfig)
    categories: tuple[str, ...] = ()
    channels: tuple[str, ...] = MARKETING_CHANNELS
    attributes: tuple[str, ...] = ()


def _utc(t: pd.Timestamp | str) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")


def spec_for(frames: Frames, config: SnapshotConfig | None = None) -> SnapshotSpec:
    """Column sets from the whole data, so that every shard produces the same columns."""
    config = config or SnapshotConfig()
    cats = tuple(sorted(frames["purchases"]["category"].dropna().unique())) if "purchases" in frames else ()
    contacts = frames.get("contacts")
    chans = set(MARKETING_CHANNELS)
    if contacts is not None and len(contacts):
        chans |= set(contacts.loc[contacts["direction"] == "outbound", "channel"].dropna().unique())
    contract_cols = set(TABLES["customers"].column_names)
    attrs = tuple(c for c in frames["customers"].columns if c not in contract_cols)
    return SnapshotSpec(config=config, categories=cats, channels=tuple(sorted(chans)), attributes=attrs)


# -------------------------------------------------------------------------------------- preparation

US_PER_DAY = 86_400_000_000


def _us(values: pd.Series) -> np.ndarray:
    """Timestamps as int64 microseconds since the epoch, UTC (NaT becomes the smallest int64)."""
    if values.dt.tz is None:
        values = values.dt.tz_localize("UTC")
    return np.asarray(values.astype("datetime64[us, UTC]").array.asi8, dtype=np.int64)


def lookup(values: pd.Series, vocabulary: pa.Array) -> np.ndarray:
    """Position of each value in ``vocabulary`` (-1 when absent or missing), hashed in Arrow."""
    arr = pa.array(values.astype("str").array)
    found = pc.index_in(arr, value_set=vocabulary.cast(arr.type))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _flag(values: pd.Series) -> np.ndarray:
    return values.astype("boolean").fillna(False).to_numpy(dtype=bool)


@dataclass(frozen=True)
class Prepared:
    """The rows a snapshot reads, as arrays over integer customer codes, for any number of cutoffs.

    ``ids[code]`` is the customer id. Purchases and contacts are columns of equal length sorted by
    (customer code, time), so that per customer the rows before any cutoff form a prefix; consents
    likewise by (code, channel, time); complaints and offers stay frames whose ``customer_id`` is
    the code.
    """

    ids: np.ndarray
    customers: pd.DataFrame
    purchases: dict[str, np.ndarray]
    contacts: dict[str, np.ndarray]
    consents: dict[str, np.ndarray]
    small: dict[str, pd.DataFrame]

    def subset(self, keep: np.ndarray) -> Prepared:
        """The customers where ``keep`` (a boolean per code) is true, renumbered 0..m-1."""
        new_code = np.cumsum(keep) - 1

        def rows(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            sel = keep[cols["code"]]
            out = {k: v[sel] for k, v in cols.items()}
            out["code"] = new_code[out["code"]]
            return out

        small = {}
        for name, df in self.small.items():
            df = df[keep[df["customer_id"].to_numpy()]]
            small[name] = df.assign(customer_id=new_code[df["customer_id"].to_numpy()])
        return Prepared(
            self.ids[keep],
            self.customers[keep].reset_index(drop=True),
            rows(self.purchases),
            rows(self.contacts),
            rows(self.consents),
            small,
        )


def _sorted_rows(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    order = np.lexsort((cols["t"], cols["code"]))
    return {k: v[order] for k, v in cols.items()}


def _prepare_purchases(p: pd.DataFrame, code: np.ndarray, spec: SnapshotSpec) -> dict[str, np.ndarray]:
    known = code >= 0
    p = p[known]
    channel, channels = pd.factorize(p["sales_channel"])
    is_web = np.append(np.asarray(channels == "web", dtype=bool), False)  # code -1 (missing): not web
    return _sorted_rows(
        {
            "code": code[known],
            "t": _us(p["purchased_at"]),
            "amount": p["amount"].to_numpy(dtype="float64", na_value=np.nan),
            "margin": p["margin"].to_numpy(dtype="float64", na_value=np.nan),
            "discount": p["discount"].to_numpy(dtype="float64", na_value=np.nan),
            "category": lookup(p["category"], pa.array(spec.categories, pa.string())),
            "channel": channel.astype(np.int64),
            "web": is_web[channel],
        }
    )


def _prepare_contacts(k: pd.DataFrame, code: np.ndarray, spec: SnapshotSpec) -> dict[str, np.ndarray]:
    known = code >= 0
    k = k[known]
    outcome = k["outcome"].astype("str")
    topic = k["topic"].astype("str")
    return _sorted_rows(
        {
            "code": code[known],
            "t": _us(k["contacted_at"]),
            "channel": lookup(k["channel"], pa.array(spec.channels, pa.string())),
            "outbound": (k["direction"] == "outbound").to_numpy(dtype=bool, na_value=False),
            "control": _flag(k["is_control"]),
            "responded": outcome.isin(RESPONSES).to_numpy(dtype=bool),
            "unsubscribed": (outcome == "unsubscribed").to_numpy(dtype=bool, na_value=False),
            "information": topic.str.contains("information", case=False).to_numpy(dtype=bool, na_value=False),
        }
    )


def _prepare_consents(c: pd.DataFrame, code: np.ndarray, spec: SnapshotSpec) -> dict[str, np.ndarray]:
    """Records of the snapshot's channels and of ``*``, sorted by (code, channel, time); ties keep
    their input order, as ``consent_state``'s stable sort does."""
    channel = lookup(c["channel"], pa.array([*spec.channels, ALL_CHANNELS], pa.string()))
    keep = (code >= 0) & (channel >= 0)
    c = c[keep]
    cols = {
        "code": code[keep],
        "channel": channel[keep],
        "t": _us(c["recorded_at"]),
        "granted": _flag(c["granted"]),
        "double_opt_in": _flag(c["double_opt_in"]),
    }
    order = np.lexsort((cols["t"], cols["channel"], cols["code"]))
    return {k: v[order] for k, v in cols.items()}


def prepare(frames: Frames, spec: SnapshotSpec) -> Prepared:
    """Customer codes, integer times and vocabulary codes, computed once for any number of cutoffs.

    Purchases and contacts are prepared in two threads (Arrow and NumPy release the GIL).
    """
    cust = frames["customers"].sort_values("customer_id").reset_index(drop=True)
    ids = cust["customer_id"].to_numpy(dtype=object)
    vocab_ids = pa.array(cust["customer_id"].astype("str").array)
    tables = {name: frames[name] if name in frames else _empty(name) for name in TABLES_READ}

    def codes(name: str) -> np.ndarray:
        return lookup(tables[name]["customer_id"], vocab_ids)

    with ThreadPoolExecutor(max_workers=2) as pool:
        purchases = pool.submit(lambda: _prepare_purchases(tables["purchases"], codes("purchases"), spec))
        contacts = pool.submit(lambda: _prepare_contacts(tables["contacts"], codes("contacts"), spec))
        consents = _prepare_consents(tables["consents"], codes("consents"), spec)
        small = {}
        for name in ("complaints", "offers"):
            code = codes(name)
            small[name] = tables[name][code >= 0].assign(customer_id=code[code >= 0])
        return Prepared(ids, cust, purchases.result(), contacts.result(), consents, small)


TABLES_READ = ("purchases", "contacts", "consents", "complaints", "offers")


# ------------------------------------------------------------------------------------------ families


class _By:
    """Aggregates per customer code (0..n-1) of rows given by their codes: counts, sums, last rows."""

    def __init__(self, code: np.ndarray, n: int) -> None:
        self.code, self.n = code, n

    def count(self, mask: np.ndarray | None = None) -> np.ndarray:
        c = self.code if mask is None else self.code[mask]
        return np.bincount(c, minlength=self.n).astype("float64")

    def sum(self, values: np.ndarray, mask: np.ndarray | None = None, min_count: int = 0) -> np.ndarray:
        """Sums skipping NaN; NaN where fewer than ``min_count`` values were summed."""
        ok = ~np.isnan(values) if mask is None else mask & ~np.isnan(values)
        out = np.bincount(self.code[ok], weights=values[ok], minlength=self.n).astype("float64", copy=False)
        if min_count:
            out[np.bincount(self.code[ok], minlength=self.n) < min_count] = np.nan
        return out

    def last(self, values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Value of each customer's last (``first`` below: first) row in row order; NaN if none."""
        return self._at(values, mask, last=True)

    def first(self, values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        return self._at(values, mask, last=False)

    def _at(self, values: np.ndarray, mask: np.ndarray | None, last: bool) -> np.ndarray:
        c = self.code if mask is None else self.code[mask]
        v = values if mask is None else values[mask]
        out = np.full(self.n, np.nan)
        if len(c):
            edge = np.ones(len(c), dtype=bool)
            if last:
                edge[:-1] = c[:-1] != c[1:]
            else:
                edge[1:] = c[1:] != c[:-1]
            out[c[edge]] = v[edge]
        return out


def _per_day_edges(code: np.ndarray, day: np.ndarray, last: bool) -> np.ndarray:
    """True at the first (or last) row of each (customer, day) run of rows sorted by both."""
    edge = np.ones(len(code), dtype=bool)
    change = (code[1:] != code[:-1]) | (day[1:] != day[:-1])
    if last:
        edge[:-1] = change
    else:
        edge[1:] = change
    return edge


def _window_bucket(when: np.ndarray, t: int, windows: list[int]) -> np.ndarray:
    """Per row, the smallest of the ascending ``windows`` (days before ``t``) that holds it, as an
    index; ``len(windows)`` when none does. A row is in window i exactly when its bucket <= i."""
    thresholds = t - np.asarray(windows[::-1], dtype=np.int64) * US_PER_DAY  # ascending
    return len(windows) - np.searchsorted(thresholds, when, side="right")


def _window_totals(
    by: _By,
    bucket: np.ndarray,
    k: int,
    values: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """(customers x k) sums (counts without ``values``) of the rows in each window, from buckets.

    ``rows`` selects the rows of ``by`` that ``bucket`` and ``values`` describe.
    """
    code = by.code if rows is None else by.code[rows]
    per_bucket = np.bincount(code * (k + 1) + bucket, weights=values, minlength=by.n * (k + 1))
    return np.cumsum(per_bucket.reshape(by.n, k + 1).astype("float64", copy=False), axis=1)[:, :k]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / den


def _btyd(p: dict[str, np.ndarray], n: int, t: int, unit_days: float) -> dict[str, np.ndarray]:
    """frequency, recency, T, monetary_value exactly as lifetimes' summary_data_from_transaction_data.

    Transactions are purchase rows with a non-negative amount (a return is not a purchase), grouped
    by day; the observation period ends on the last day before the cutoff.
    """
    tx = p["amount"] >= 0
    code, day, amount = p["code"][tx], p["t"][tx] // US_PER_DAY, p["amount"][tx]
    by = _By(code, n)
    days = by.count(_per_day_edges(code, day, last=False))
    first = by.first(day.astype("float64"))
    last = by.last(day.astype("float64"))
    total = by.sum(amount)
    has = days > 0
    first_amount = by.sum(amount, day == first[code])
    frequency = np.where(has, days - 1, np.nan)
    obs_end = (t - 1) // US_PER_DAY
    monetary = np.where(frequency > 0, _ratio(total - first_amount, frequency), 0.0)
    return {
        "frequency": frequency,
        "recency": (last - first) / unit_days,
        "T": (obs_end - first) / unit_days,
        "monetary_value": np.where(has, monetary, np.nan),
    }


def _purchase_features(p: dict[str, np.ndarray], n: int, t: int, spec: SnapshotSpec) -> dict[str, np.ndarray]:
    cfg = spec.config
    out: dict[str, np.ndarray] = {}
    by = _By(p["code"], n)
    amount, when = p["amount"], p["t"]
    pos = amount > 0
    pcode, pday, pwhen = p["code"][pos], when[pos] // US_PER_DAY, when[pos]
    pby = _By(pcode, n)
    # A day has a purchase in a window ending at the cutoff iff its last purchase does (sorted rows).
    day_last = _per_day_edges(pcode, pday, last=True)
    ws = sorted(cfg.windows)
    bucket = _window_bucket(when, t, ws)
    days_in = _window_totals(pby, bucket[pos][day_last], len(ws), rows=day_last)
    revenue_in = _window_totals(by, bucket, len(ws), amount)
    margin = p["margin"]
    has_margin = ~np.isnan(margin)
    margin_in = _window_totals(by, bucket[has_margin], len(ws), margin[has_margin], has_margin)
    margin_n = _window_totals(by, bucket[has_margin], len(ws), None, has_margin)
    for i, w in enumerate(ws):
        out[f"purchase_days_{w}d"] = days_in[:, i]
        out[f"revenue_{w}d"] = revenue_in[:, i]
        out[f"margin_{w}d"] = np.where(margin_n[:, i] > 0, margin_in[:, i], np.nan)
    out = {  # in the configured order
        f"{f}_{w}d": out[f"{f}_{w}d"] for w in cfg.windows for f in ("purchase_days", "revenue", "margin")
    }
    if 90 in cfg.windows and 365 in cfg.windows:
        base = out["revenue_365d"] * 90 / 365
        out["revenue_trend_90_365"] = (out["revenue_90d"] - base) / (np.abs(base) + 1.0)
    out["revenue_total"] = by.sum(amount)
    out["days_since_last_purchase"] = (t - pby.last(pwhen.astype("float64"))) / US_PER_DAY
    out["days_since_first_purchase"] = (t - pby.first(pwhen.astype("float64"))) / US_PER_DAY
    # Gaps between consecutive purchase days of a customer.
    day_first = _per_day_edges(pcode, pday, last=False)
    dcode, dday = pcode[day_first], pday[day_first].astype("float64")
    same = np.zeros(len(dcode), dtype=bool)
    same[1:] = dcode[1:] == dcode[:-1]
    gap = np.full(len(dcode), np.nan)
    gap[1:] = dday[1:] - dday[:-1]
    gby = _By(dcode[same], n)
    gaps = gap[same]
    k = gby.count()
    mean = _ratio(gby.sum(gaps), k)
    out["interpurchase_mean_days"] = mean
    dev = gaps - mean[dcode[same]]
    out["interpurchase_std_days"] = np.where(k > 1, np.sqrt(_ratio(gby.sum(dev * dev), k - 1)), np.nan)
    ret = amount < 0
    out["returns_count"] = by.count(ret)
    out["returns_amount"] = -by.sum(amount, ret)
    n_pos = pby.count()
    bought = n_pos > 0
    out["return_rate"] = np.where(bought, _ratio(out["returns_count"], n_pos), np.nan)
    disc = by.sum(p["discount"], pos, min_count=1)
    disc0 = np.nan_to_num(disc, nan=0.0)
    out["discount_total"] = disc0
    rev_pos = pby.sum(amount[pos])
    out["discount_share"] = np.where(bought, _ratio(disc0, rev_pos + disc0), np.nan)
    ch = p["channel"][pos]
    kinds = int(ch.max(initial=0)) + 1
    pairs = _By(pcode * kinds + np.maximum(ch, 0), n * kinds).count(ch >= 0).reshape(n, kinds)
    used = (pairs > 0).sum(axis=1).astype("float64")
    out["sales_channels_used"] = np.where(bought, used, np.nan)
    out["share_web"] = np.where(bought, _ratio(pby.count(p["web"][pos]), n_pos), np.nan)
    cat = p["category"][pos]
    ncat = len(spec.categories)
    by_cat = _By(pcode * ncat + np.maximum(cat, 0), n * ncat)
    cat_sum = by_cat.sum(amount[pos], cat >= 0).reshape(n, ncat)
    for i, c in enumerate(spec.categories):
        out[f"share_{c}"] = np.where(bought, _ratio(cat_sum[:, i], rev_pos), np.nan)
    return out


def _contact_features(k: dict[str, np.ndarray], n: int, t: int, spec: SnapshotSpec) -> dict[str, np.ndarray]:
    cfg = spec.config
    out: dict[str, np.ndarray] = {}
    when, chan = k["t"], k["channel"]
    treated = k["outbound"] & ~k["control"]
    matured = treated & (when <= t - cfg.response_window * US_PER_DAY)  # outcome known by the cutoff
    by = _By(k["code"], n)
    nch = len(spec.channels)
    per_channel = _By(k["code"] * nch + np.maximum(chan, 0), n * nch)
    known_ch = chan >= 0

    def table(mask: np.ndarray) -> np.ndarray:
        return per_channel.count(mask & known_ch).reshape(n, nch)

    windows = {w: table(treated & (when >= t - w * US_PER_DAY)) for w in cfg.contact_windows}
    sent = table(matured)
    answered = table(matured & k["responded"])
    prior, weight = cfg.response_prior, cfg.response_prior_weight
    for i, ch in enumerate(spec.channels):
        for w in cfg.contact_windows:
            out[f"contacts_{ch}_{w}d"] = windows[w][:, i]
        m, r = sent[:, i], answered[:, i]
        out[f"response_rate_{ch}"] = np.where(m > 0, (r + prior * weight) / (m + weight), prior)
    whenf = when.astype("float64")
    out["days_since_last_contact"] = (t - by.last(whenf, treated)) / US_PER_DAY
    last_resp = by.last(whenf, matured & k["responded"])
    out["days_since_last_response"] = (t - last_resp) / US_PER_DAY
    # Ignored offers in a row: matured treated contacts after the last response.
    before = last_resp[k["code"]]
    out["ignored_in_a_row"] = by.count(matured & (np.isnan(before) | (whenf > before)))
    out["unsubscribes"] = by.count(matured & k["unsubscribed"])
    inbound = ~k["outbound"] & (when >= t - 365 * US_PER_DAY)
    out["inbound_contacts_365d"] = by.count(inbound)
    out["information_requests_365d"] = by.count(inbound & k["information"])
    out["control_memberships"] = by.count(k["outbound"] & k["control"])
    return out


def _consent_features(c: dict[str, np.ndarray], n: int, spec: SnapshotSpec) -> dict[str, np.ndarray]:
    """The consent rule (``consent_matrix``) at the cutoff on the prepared records, already
    sorted by customer, channel and time."""
    state, objection = consent_matrix(
        c["code"],
        c["channel"],
        c["t"],
        c["granted"],
        c["double_opt_in"],
        n=n,
        channels=tuple(spec.channels),
        presorted=True,
    )
    out = {f"consent_{ch}": state[:, i] for i, ch in enumerate(spec.channels)}
    out["objection"] = objection
    return out


def _complaint_offer_features(
    cpl: pd.DataFrame, off: pd.DataFrame, ids: pd.Index, cutoff: pd.Timestamp
) -> pd.DataFrame:
    out = pd.DataFrame(index=ids)
    is_open = cpl["closed_at"].isna() | (cpl["closed_at"] >= cutoff)
    out["open_complaints"] = cpl[is_open].groupby("customer_id").size()
    out["complaints_total"] = cpl.groupby("customer_id").size()
    recent = cpl[(cutoff - cpl["opened_at"]) / DAY <= 365]
    out["complaints_365d"] = recent.groupby("customer_id").size()
    out["max_severity_365d"] = recent.groupby("customer_id")["severity"].max().astype("float64")
    out["days_since_last_complaint"] = (cutoff - cpl.groupby("customer_id")["opened_at"].max()) / DAY
    closed = off["closed_at"].notna() & (off["closed_at"] < cutoff)
    pending = off[~closed]
    out["pending_offer_amount"] = pending.groupby("customer_id")["amount"].sum()
    out["open_offers"] = pending.groupby("customer_id").size()
    done = off[closed]
    out["offers_won"] = done[done["status"] == "won"].groupby("customer_id").size()
    lost = done[done["status"] == "lost"]
    out["offers_lost"] = lost.groupby("customer_id").size()
    last_lost = lost.sort_values("closed_at").groupby("customer_id")["lost_reason"].last()
    out["last_lost_reason"] = last_lost.astype("str")
    for c in (
        "open_complaints",
        "complaints_total",
        "complaints_365d",
        "pending_offer_amount",
        "open_offers",
        "offers_won",
        "offers_lost",
    ):
        out[c] = out[c].fillna(0.0).astype("float64")
    return out


def _profile(cust: pd.DataFrame, cutoff: pd.Timestamp, spec: SnapshotSpec) -> pd.DataFrame:
    out = pd.DataFrame(index=cust.index)
    out["customer_type"] = cust["customer_type"].astype("str")
    out["tenure_days"] = (cutoff - cust["created_at"]) / DAY
    out["age"] = (cutoff.year - cust["birth_year"]).astype("float64")
    out["age_group"] = age_group(cust["birth_year"], cutoff).to_numpy()
    out["age_group"] = out["age_group"].astype("str")
    out["region"] = cust["region"].astype("str")
    for a in spec.attributes:  # prefixed: a CRM attribute may share a name with a built-in feature
        out[f"attr_{a}"] = cust[a] if a in cust.columns else np.nan
    return out


def _before(cols: dict[str, np.ndarray], t: int) -> dict[str, np.ndarray]:
    keep = cols["t"] < t
    return {k: v[keep] for k, v in cols.items()}


def snapshot_prepared(prep: Prepared, cutoff: pd.Timestamp | str, spec: SnapshotSpec) -> pd.DataFrame:
    """The snapshot at ``cutoff`` from prepared rows (see ``prepare``); one row per customer
    registered before the cutoff, indexed by ``customer_id`` in id order."""
    t = _utc(cutoff)
    t_us = int(t.value // 1000)
    n = len(prep.ids)
    ids = pd.RangeIndex(n, name="customer_id")
    cust = prep.customers.set_axis(ids)
    unit = 7.0 if spec.config.unit == "W" else 1.0
    purchases = _before(prep.purchases, t_us)
    small = {}
    for name, col in (("complaints", "opened_at"), ("offers", "created_at")):
        df = prep.small[name]
        small[name] = df[(df[col] < t).to_numpy(dtype=bool, na_value=False)]
    with ThreadPoolExecutor(max_workers=2) as pool:  # the purchase families next to the rest
        bought = pool.submit(
            lambda: {**_btyd(purchases, n, t_us, unit), **_purchase_features(purchases, n, t_us, spec)}
        )
        contacted = _contact_features(_before(prep.contacts, t_us), n, t_us, spec)
        parts = [_profile(cust, t, spec), None]
        parts.append(_complaint_offer_features(small["complaints"], small["offers"], ids, t))
        parts[1] = pd.DataFrame({**bought.result(), **contacted}, index=ids)
    parts.append(pd.DataFrame(_consent_features(_before(prep.consents, t_us), n, spec), index=ids))
    out = pd.concat(parts, axis=1)
    known = (cust["created_at"] < t).to_numpy()
    out = out[known]
    out.index = pd.Index(prep.ids[known], name="customer_id", dtype="str")
    return out


def snapshot_shard(frames: Frames, cutoff: pd.Timestamp | str, spec: SnapshotSpec) -> pd.DataFrame:
    """One row per customer registered before ``cutoff``, from all rows of these customers.

    ``frames`` holds typed tables as ``Store.read_table`` returns them (any may be missing except
    ``customers``); only rows strictly before ``cutoff`` are used. This is the shard function: the
    same on a local process and in Spark's ``applyInPandas``.
    """
    return snapshot_prepared(prepare(frames, spec), cutoff, spec)


def _empty(name: str) -> pd.DataFrame:
    """A table with no rows, typed as the store gives it."""
    return pd.DataFrame({c.name: missing_column(c, 0) for c in TABLES[name].columns})


# -------------------------------------------------------------------------------------------- shards


def shard_of(customer_ids: pd.Series | pd.Index | np.ndarray, shards: int) -> np.ndarray:
    """A stable shard number per customer (the same id always lands in the same shard)."""
    h = pd.util.hash_array(np.asarray(customer_ids, dtype=object))
    return (h % np.uint64(shards)).astype(np.int64)


def split_frames(frames: Frames, shards: int) -> list[Frames]:
    """All rows of each customer shard, table by table."""
    out: list[Frames] = [{} for _ in range(shards)]
    for name, df in frames.items():
        s = shard_of(df["customer_id"], shards)
        for i in range(shards):
            out[i][name] = df[s == i]
    return out


def _run_shard(args: tuple[Prepared, pd.Timestamp, SnapshotSpec]) -> pd.DataFrame:
    return snapshot_prepared(*args)


def snapshot(
    frames: Frames | Prepared,
    cutoff: pd.Timestamp | str,
    config: SnapshotConfig | None = None,
    *,
    shards: int = 1,
    jobs: int = 1,
    spec: SnapshotSpec | None = None,
) -> pd.DataFrame:
    """The snapshot of every customer at ``cutoff``; identical for any ``shards`` and ``jobs``.

    ``frames`` may be already ``prepare``d (with its ``spec``), e.g. for many cutoffs of one
    training set. Shards are the customers of ``shard_of``, as ``split_frames`` gives them.
    """
    if shards < 1 or jobs < 1:
        raise ValueError(f"shards and jobs must be at least 1 (got shards={shards}, jobs={jobs})")
    if isinstance(frames, Prepared):
        if spec is None:
            raise ValueError("a prepared snapshot input needs the spec it was prepared with")
        prep = frames
    else:
        spec = spec or spec_for(frames, config)
        prep = prepare(frames, spec)
    t = _utc(cutoff)
    if shards == 1:
        return snapshot_prepared(prep, t, spec)
    shard = shard_of(prep.ids, shards)
    parts = [(prep.subset(shard == i), t, spec) for i in range(shards)]
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(_run_shard, parts))
    else:
        results = [_run_shard(p) for p in parts]
    return pd.concat(results).sort_index()


# Columns read for snapshots and labels (customers: all, with the custom attributes).
FEATURE_COLUMNS: dict[str, tuple[str, ...]] = {
    "purchases": ("customer_id", "purchased_at", "category", "amount", "margin", "discount", "sales_channel"),
    "contacts": (
        "contact_id",
        "customer_id",
        "contacted_at",
        "channel",
        "direction",
        "action_id",
        "is_control",
        "outcome",
        "topic",
    ),
    "consents": ("customer_id", "channel", "granted", "recorded_at", "double_opt_in"),
    "complaints": ("customer_id", "opened_at", "closed_at", "severity"),
    "offers": ("customer_id", "created_at", "amount", "status", "closed_at", "lost_reason"),
}


def load_frames(
    store,
    tables: tuple[str, ...] = ("customers", "purchases", "contacts", "consents", "complaints", "offers"),
    columns: dict[str, tuple[str, ...]] | None = FEATURE_COLUMNS,
) -> Frames:
    """The tables snapshots and labels need, typed, from the store (``columns=None``: every column).

    Rows come in storage order: nothing computed from them depends on row order.
    """
    return store.read_tables(tables, columns, ordered=False)


def spec_from_store(store, config: SnapshotConfig | None = None) -> SnapshotSpec:
    """``spec_for`` of everything in the store, from three small queries instead of the tables:
    what scoring a few customers needs to give them the columns the models were trained on."""
    import sqlalchemy as sa

    from kundenwert.features.store import ATTRIBUTE_DEFS, TABLE_DEFS

    purchases, contacts = TABLE_DEFS["purchases"], TABLE_DEFS["contacts"]
    with store.engine.connect() as conn:
        cats = conn.execute(
            sa.select(purchases.c.category).where(purchases.c.category.is_not(None)).distinct()
        ).scalars()
        cats = tuple(sorted(cats))
        outbound = conn.execute(
            sa.select(contacts.c.channel)
            .where(contacts.c.direction == "outbound", contacts.c.channel.is_not(None))
            .distinct()
        ).scalars()
        chans = tuple(sorted(set(MARKETING_CHANNELS) | set(outbound)))
        attrs = tuple(sorted(conn.execute(sa.select(ATTRIBUTE_DEFS.c.name)).scalars()))
    return SnapshotSpec(config=config or SnapshotConfig(), categories=cats, channels=chans, attributes=attrs)
