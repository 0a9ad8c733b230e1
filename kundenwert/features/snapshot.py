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

import numpy as np
import pandas as pd

from kundenwert.features.families import (
    _before,
    _btyd,
    _complaint_offer_features,
    _consent_features,
    _contact_features,
    _profile,
    _purchase_features,
)
from kundenwert.features.ports import StoreReader
from kundenwert.features.prepared import TABLES_READ, Prepared, lookup, prepare
from kundenwert.features.snapshot_spec import Frames, SnapshotConfig, SnapshotSpec, _utc, spec_for

__all__ = [
    "FEATURE_COLUMNS",
    "TABLES_READ",
    "Prepared",
    "SnapshotConfig",
    "SnapshotSpec",
    "load_frames",
    "without_objecting",
    "lookup",
    "prepare",
    "snapshot",
    "snapshot_prepared",
    "snapshot_shard",
    "spec_for",
]


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
        "campaign_id",  # where a contact stands in its campaign (response labels)
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
    store: StoreReader,
    tables: tuple[str, ...] = ("customers", "purchases", "contacts", "consents", "complaints", "offers"),
    columns: dict[str, tuple[str, ...]] | None = FEATURE_COLUMNS,
) -> Frames:
    """The tables snapshots and labels need, typed, from the store (``columns=None``: every column).

    Rows come in storage order: nothing computed from them depends on row order.
    """
    return store.read_tables(tables, columns, ordered=False)


def without_objecting(frames: Frames, now: pd.Timestamp | None = None) -> tuple[Frames, int]:
    """``frames`` without the customers who object to profiling and direct marketing at ``now``
    (default: this moment; GDPR Art. 21(3): their data is no longer processed for direct marketing,
    training a marketing model included), and how many were left out. The consent rule decides
    (``consent_state``); an objection made after a cutoff counts too: it is the present that
    forbids the use."""
    from kundenwert.features.consent import consent_state

    consents = frames.get("consents")
    if consents is None or consents.empty:
        return frames, 0
    state = consent_state(consents, pd.Timestamp.now(tz="UTC") if now is None else now)
    objecting = state.index[state["objection"].to_numpy(dtype=bool)]
    if len(objecting) == 0:
        return frames, 0
    out = {
        name: frame[~frame["customer_id"].isin(objecting).to_numpy()]
        if "customer_id" in frame.columns
        else frame
        for name, frame in frames.items()
    }
    return out, int(frames["customers"]["customer_id"].isin(objecting).sum())
