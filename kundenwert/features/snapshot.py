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

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from kundenwert.features.consent import consent_state
from kundenwert.features.contract import MARKETING_CHANNELS, TABLES, age_group
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


# ------------------------------------------------------------------------------------------ families


def _btyd(p: pd.DataFrame, ids: pd.Index, cutoff: pd.Timestamp, unit_days: float) -> pd.DataFrame:
    """frequency, recency, T, monetary_value exactly as lifetimes' summary_data_from_transaction_data.

    Transactions are purchase rows with a non-negative amount (a return is not a purchase), grouped
    by day; the observation period ends on the last day before the cutoff.
    """
    tx = p[p["amount"] >= 0]
    day = tx["purchased_at"].dt.floor("D")
    per_day = tx.assign(day=day).groupby(["customer_id", "day"], sort=True, observed=True)["amount"].sum()
    per_day = per_day.reset_index()
    g = per_day.groupby("customer_id", sort=False)
    first = g["day"].min()
    last = g["day"].max()
    n = g.size()
    first_amount = g["amount"].first()  # per_day is sorted by day within each customer
    total = g["amount"].sum()
    obs_end = (cutoff - pd.Timedelta(microseconds=1)).floor("D")
    frequency = (n - 1).astype("float64")
    out = pd.DataFrame(index=ids)
    out["frequency"] = frequency
    out["recency"] = (last - first).dt.days / unit_days
    out["T"] = (obs_end - first).dt.days / unit_days
    mv = (total - first_amount) / frequency.where(frequency > 0)
    out["monetary_value"] = mv.fillna(0.0)
    out.loc[out["frequency"].isna(), "monetary_value"] = np.nan
    return out


def _purchase_features(
    p: pd.DataFrame, ids: pd.Index, cutoff: pd.Timestamp, spec: SnapshotSpec
) -> pd.DataFrame:
    cfg = spec.config
    out = pd.DataFrame(index=ids)
    pos = p[p["amount"] > 0]
    age_days = (cutoff - p["purchased_at"]) / DAY
    pos_age = age_days[pos.index]
    pos_days = pos.assign(day=pos["purchased_at"].dt.floor("D"))
    days = pos_days[["customer_id", "day"]].drop_duplicates()
    for w in cfg.windows:
        in_w = age_days <= w  # rows in [cutoff - w days, cutoff)
        out[f"purchase_days_{w}d"] = pos_days[pos_age <= w].groupby("customer_id")["day"].nunique()
        out[f"revenue_{w}d"] = p[in_w].groupby("customer_id")["amount"].sum()
        out[f"margin_{w}d"] = p[in_w].groupby("customer_id")["margin"].sum(min_count=1)
    for c in [c for c in out.columns if c.startswith(("purchase_days_", "revenue_"))]:
        out[c] = out[c].fillna(0.0)
    if 90 in cfg.windows and 365 in cfg.windows:
        base = out["revenue_365d"] * 90 / 365
        out["revenue_trend_90_365"] = (out["revenue_90d"] - base) / (base.abs() + 1.0)
    out["revenue_total"] = p.groupby("customer_id")["amount"].sum()
    out["revenue_total"] = out["revenue_total"].fillna(0.0)
    last = pos.groupby("customer_id")["purchased_at"].max()
    out["days_since_last_purchase"] = (cutoff - last) / DAY
    out["days_since_first_purchase"] = (cutoff - pos.groupby("customer_id")["purchased_at"].min()) / DAY
    gaps = days.sort_values(["customer_id", "day"]).assign(
        gap=lambda d: d.groupby("customer_id")["day"].diff() / DAY
    )
    out["interpurchase_mean_days"] = gaps.groupby("customer_id")["gap"].mean()
    out["interpurchase_std_days"] = gaps.groupby("customer_id")["gap"].std()
    ret = p[p["amount"] < 0]
    out["returns_count"] = ret.groupby("customer_id").size()
    out["returns_amount"] = -ret.groupby("customer_id")["amount"].sum()
    n_pos = pos.groupby("customer_id").size()
    out["returns_count"] = out["returns_count"].fillna(0.0)
    out["returns_amount"] = out["returns_amount"].fillna(0.0)
    out["return_rate"] = out["returns_count"] / n_pos
    disc = pos.groupby("customer_id")["discount"].sum(min_count=1)
    out["discount_total"] = disc.fillna(0.0).reindex(ids).fillna(0.0)
    gross = pos.groupby("customer_id")["amount"].sum() + disc.fillna(0.0)
    out["discount_share"] = disc.fillna(0.0) / gross
    out["sales_channels_used"] = pos.groupby("customer_id")["sales_channel"].nunique()
    web = pos.assign(web=(pos["sales_channel"] == "web").astype(float)).groupby("customer_id")["web"].mean()
    out["share_web"] = web
    rev_pos = pos.groupby("customer_id")["amount"].sum()
    by_cat = pos.groupby(["customer_id", "category"], observed=True)["amount"].sum().unstack()
    for c in spec.categories:
        share = by_cat[c] / rev_pos if c in by_cat.columns else pd.Series(0.0, index=rev_pos.index)
        out[f"share_{c}"] = share.fillna(0.0)
    return out


def _contact_features(
    k: pd.DataFrame, ids: pd.Index, cutoff: pd.Timestamp, spec: SnapshotSpec
) -> pd.DataFrame:
    cfg = spec.config
    out = pd.DataFrame(index=ids)
    age = (cutoff - k["contacted_at"]) / DAY
    outbound = k["direction"] == "outbound"
    control = k["is_control"].fillna(False).astype(bool)
    treated = k[outbound & ~control]
    t_age = age[treated.index]
    matured = treated[t_age >= cfg.response_window]  # outcome known by the cutoff
    responded = matured["outcome"].isin(RESPONSES)
    for ch in spec.channels:
        sel = treated["channel"] == ch
        for w in cfg.contact_windows:
            out[f"contacts_{ch}_{w}d"] = treated[sel & (t_age <= w)].groupby("customer_id").size()
        m = matured["channel"] == ch
        n = matured[m].groupby("customer_id").size()
        r = responded[m].groupby(matured.loc[m, "customer_id"]).sum()
        rate = (r.reindex(n.index).fillna(0) + cfg.response_prior * cfg.response_prior_weight) / (
            n + cfg.response_prior_weight
        )
        out[f"response_rate_{ch}"] = rate.reindex(ids).fillna(cfg.response_prior)
    count_cols = [c for c in out.columns if c.startswith("contacts_")]
    out[count_cols] = out[count_cols].fillna(0.0)
    out["days_since_last_contact"] = (cutoff - treated.groupby("customer_id")["contacted_at"].max()) / DAY
    last_resp = matured[responded].groupby("customer_id")["contacted_at"].max()
    out["days_since_last_response"] = (cutoff - last_resp) / DAY
    # Ignored offers in a row: matured treated contacts after the last response.
    last_of_row = pd.Series(last_resp.reindex(matured["customer_id"].to_numpy()).array, index=matured.index)
    after = last_of_row.isna() | (matured["contacted_at"] > last_of_row)
    out["ignored_in_a_row"] = matured[after].groupby("customer_id").size()
    out["ignored_in_a_row"] = out["ignored_in_a_row"].fillna(0.0)
    out["unsubscribes"] = matured[matured["outcome"] == "unsubscribed"].groupby("customer_id").size()
    out["unsubscribes"] = out["unsubscribes"].fillna(0.0)
    inbound = k[~outbound & (age <= 365)]
    out["inbound_contacts_365d"] = inbound.groupby("customer_id").size()
    info = inbound["topic"].fillna("").str.contains("information", case=False)
    out["information_requests_365d"] = inbound[info].groupby("customer_id").size()
    out["control_memberships"] = k[outbound & control].groupby("customer_id").size()
    for c in ("inbound_contacts_365d", "information_requests_365d", "control_memberships"):
        out[c] = out[c].fillna(0.0)
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


def snapshot_shard(frames: Frames, cutoff: pd.Timestamp | str, spec: SnapshotSpec) -> pd.DataFrame:
    """One row per customer registered before ``cutoff``, from all rows of these customers.

    ``frames`` holds typed tables as ``Store.read_table`` returns them (any may be missing except
    ``customers``); only rows strictly before ``cutoff`` are used.
    """
    t = _utc(cutoff)
    cust = frames["customers"]
    cust = cust[cust["created_at"] < t]
    # Customers become integer codes 0..n-1 for every groupby and reindex below (hashing strings
    # dominated the run time); the string ids are put back at the end.
    customer_ids = pd.Index(cust["customer_id"].to_numpy(dtype=object))
    cust = cust.set_axis(pd.RangeIndex(len(cust), name="customer_id"))
    ids = cust.index
    unit = 7.0 if spec.config.unit == "W" else 1.0
    before = {
        "purchases": ("purchased_at",),
        "contacts": ("contacted_at",),
        "complaints": ("opened_at",),
        "offers": ("created_at",),
        "consents": ("recorded_at",),
    }
    rows = {}
    for name, (col,) in before.items():
        df = frames.get(name)
        if df is None:
            df = _empty(name)
        code = customer_ids.get_indexer(df["customer_id"].to_numpy(dtype=object))
        keep = (code >= 0) & (df[col] < t).to_numpy()
        rows[name] = df[keep].assign(customer_id=code[keep])
    parts = [
        _profile(cust, t, spec),
        _btyd(rows["purchases"], ids, t, unit),
        _purchase_features(rows["purchases"], ids, t, spec),
        _contact_features(rows["contacts"], ids, t, spec),
        _complaint_offer_features(rows["complaints"], rows["offers"], ids, t),
    ]
    consent = (
        consent_state(rows["consents"], t, channels=tuple(spec.channels), inclusive=False)
        if len(rows["consents"])
        else None
    )
    cons = pd.DataFrame(index=ids)
    for ch in spec.channels:
        cons[f"consent_{ch}"] = (
            consent[ch].reindex(ids).fillna(False).astype(bool) if consent is not None else False
        )
    cons["objection"] = (
        consent["objection"].reindex(ids).fillna(False).astype(bool) if consent is not None else False
    )
    parts.append(cons)
    out = pd.concat(parts, axis=1)
    out.index = pd.Index(customer_ids, name="customer_id", dtype="str")
    return out.sort_index()


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


def _run_shard(args: tuple[Frames, pd.Timestamp, SnapshotSpec]) -> pd.DataFrame:
    return snapshot_shard(*args)


def snapshot(
    frames: Frames,
    cutoff: pd.Timestamp | str,
    config: SnapshotConfig | None = None,
    *,
    shards: int = 1,
    jobs: int = 1,
) -> pd.DataFrame:
    """The snapshot of every customer at ``cutoff``; identical for any ``shards`` and ``jobs``."""
    if shards < 1 or jobs < 1:
        raise ValueError(f"shards and jobs must be at least 1 (got shards={shards}, jobs={jobs})")
    spec = spec_for(frames, config)
    t = _utc(cutoff)
    parts = split_frames(frames, shards) if shards > 1 else [frames]
    if jobs > 1 and shards > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(_run_shard, [(p, t, spec) for p in parts]))
    else:
        results = [snapshot_shard(p, t, spec) for p in parts]
    return pd.concat(results).sort_index()


def load_frames(
    store,
    tables: tuple[str, ...] = ("customers", "purchases", "contacts", "consents", "complaints", "offers"),
) -> Frames:
    """The tables a snapshot needs, typed, from the store."""
    return store.read_tables(tables)
