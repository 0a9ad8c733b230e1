"""Benchmark: the sample CRM world generator (``kundenwert sample``).

Reference, measured in the same run: lifetimes' own BG/NBD simulator
(``lifetimes.generate_data.beta_geometric_nbd_model``), which simulates only purchase times, on
the same number of customers (capped at 20,000 because it loops in Python; its rate is per customer).
Each size runs in a fresh subprocess so peak memory is that size's own.

    python bench/sample.py [--sizes 100000 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import run_child, table  # noqa: E402

CHILD = r"""
import json, sys, tempfile, time, warnings
sys.path.insert(0, {bench!r})
from _common import peak_rss_gb, timed
from kundenwert.datasets.sample import generate_world, write_world
n, repeat = {n}, {repeat}
out = tempfile.mkdtemp(prefix="kw-bench-sample-")
def run():
    t0 = time.perf_counter(); w = generate_world(n, seed=2); t1 = time.perf_counter()
    rows = write_world(w, out, "csv"); t2 = time.perf_counter()
    return rows, t1 - t0, t2 - t1
secs, (rows, gen, write) = timed(run, repeat, warmup=repeat > 1)
ref_n = min(n, 20_000)
warnings.simplefilter("ignore")
from lifetimes.generate_data import beta_geometric_nbd_model
t0 = time.perf_counter()
beta_geometric_nbd_model(T=1095, r=0.9, alpha=40.0, a=0.8, b=3.5, size=ref_n)
ref = time.perf_counter() - t0
print(json.dumps(dict(n=n, seconds=secs, generate=gen, write=write, rows=sum(rows.values()),
                      peak_gb=peak_rss_gb(), ref_n=ref_n, ref_seconds=ref)))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3, help="repetitions (median); sizes >= 1M run once")
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        repeat = args.repeat if n < 1_000_000 else 1
        code = CHILD.format(bench=str(Path(__file__).parent), n=n, repeat=repeat)
        res = run_child(code)
        ours = res["n"] / res["seconds"]
        ref = res["ref_n"] / res["ref_seconds"]
        rows.append(
            [
                f"{n:,}",
                f"{res['rows']:,}",
                f"{res['seconds']:.1f} s (gen {res['generate']:.1f} + write {res['write']:.1f})",
                f"{res['rows'] / res['seconds']:,.0f}",
                f"{ours:,.0f}",
                f"{ref:,.0f}",
                f"{ours / ref:.1f}x",
                f"{res['peak_gb']:.2f} GB",
                repeat,
            ]
        )
    print(
        table(
            [
                "customers",
                "rows written",
                "time (median)",
                "rows/s",
                "customers/s",
                "reference customers/s (lifetimes BG/NBD sim)",
                "ratio",
                "peak memory",
                "runs",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
