"""Benchmark: the snapshot and the scoring of a large customer base on Spark (``local[2]``) against
the local engine on the same customers (the reference, same run).

The customers: a small trained sample world (3,000 customers, seed 5, the test suite's small
experiment: boosters of 30 iterations) drawn with replacement up to ``--customers``, every table's
rows copied with each draw under a new customer id, so the tables have the world's distribution
(as ``bench/batch_score.py`` draws snapshot rows). The draw is written as a Parquet folder (the
spark engine's input); the local engine gets the same tables as typed frames in memory (its
fastest case: no store read).

- **local snapshot**: ``snapshot(frames, t)`` (frames in memory -> frame);
- **spark snapshot**: ``snapshot_spark`` from the Parquet folder to Parquet parts (read, typed by
  the contract's parser, shuffled into shards, ``applyInPandas``, written);
- **local scoring**: ``snapshot`` + ``score_snapshot`` as ``kundenwert score`` runs them (status,
  objection, P(alive) fitted on all, reasons, every eligible pair), without the store write;
- **spark scoring**: ``score_spark`` from the Parquet folder to Parquet (its own snapshot included).

    python bench/spark.py [--customers 100000] [--master local[2]] [--home DIR] [--no-local]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).parent))
from _common import peak_rss_gb, table  # noqa: E402


def trained_home(home: Path) -> Path:
    """``home`` holding the small sample world's store and a registry with its champions (made
    once: a later run with the same --home reuses them)."""
    if (home / "kw.db").exists():
        return home
    from kundenwert.datasets.sample import generate_world, write_world
    from kundenwert.db.store import Store
    from kundenwert.features.importer import import_folder
    from kundenwert.features.snapshot import load_frames
    from kundenwert.models.specs import SPECS
    from kundenwert.training.backtest import train_models
    from kundenwert.training.config import ExperimentConfig
    from kundenwert.training.run import publish

    config = ExperimentConfig.model_validate(
        {
            "models": {m: {"params": {"max_iter": 30}, "gates": {}} for m in SPECS},
            "data": {"max_train_cutoffs": 2},
        }
    )
    write_world(generate_world(3_000, seed=5), home / "world", "parquet")
    store = Store(f"sqlite:///{home / 'kw.db'}")
    import_folder(home / "world", store, mode="replace")
    publish(train_models(load_frames(store), config), config)
    store.dispose()
    return home


def drawn(frames: dict, customers: int, seed: int) -> dict:
    """``customers`` drawn with replacement from ``frames``' customers, with all their rows, as
    new customers ``b00000000``, ``b00000001``, ..."""
    import numpy as np
    import pandas as pd

    base = frames["customers"]["customer_id"].astype("str").to_numpy()
    pick = np.random.default_rng(seed).integers(0, len(base), customers)
    new_ids = pd.array([f"b{i:08d}" for i in range(customers)], dtype="str")
    out = {"customers": frames["customers"].iloc[pick].assign(customer_id=new_ids).reset_index(drop=True)}
    for name, df in frames.items():
        if name == "customers":
            continue
        code = pd.Index(base).get_indexer(df["customer_id"].astype("str"))
        df = df[code >= 0].iloc[np.argsort(code[code >= 0], kind="stable")]
        counts = np.bincount(code[code >= 0], minlength=len(base))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        n = counts[pick]
        offsets = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        rows = np.repeat(starts[pick], n) + offsets
        out[name] = (
            df.iloc[rows]
            .assign(customer_id=np.repeat(np.asarray(new_ids, dtype=object), n))
            .reset_index(drop=True)
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--driver-memory", default="6g")
    ap.add_argument("--home", type=Path, help="folder for the trained small world (reused when it exists)")
    ap.add_argument(
        "--no-local", action="store_true", help="Spark rows only (the local rows of an earlier run)"
    )
    ap.add_argument("--no-scoring", action="store_true", help="the snapshot rows only")
    ap.add_argument("--no-snapshot", action="store_true", help="the scoring rows only")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kw-bench-spark-"))
    home = trained_home(args.home or work / "home")
    os.environ["KUNDENWERT_HOME"] = str(home)
    os.environ.pop("KUNDENWERT_DATABASE_URL", None)

    from kundenwert.db.store import Store
    from kundenwert.features.snapshot import load_frames, snapshot
    from kundenwert.features.spark import snapshot_spark, spark_session
    from kundenwert.serving.catalog import load_catalog
    from kundenwert.serving.scoring import (
        as_of,
        load_champions,
        objecting_then_or_now,
        score_snapshot,
        status_at,
    )
    from kundenwert.serving.spark import score_spark

    store = Store(f"sqlite:///{home / 'kw.db'}")
    base = load_frames(store, columns=None)
    store.dispose()
    frames = drawn(base, args.customers, args.seed)
    folder = work / "tables"
    folder.mkdir()
    for name, df in frames.items():
        df.to_parquet(folder / f"{name}.parquet", index=False)
    rows = sum(len(df) for df in frames.values())
    t = as_of(frames)
    catalog = load_catalog()
    models, versions = load_champions()
    print(
        f"{args.customers:,} customers ({rows:,} rows) drawn from 3,000; scoring date {t:%Y-%m-%d}",
        flush=True,
    )

    seconds: dict[str, float] = {}
    if not args.no_local:
        t0 = time.perf_counter()
        X = snapshot(frames, t)
        seconds["local snapshot (frames in memory)"] = time.perf_counter() - t0
        if not args.no_scoring:
            t0 = time.perf_counter()
            X = snapshot(frames, t)
            objecting = objecting_then_or_now(frames["consents"], t)
            score_snapshot(X, status_at(frames, t), models, catalog, objecting)
            seconds["local scoring (snapshot + score_snapshot)"] = time.perf_counter() - t0
        print(", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()), flush=True)
        del X
    del frames, base

    t0 = time.perf_counter()
    spark = spark_session(args.master, conf={"spark.driver.memory": args.driver_memory})
    started = time.perf_counter() - t0
    if not args.no_snapshot:
        t0 = time.perf_counter()
        snap, _, _ = snapshot_spark(spark, folder, t)
        snap.write.mode("overwrite").parquet(str(work / "snap"))
        seconds[f"spark snapshot ({args.master}, Parquet -> Parquet)"] = time.perf_counter() - t0
        print(f"spark snapshot {seconds[list(seconds)[-1]]:.1f} s", flush=True)
    done: dict = {"pairs": "-", "shards": "-", "customers": 0, "not_profiled": 0}
    if not args.no_scoring:
        t0 = time.perf_counter()
        done = score_spark(spark, folder, work / "scores", catalog, t, models=(models, versions))
        seconds[f"spark scoring ({args.master}, Parquet -> Parquet)"] = time.perf_counter() - t0
    spark.stop()

    print(
        f"\n### Spark against the local engine: {args.customers:,} customers ({rows:,} rows), "
        f"{done['pairs']} pairs, {os.cpu_count()} cores, {done['shards']} shards\n"
    )
    local = {"snapshot": seconds.get("local snapshot (frames in memory)"), "scoring": None}
    local["scoring"] = seconds.get("local scoring (snapshot + score_snapshot)")
    out = []
    for what, s in seconds.items():
        ref = local["snapshot" if "snapshot (" in what and "scoring" not in what else "scoring"]
        ratio = "1.00 (reference)" if what.startswith("local") else (f"{ref / s:.2f}" if ref else "-")
        out.append([what, f"{s:.1f}", f"{args.customers / s:,.0f}", ratio])
    print(table(["", "seconds", "customers/s", "throughput vs local"], out))
    print(
        f"\nSpark session start {started:.1f} s (not in the rows); {done['customers']:,} customers scored, "
        f"{done['not_profiled']:,} objecting; driver peak memory {peak_rss_gb():.1f} GB"
    )


if __name__ == "__main__":
    main()
