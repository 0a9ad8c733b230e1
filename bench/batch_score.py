"""Benchmark: batch scoring of a large customer base for every action and channel of the catalog,
against the models' bare predictions on the same rows (the reference, same run;
``shared/benchmarks.md``).

The rows: the snapshot of a scored store (``make run``: 20,000 customers) drawn with replacement
up to ``--customers`` rows (1,000,000 by default), so the features have the store's distribution.
The models: the registry's champions.

- **kundenwert**: ``score_snapshot`` (CLV, P(alive) from a BG/NBD fit on these rows, churn for
  active, win-back for lapsed, every category's affinity, the response propensity of every
  (action, channel) pair of the catalog) and ``Candidates`` (eligibility, value and score of every
  customer x pair: what arbitration ranks).
- **bare**: each model's own prediction on the same rows: ``clv.predict(X)``, churn and win-back
  ``predict_proba(X)``, each affinity classifier's ``predict_proba(X)`` and the response model's
  ``predict_proba`` on the contact rows of every pair (X with the pair's action, channel and
  ``treated``), one pair at a time.

Each is timed quiet and then with a busy neighbour (``shared/benchmarks.md``): a second
kundenwert process scoring the same rows with ``score_snapshot`` over and over, which the bench
starts and stops itself; each kundenwert row is set against the bare predictions measured under
the same load. kundenwert scores within its thread budget (``KUNDENWERT_THREADS``, default the
cores), the bare predictions with scikit-learn's defaults.

    python bench/batch_score.py [--db var/kundenwert.db] [--customers 1000000] [--no-busy]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).parent))
from _common import Neighbour, peak_rss_gb, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", default="var/kundenwert.db")
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-busy", action="store_true", help="the quiet rows only")
    ap.add_argument(
        "--bare-sklearn",
        action="store_true",
        help="the reference through scikit-learn's own tree path (KUNDENWERT_COMPILED_TREES=0), "
        "not the compiled walk (models/forest.py) the models' predict_proba takes for many rows",
    )
    ap.add_argument("--as-neighbour", action="store_true", help=argparse.SUPPRESS)  # the busy job
    args = ap.parse_args()

    import numpy as np
    import pandas as pd

    from kundenwert.db.store import Store
    from kundenwert.features.snapshot import load_frames, snapshot
    from kundenwert.models.response import NEW_CONTACT
    from kundenwert.serving.arbitration import Candidates
    from kundenwert.serving.catalog import load_catalog
    from kundenwert.serving.scoring import (
        as_of,
        category_margins,
        load_champions,
        pairs_of,
        score_snapshot,
        status_at,
    )
    from kundenwert.threads import budget, limited

    store = Store(f"sqlite:///{Path(args.db).resolve()}")
    frames = load_frames(store)
    t = as_of(frames)
    catalog = load_catalog()
    margins = category_margins(frames["purchases"])
    models, versions = load_champions()
    base = snapshot(frames, t)
    base_status = status_at(frames, t).reindex(base.index).fillna("new")
    rng = np.random.default_rng(args.seed)
    pick = rng.integers(0, len(base), args.customers)
    ids = pd.Index([f"b{i:08d}" for i in range(args.customers)], name="customer_id")
    X = base.iloc[pick].set_axis(ids)
    status = pd.Series(base_status.to_numpy()[pick], index=ids)
    pairs = pairs_of(catalog)
    del frames, base
    if args.as_neighbour:  # the second job of the busy rows: the same scoring, until stopped
        while True:
            with limited():
                score_snapshot(X, status, models, catalog, reasons=False)
    print(f"{len(X):,} customers x {len(pairs)} (action, channel) pairs, {X.shape[1]} features", flush=True)

    def bare_predictions() -> dict[str, float]:
        """The reference: every model's own prediction on the same rows."""
        if args.bare_sklearn:
            os.environ["KUNDENWERT_COMPILED_TREES"] = "0"
        bare: dict[str, float] = {}
        t0 = time.perf_counter()
        models["clv"].predict(X)
        bare["clv"] = time.perf_counter() - t0
        for name in ("churn", "winback"):
            t0 = time.perf_counter()
            models[name].predict_proba(X)
            bare[name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for m in models["affinity"].models_.values():
            m.predict_proba(X)
        bare["affinity"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for action, channel in pairs:
            contact = X.assign(action_id=action, channel=channel, treated=True, **NEW_CONTACT)
            models["response"].predict_proba(contact)
        bare["response"] = time.perf_counter() - t0
        if args.bare_sklearn:
            del os.environ["KUNDENWERT_COMPILED_TREES"]
        return bare

    def kundenwert() -> tuple[float, float, int]:
        """kundenwert's batch scoring of the same rows: (models, candidates, eligible pairs)."""
        with limited():
            t0 = time.perf_counter()
            scores, propensity = score_snapshot(X, status, models, catalog, reasons=False)
            t_models = time.perf_counter() - t0
            t0 = time.perf_counter()
            cands = Candidates(catalog, scores, propensity, margins)
            t_cands = time.perf_counter() - t0
        return t_models, t_cands, int((cands.before[:-1] == 0).sum())

    loads = [("quiet", None)]
    if not args.no_busy:
        job = [sys.executable, str(Path(__file__).resolve()), "--as-neighbour", "--db", str(args.db)]
        job += ["--customers", str(args.customers), "--seed", str(args.seed)]
        loads.append(("a second kundenwert scoring beside it", Neighbour(job, warmup=20.0)))
    rows, notes = [], []
    for load, neighbour in loads:
        if neighbour is not None:
            neighbour.start()
        try:
            bare = bare_predictions()
            t_models, t_cands, kept = kundenwert()
        finally:
            if neighbour is not None:
                neighbour.stop()
        ours, reference = t_models + t_cands, sum(bare.values())
        rows += [
            [
                load,
                f"bare model predictions (reference{', scikit-learn path' if args.bare_sklearn else ''})",
                f"{reference:.1f}",
                f"{len(X) / reference:,.0f}",
                "1.00",
            ],
            [
                load,
                "kundenwert: models (score_snapshot)",
                f"{t_models:.1f}",
                f"{len(X) / t_models:,.0f}",
                f"{reference / t_models:.2f}",
            ],
            [
                load,
                "kundenwert: + candidates for every pair",
                f"{ours:.1f}",
                f"{len(X) / ours:,.0f}",
                f"{reference / ours:.2f}",
            ],
        ]
        notes.append(
            f"{load}: bare by model {', '.join(f'{k} {v:.1f} s' for k, v in bare.items())}; "
            f"candidates {t_cands:.1f} s ({kept:,} customer-pairs eligible)"
        )
    print(
        f"\n### Batch scoring: {len(X):,} customers x {len(pairs)} pairs "
        f"({len(X) * len(pairs):,} customer-pair scores), models {versions}, {os.cpu_count()} cores, "
        f"thread budget {budget()}\n"
    )
    print(table(["load", "", "seconds", "customers/s", "throughput vs bare"], rows))
    print("\n" + "\n".join(notes) + f"\npeak memory {peak_rss_gb():.1f} GB")


if __name__ == "__main__":
    main()
