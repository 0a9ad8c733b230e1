"""The CDNOW data set (shipped with ``lifetimes``) in the CRM contract format.

CDNOW: 23,570 customers who made their first purchase at CDNOW in the first quarter of 1997,
with every purchase until June 1998 (69,659 rows); the 1/10 sample (2,357 customers) is the one the
BTYD papers use (Fader, Hardie and Lee 2005). Each source row (customer, day, number of CDs, dollar
value) becomes one purchase of category ``music``; a customer's ``created_at`` is their first purchase
day. ``lifetimes.datasets`` imports ``pkg_resources``, which current setuptools no longer ships, so
the files are read through ``importlib.resources``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd


def _source(sample: bool) -> pd.DataFrame:
    name = "CDNOW_sample.txt" if sample else "CDNOW_master.txt"
    ref = resources.files("lifetimes") / "datasets" / name
    with resources.as_file(ref) as path:
        if sample:  # columns: master id, sample id, date, number of CDs, dollar value
            df = pd.read_csv(
                path,
                sep=r"\s+",
                header=None,
                names=["master_id", "customer_id", "date", "cds", "dollars"],
                dtype=str,
            )
        else:  # header row: customer_id date number_of_cds dollar_value
            df = pd.read_csv(
                path, sep=r"\s+", header=0, names=["customer_id", "date", "cds", "dollars"], dtype=str
            )
    return df


def cdnow_tables(sample: bool = False) -> dict[str, pd.DataFrame]:
    """``customers`` and ``purchases`` of CDNOW as contract tables (identifiers kept as text)."""
    src = _source(sample)
    when = pd.to_datetime(src["date"], format="%Y%m%d")
    purchases = pd.DataFrame(
        {
            "purchase_id": [f"{c}-{i + 1}" for i, c in enumerate(src["customer_id"])],
            "customer_id": src["customer_id"].to_numpy(),
            "purchased_at": when.dt.strftime("%Y-%m-%d").to_numpy(),
            "category": "music",
            "quantity": pd.to_numeric(src["cds"]).to_numpy(),
            "amount": pd.to_numeric(src["dollars"]).to_numpy(),
        }
    )
    # Rows with 0 CDs exist in the source; the contract needs quantity > 0, so they carry none.
    purchases["quantity"] = purchases["quantity"].where(purchases["quantity"] > 0, np.nan)
    first = when.groupby(src["customer_id"]).min()
    customers = pd.DataFrame(
        {
            "customer_id": first.index.to_numpy(),
            "created_at": first.dt.strftime("%Y-%m-%d").to_numpy(),
            "customer_type": "consumer",
        }
    )
    return {"customers": customers, "purchases": purchases}


def write_cdnow(out: Path | str, sample: bool = False) -> dict[str, int]:
    """Write CDNOW as ``customers.csv`` and ``purchases.csv`` into ``out``; returns rows per table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, df in cdnow_tables(sample).items():
        df.to_csv(out / f"{name}.csv", index=False)
        rows[name] = len(df)
    return rows
