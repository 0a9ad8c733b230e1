"""Benchmark: fit and predict time of every model on a 200,000-customer world, reasons for 10,000
customers, and BG/NBD + Gamma-Gamma on 1,000,000 customers fitted on distinct rows with weights
against every row (the reference, in the same process on the same data; ``shared/benchmarks.md``).

    python bench/models.py [--customers 200000] [--db kundenwert.db] [--btyd-customers 1000000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import peak_rss_gb, table, world_store  # noqa: E402

CUTOFF = pd.Timestamp("2024-12-01", tz="UTC")  # 365 days of CLV label before the world ends


def _clock(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def models_on_the_world(db: Path) -> list[list[object]]:
    from kundenwert.db.store import Store
    from kundenwert.features.labels import LabelConfig, labels_at, response_labels
    from kundenwert.features.snapshot import load_frames, snapshot
    from kundenwert.models.affinity import AffinityModel
    from kundenwert.models.btyd import BTYDModel
    from kundenwert.models.clv import CLVModel
    from kundenwert.models.explain import explain
    from kundenwert.models.response import ResponseModel, response_rows
    from kundenwert.models.tabular import ChurnModel, WinbackModel

    frames = load_frames(Store(f"sqlite:///{db}"))
    X = snapshot(frames, CUTOFF)
    y = labels_at(frames, CUTOFF, LabelConfig(clv_value="revenue"))
    active, lapsed = y["status"] == "active", y["status"] == "lapsed"
    R, r = response_rows(X, response_labels(frames["contacts"], CUTOFF))
    affinity = [c for c in y.columns if c.startswith("affinity_")]
    jobs = [
        ("BTYD: BG/NBD + Gamma-Gamma (distinct rows)", BTYDModel(), X, None),
        ("CLV: gradient boosting", CLVModel(), X, y["clv"]),
        ("churn (active customers)", ChurnModel(), X[active], y.loc[active, "churn"]),
        ("win-back (lapsed customers)", WinbackModel(), X[lapsed], y.loc[lapsed, "winback"]),
        (f"affinity ({len(affinity)} categories)", AffinityModel(), X, y[affinity]),
        ("channel response (contacts)", ResponseModel(), R, r),
    ]
    rows, fitted = [], {}
    for name, model, data, target in jobs:
        fit_s, _ = _clock(lambda m=model, d=data, t=target: m.fit(d) if t is None else m.fit(d, t))
        predict = getattr(model, "predict_frame", model.predict)
        pred_s, _ = _clock(lambda d=data, p=predict: p(d))
        rows.append(
            [name, f"{len(data):,}", f"{fit_s:.1f} s", f"{pred_s:.2f} s", f"{len(data) / pred_s:,.0f}"]
        )
        fitted[name] = model
    churn = fitted["churn (active customers)"]
    sample = X[active].iloc[:10_000]
    explain_s, _ = _clock(lambda: explain(churn, sample, top_k=3))
    rows.append(
        [
            "reasons: explain(churn, top_k=3), 10,000 customers",
            f"{len(sample):,}",
            "-",
            f"{explain_s:.2f} s",
            f"{len(sample) / explain_s:,.0f}",
        ]
    )
    return rows


def btyd_weights(n: int) -> list[list[object]]:
    """BG/NBD + Gamma-Gamma on the BTYD summary of an n-customer world: distinct rows with weights
    against one row per customer, in days and in weeks."""
    from kundenwert.datasets.sample import generate_world
    from kundenwert.features.snapshot import SnapshotConfig, snapshot
    from kundenwert.models.btyd import BTYDModel

    world = generate_world(n, seed=3)
    frames = {}
    for name, cols in (("customers", ("created_at",)), ("purchases", ("purchased_at",))):
        df = world.tables[name]
        frames[name] = df.assign(
            **{c: pd.to_datetime(df[c]).dt.tz_localize("UTC").astype("datetime64[us, UTC]") for c in cols}
        )
    del world
    rows = []
    for unit, grid in (("D", None), ("W", None), ("W", 1.0)):
        X = snapshot(frames, "2025-12-31", SnapshotConfig(unit=unit))[
            ["frequency", "recency", "T", "monetary_value"]
        ]
        weighted_s, weighted = _clock(lambda u=unit, x=X, g=grid: BTYDModel(unit=u, time_grid=g).fit(x))
        plain_s, plain = _clock(
            lambda u=unit, x=X, g=grid: BTYDModel(unit=u, time_grid=g, collapse=False).fit(x)
        )
        same = all(np.isclose(weighted.params_[k], plain.params_[k], rtol=1e-3) for k in weighted.params_)
        what = (
            "days" if unit == "D" else "weeks, whole weeks (time_grid=1)" if grid else "weeks, day precision"
        )
        rows.append(
            [
                f"{what}: {weighted.n_customers_:,} customers, {weighted.n_distinct_:,} distinct rows",
                f"{weighted_s:.1f} s",
                f"{plain_s:.1f} s",
                f"{plain_s / weighted_s:.1f}x",
                "yes" if same else "NO",
            ]
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=200_000)
    ap.add_argument("--db", help="an imported SQLite store to use instead of a new sample world")
    ap.add_argument("--btyd-customers", type=int, default=1_000_000, help="0 skips the BTYD weights part")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))

    rows = models_on_the_world(world_store(args.customers, args.db, "kw-bench-models-"))
    print(table(["model", "rows", "fit", "predict", "rows/s predicted"], rows))
    print(f"\nsnapshot at {CUTOFF:%Y-%m-%d}; peak memory so far {peak_rss_gb():.2f} GB")
    if args.btyd_customers:
        print()
        print(
            table(
                [
                    "BG/NBD + Gamma-Gamma fit",
                    "distinct rows, weights",
                    "every row (reference)",
                    "speed-up",
                    "same parameters",
                ],
                btyd_weights(args.btyd_customers),
            )
        )
        print(f"\npeak memory {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
