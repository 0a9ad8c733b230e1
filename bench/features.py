"""Benchmark: the point-in-time snapshot of a 200,000-customer sample world (seed 2).

Reference, measured in the same process on the same in-memory rows (``shared/benchmarks.md``): the
RFM (lifetimes' frequency, recency, T, monetary value) and the purchase-window aggregates (purchase
days, revenue, margin over 30/90/180/365 days) as one DuckDB SQL query. Our snapshot computes those
plus about 50 further features (contacts, complaints, offers, consent, profile), so the ratio is
conservative. Reported: the snapshot from the store (read + compute) and compute only.

    python bench/features.py [--customers 200000] [--repeat 3] [--db kundenwert.db]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import peak_rss_gb, table, timed, world_store  # noqa: E402

SQL = """
WITH tx AS (
  SELECT customer_id, purchased_at, amount, margin, date_trunc('day', purchased_at) AS day
  FROM purchases WHERE purchased_at < $cutoff
), daily AS (
  SELECT customer_id, day, sum(amount) AS amount FROM tx WHERE amount >= 0 GROUP BY customer_id, day
), rfm AS (
  SELECT customer_id, count(*) - 1 AS frequency,
         date_diff('day', min(day), max(day)) AS recency,
         date_diff('day', min(day), date_trunc('day', $cutoff - INTERVAL 1 MICROSECOND)) AS T,
         CASE WHEN count(*) > 1 THEN (sum(amount) - arg_min(amount, day)) / (count(*) - 1) ELSE 0 END AS monetary_value
  FROM daily GROUP BY customer_id
), win AS (
  SELECT customer_id,
    {windows}
  FROM tx GROUP BY customer_id
)
SELECT * FROM rfm FULL JOIN win USING (customer_id)
"""


def _window_sql(windows: tuple[int, ...]) -> str:
    parts = []
    for w in windows:
        since = f"purchased_at >= $cutoff - INTERVAL {w} DAY"
        parts += [
            f"count(DISTINCT CASE WHEN {since} AND amount > 0 THEN day END) AS purchase_days_{w}d",
            f"sum(CASE WHEN {since} THEN amount ELSE 0 END) AS revenue_{w}d",
            f"sum(CASE WHEN {since} THEN margin END) AS margin_{w}d",
        ]
    return ",\n    ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cutoff", default="2025-06-01")
    ap.add_argument("--db", help="an imported SQLite store to use instead of a new sample world")
    args = ap.parse_args()

    import duckdb

    from kundenwert.db.store import Store
    from kundenwert.features.snapshot import load_frames, snapshot

    db = world_store(args.customers, args.db, "kw-bench-features-")
    store = Store(f"sqlite:///{db}")
    cutoff = pd.Timestamp(args.cutoff, tz="UTC")

    full_s, snap = timed(lambda: snapshot(load_frames(store), cutoff), args.repeat)
    frames = load_frames(store)
    rows = sum(len(f) for f in frames.values())
    compute_s, _ = timed(lambda: snapshot(frames, cutoff), args.repeat)

    con = duckdb.connect()
    purchases = frames["purchases"]
    con.register("purchases", purchases)
    query = SQL.replace("{windows}", _window_sql((30, 90, 180, 365)))
    duck_s, duck = timed(lambda: con.execute(query, {"cutoff": cutoff.to_pydatetime()}).df(), args.repeat)
    # The reference is only a reference if it computes the same numbers: compare every aggregate.
    same = [c for c in duck.columns if c != "customer_id"]
    ref = duck.set_index("customer_id")[same].astype("float64")
    ours = snap.loc[ref.index, same]
    agree = all(
        np.allclose(ours[c].to_numpy(), ref[c].to_numpy(), rtol=1e-9, atol=1e-6, equal_nan=True) for c in same
    )

    n = len(snap)
    print(
        table(
            ["what", "median time", "customers/s", "rows/s", "ratio vs DuckDB RFM+windows"],
            [
                [
                    f"kundenwert snapshot from the store (read + {snap.shape[1]} features)",
                    f"{full_s:.1f} s",
                    f"{n / full_s:,.0f}",
                    f"{rows / full_s:,.0f}",
                    f"{duck_s / full_s:.2f}x",
                ],
                [
                    f"kundenwert snapshot, frames in memory ({snap.shape[1]} features)",
                    f"{compute_s:.1f} s",
                    f"{n / compute_s:,.0f}",
                    f"{rows / compute_s:,.0f}",
                    f"{duck_s / compute_s:.2f}x",
                ],
                [
                    "DuckDB SQL: RFM + purchase windows only (reference)",
                    f"{duck_s:.1f} s",
                    f"{n / duck_s:,.0f}",
                    f"{len(purchases) / duck_s:,.0f}",
                    "1.00x",
                ],
            ],
        )
    )
    print(
        f"\n{args.customers:,} customers in the world, {n:,} known at {cutoff:%Y-%m-%d}; {rows:,} rows read; "
        f"peak memory {peak_rss_gb():.2f} GB; DuckDB and kundenwert agree on all {len(same)} aggregates "
        f"of {len(ref):,} buyers: {agree}"
    )


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
