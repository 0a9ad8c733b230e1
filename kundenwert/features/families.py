"""The feature families of a snapshot, each computed on whole columns of prepared records:
RFM and BG/NBD statistics, purchase windows and categories, contacts and responses, consent,
complaints and offers, and the customer profile."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kundenwert.features.consent import consent_matrix
from kundenwert.features.contract import age_group
from kundenwert.features.prepared import US_PER_DAY
from kundenwert.features.snapshot_spec import DAY, SnapshotSpec


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
