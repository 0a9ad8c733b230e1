"""Benchmark: `kundenwert train` end to end (store -> training sets -> fit and backtest -> MLflow
runs, plots, registry, promotion) on the 200,000-customer world (M, seed 2) with the default
experiment, time per stage.

Reference (``shared/benchmarks.md`` has none for training): the bare fits of the same five
estimators on the same training rows are stages of the run itself, so the table shows what the
orchestration around them costs; the total is set against the issue's budget of 5 minutes.

    python bench/train.py [--customers 200000] [--db kundenwert.db] [--config FILE] [--budget 300]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import peak_rss_gb, table, world_store  # noqa: E402


def stage_of(message: str) -> str:
    """A progress message without its row counts: the stage's name."""
    for word in (" on ", " ("):
        message = message.split(word)[0]
    return message


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--customers", type=int, default=200_000)
    ap.add_argument("--db", help="an imported store (SQLite file) instead of a new world")
    ap.add_argument("--config", type=Path, help="experiment TOML (default: the packaged experiment)")
    ap.add_argument("--budget", type=float, default=300.0, help="seconds the whole run may take")
    args = ap.parse_args()

    db = world_store(args.customers, args.db, "kw-bench-train-")
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

    config = load_config(args.config)
    marks: list[tuple[float, str]] = []

    def progress(message: str) -> None:
        marks.append((time.perf_counter(), message))
        print(f"{marks[-1][0] - t0:7.1f} s  {message}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    results, decisions = run_training(config, progress=progress)
    total = time.perf_counter() - t0
    marks.append((t0 + total, "end"))

    rows = []
    for (start, message), (end, _) in zip(marks, marks[1:], strict=False):
        rows.append([message, f"{end - start:.1f}", f"{(end - start) / total:.0%}"])
    by_kind: dict[str, float] = {}
    for (start, message), (end, _) in zip(marks, marks[1:], strict=False):
        kind = "fit + backtest" if message.startswith("fitting") else stage_of(message)
        kind = "log, plot, register, promote" if kind.startswith("logging") else kind
        kind = "training sets" if kind.startswith("building") else kind
        by_kind[kind] = by_kind.get(kind, 0.0) + end - start
    print(
        f"\n### kundenwert train, {args.customers:,}-customer world, default experiment ({os.cpu_count()} cores)\n"
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
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in shown.items())
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
    print(
        f"\ntotal {total:.1f} s = {total / args.budget:.2f} x the {args.budget:.0f} s budget"
        f" ({'within' if total <= args.budget else 'OVER'}); peak memory {peak_rss_gb():.2f} GB"
    )


PRIMARY_AND_MORE = ("roc_auc", "ece", "spearman", "top20_captured", "roc_auc_mean", "qini_normalized")

if __name__ == "__main__":
    main()
