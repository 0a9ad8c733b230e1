"""Rows prepared once for many snapshots: customer codes, microsecond times and sorted record
arrays per table (the string work done once, not per cutoff)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from kundenwert.features.contract import ALL_CHANNELS, TABLES
from kundenwert.features.parsing import missing_column
from kundenwert.features.snapshot_spec import RESPONSES, Frames, SnapshotSpec

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


def _empty(name: str) -> pd.DataFrame:
    """A table with no rows, typed as the store gives it."""
    return pd.DataFrame({c.name: missing_column(c, 0) for c in TABLES[name].columns})
