"""Benchmark: `kundenwert train` end to end (store -> training sets -> fit and backtest -> MLflow
runs, plots, registry, promotion) on the 200,000-customer world (M, seed 2) with the default
experiment, time per stage, alone and with a busy neighbour.

Reference (same run, same load): a bare scikit-learn fit, ``HistGradientBoostingClassifier``
with its defaults (every core, 100 trees, no early stopping) on a fixed 50,000 x 60 matrix,
median of 3. The run is timed quiet, then with a second kundenwert training job beside it
(``shared/benchmarks.md``, "A busy neighbour": the bench starts it, on the same store in its own
home, and stops it), each row against the reference measured under the same load; the quiet
total is set against the issue's budget (120 s on 2 cores).

    python bench/train.py [--customers 200000] [--db kundenwert.db] [--config FILE] [--budget 120]
                          [--no-busy]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Neighbour, peak_rss_gb, table, timed, world_store  # noqa: E402


def stage_of(message: str) -> str:
    """A progress message without its row counts: the stage's name."""
    for word in (" on ", " ("):
        message = message.split(word)[0]
    return message


def bare_fit() -> float:
    """The reference: scikit-learn's own booster fitted with its defaults (median of 3, seconds)."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50_000, 60))
    y = (X[:, :5].sum(axis=1) + rng.normal(size=len(X)) > 0).astype(int)
    booster = HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=0)
    return timed(lambda: booster.fit(X, y), repeat=3, warmup=False)[0]


def train_once(db: Path, config_path: Path | None, progress=None):
    """One training run on ``db`` in a new home (so each run registers its first versions)."""
    home = Path(tempfile.mkdtemp(prefix="kw-bench-train-home-"))
    os.environ.update(
        {
            "KUNDENWERT_DATABASE_URL": f"sqlite:///{db}",
            "KUNDENWERT_HOME": str(home),
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
    )
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from kundenwert.training.config import load_config
    from kundenwert.training.run import run_training

    return run_training(load_config(config_path), progress=progress)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--customers", type=int, default=200_000)
    ap.add_argument("--db", help="an imported store (SQLite file) instead of a new world")
    ap.add_argument("--config", type=Path, help="experiment TOML (default: the packaged experiment)")
    ap.add_argument("--budget", type=float, default=120.0, help="seconds the whole run may take")
    ap.add_argument("--no-busy", action="store_true", help="the quiet row only")
    ap.add_argument("--as-neighbour", action="store_true", help=argparse.SUPPRESS)  # the busy job
    args = ap.parse_args()

    if args.as_neighbour:
        train_once(Path(args.db), args.config)
        return
    db = world_store(args.customers, args.db, "kw-bench-train-")
    marks: list[tuple[float, str]] = []

    def progress(message: str) -> None:
        marks.append((time.perf_counter(), message))
        print(f"{marks[-1][0] - t0:7.1f} s  {message}", file=sys.stderr, flush=True)

    reference = bare_fit()
    t0 = time.perf_counter()
    results, decisions = train_once(db, args.config, progress)
    total = time.perf_counter() - t0
    marks.append((t0 + total, "end"))
    load_rows = [["quiet", f"{reference:.2f}", f"{total:.1f}", f"{total / reference:.0f}"]]
    if not args.no_busy:
        job = [sys.executable, str(Path(__file__).resolve()), "--as-neighbour", "--db", str(db)]
        if args.config:
            job += ["--config", str(args.config.resolve())]
        home = tempfile.mkdtemp(prefix="kw-bench-train-neighbour-")
        with Neighbour(job, env={"KUNDENWERT_HOME": home}, warmup=10.0):
            busy_reference = bare_fit()
            t1 = time.perf_counter()
            train_once(db, args.config)
            busy = time.perf_counter() - t1
        load_rows.append(
            [
                "a second kundenwert train beside it",
                f"{busy_reference:.2f}",
                f"{busy:.1f}",
                f"{busy / busy_reference:.0f}",
            ]
        )

    rows = []
    for (start, message), (end, _) in zip(marks, marks[1:], strict=False):
        rows.append([message, f"{end - start:.1f}", f"{(end - start) / total:.0%}"])
    by_kind: dict[str, float] = {}
    for (start, message), (end, _) in zip(marks, marks[1:], strict=False):
        kind = "fit + backtest" if message.startswith("fitting") else stage_of(message)
        kind = "log, plot, register, promote" if kind.startswith("logging") else kind
        kind = "training sets" if kind.startswith("building") else kind
        by_kind[kind] = by_kind.get(kind, 0.0) + end - start
    from kundenwert.threads import budget

    print(
        f"\n### kundenwert train, {args.customers:,}-customer world, default experiment "
        f"({os.cpu_count()} cores, thread budget {budget()})\n"
    )
    print(table(["stage", "seconds", "share"], rows))
    print()
    print(
        table(["kind", "seconds", "share"], [[k, f"{v:.1f}", f"{v / total:.0%}"] for k, v in by_kind.items()])
    )
    print()
    model_rows = []
    for name, r in results.items():
        shown = {k: v for k, v in r.metrics.items() if k in PRIMARY_AND_MORE}
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in shown.items() if v is not None)
        model_rows.append(
            [
                name,
                f"{r.data['rows']:,}",
                metrics,
                "passed" if r.passed else "failed",
                decisions[name]["promoted"],
            ]
        )
    print(table(["model", "training rows", "test metrics", "gates", "champion"], model_rows))
    print()
    print(table(["load", "bare fit (reference), s", "kundenwert train, s", "train / bare fit"], load_rows))
    print(
        f"\ntotal (quiet) {total:.1f} s = {total / args.budget:.2f} x the {args.budget:.0f} s budget"
        f" ({'within' if total <= args.budget else 'OVER'}); peak memory {peak_rss_gb():.2f} GB"
    )


PRIMARY_AND_MORE = ("roc_auc", "ece", "spearman", "top20_captured", "roc_auc_mean", "qini_normalized")

if __name__ == "__main__":
    main()
