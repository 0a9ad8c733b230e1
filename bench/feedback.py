"""Benchmark: what feedback's durable commit costs (``synchronous=FULL`` on SQLite, the WAL
synced at every commit) against the engine's ``NORMAL`` (synced at checkpoints only), in
batches of 1 and 100 events, through ``record_feedback`` as the API calls it.

Reference, measured in the same run on the same store: the same batches committed with
``NORMAL``. The store is a file under ``--dir`` (default: the system's temporary folder;
a tmpfs there makes every sync free: point ``--dir`` at the disk the service uses).

    python bench/feedback.py [--batches 200] [--dir /var/lib/kundenwert]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import table  # noqa: E402


def _store(folder: Path, customers: int = 1_000):
    """A store of ``customers`` customers, each with one decision suggesting one e-mail."""
    import pandas as pd

    from kundenwert.db.migrate import ensure_tables
    from kundenwert.db.schema import DECISIONS, FEEDBACK, TABLE_DEFS
    from kundenwert.db.store import Store
    from kundenwert.serving.state import decision_id

    store = Store(f"sqlite:///{folder / 'kw.db'}")
    ensure_tables(store.engine, DECISIONS, FEEDBACK)
    at = pd.Timestamp("2025-01-01", tz="UTC")
    ids = [f"C{i}" for i in range(customers)]
    decisions = [decision_id() for _ in ids]
    with store.engine.begin() as conn:
        conn.execute(
            TABLE_DEFS["customers"].insert(),
            [{"customer_id": c, "created_at": at, "customer_type": "consumer"} for c in ids],
        )
        conn.execute(
            DECISIONS.insert(),
            [
                {
                    "decision_id": d,
                    "customer_id": c,
                    "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "score_run": "bench",
                    "suggestions": '[{"action_id": "newsletter", "channel": "email", "score": 1.0, "rank": 1}]',
                }
                for d, c in zip(decisions, ids, strict=True)
            ],
        )
    return store, decisions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200, help="batches per cell (after a warm-up)")
    parser.add_argument("--dir", type=Path, default=None, help="folder of the store's file")
    args = parser.parse_args()

    from kundenwert.serving import feedback
    from kundenwert.serving.feedback import Event, record_feedback

    folder = Path(tempfile.mkdtemp(prefix="kw-bench-feedback-", dir=args.dir))
    store, decisions = _store(folder)
    serial = itertools.count()
    outcomes = itertools.cycle(["sent", "opened", "clicked"])

    def batch(size: int) -> list[Event]:
        return [
            Event(
                event_id=f"e{next(serial)}",
                decision_id=decisions[next(serial) % len(decisions)],
                action_id="newsletter",
                channel="email",
                outcome=next(outcomes),
                occurred_at=datetime.now(UTC),
            )
            for _ in range(size)
        ]

    results: dict[tuple[int, bool], list[float]] = {}
    for size in (1, 100):
        for durable in (False, True, False, True):  # interleaved: drift hits both alike
            feedback.DURABLE = durable
            batches = [batch(size) for _ in range(args.batches // 2 + 5)]
            for b in batches[:5]:  # warm-up
                record_feedback(store, b)
            times = []
            for b in batches[5:]:
                t0 = time.perf_counter()
                record_feedback(store, b)
                times.append(time.perf_counter() - t0)
            results.setdefault((size, durable), []).extend(times)
    feedback.DURABLE = True
    rows = []
    for size in (1, 100):
        normal = statistics.median(results[(size, False)])
        full = statistics.median(results[(size, True)])
        rows.append(
            [
                size,
                f"{normal * 1e3:.2f}",
                f"{full * 1e3:.2f}",
                f"{1 / normal:.0f}",
                f"{1 / full:.0f}",
                f"{size / full:.0f}",
                f"{full / normal:.2f}x",
            ]
        )
    print(f"store file: {folder / 'kw.db'}; {args.batches} batches per cell, median")
    print(
        table(
            [
                "events per batch",
                "ms per batch NORMAL",
                "ms per batch FULL",
                "batches/s NORMAL",
                "batches/s FULL",
                "events/s FULL",
                "FULL / NORMAL",
            ],
            rows,
        )
    )
    store.dispose()


if __name__ == "__main__":
    main()
