"""Benchmark: ``kundenwert import`` of a sample world into SQLite (read, validate, write in one transaction).

Reference, measured in the same run on the same rows: bare ``sqlite3`` ``executemany`` of the
purchases table's typed rows into an unindexed table, one row per statement (what a plain
"INSERT each row" loader does, with no validation). Each size runs in a fresh subprocess.

    python bench/import.py [--sizes 100000 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import run_child, table  # noqa: E402

CHILD = r"""
import json, os, shutil, sqlite3, sys, tempfile, time
sys.path.insert(0, {bench!r})
from _common import peak_rss_gb, timed
from kundenwert.features.importer import import_folder
from kundenwert.db.backends import SQLITE
from kundenwert.features.store import Store
n, repeat = {n}, {repeat}
work = tempfile.mkdtemp(prefix="kw-bench-import-")
world = os.path.join(work, "world")
import subprocess
subprocess.run([sys.executable, "-m", "kundenwert.cli", "sample", world, "-n", str(n), "--seed", "2"],
               check=True, capture_output=True)  # in its own process: its memory is not the import's
db = os.path.join(work, "kw.db")
def run():
    for f in (db, db + "-wal", db + "-shm"):
        if os.path.exists(f): os.remove(f)
    store = Store("sqlite:///" + db)
    r = import_folder(world, store, mode="replace")
    store.dispose()
    return r
secs, result = timed(run, repeat, warmup=False)
peak_import = peak_rss_gb()
# Reference: the purchases rows, already typed, inserted row by row with no validation or index.
store = Store("sqlite:///" + db)
p = store.read_table("purchases")
rows = list(zip(*[SQLITE.python_values(p[c]) for c in p.columns]))
ref_db = os.path.join(work, "ref.db")
con = sqlite3.connect(ref_db); con.execute("PRAGMA journal_mode=WAL"); con.execute("PRAGMA synchronous=NORMAL")
con.execute("CREATE TABLE p (" + ", ".join(p.columns) + ")")
sql = "INSERT INTO p VALUES (" + ", ".join("?" for _ in p.columns) + ")"
t0 = time.perf_counter(); con.executemany(sql, rows); con.commit(); ref = time.perf_counter() - t0
shutil.rmtree(work, ignore_errors=True)
print(json.dumps(dict(n=n, seconds=secs, rows=result.total_rows, stages=result.seconds,
                      per_table=result.rows, peak_gb=peak_import, ref_rows=len(rows), ref_seconds=ref)))
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
        ours = res["rows"] / res["seconds"]
        ref = res["ref_rows"] / res["ref_seconds"]
        st = res["stages"]
        rows.append(
            [
                f"{n:,}",
                f"{res['rows']:,}",
                f"{res['seconds']:.1f} s",
                f"read {st['read']:.1f} / validate {st['validate']:.1f} / write {st['write']:.1f}",
                f"{ours:,.0f}",
                f"{ref:,.0f}",
                f"{ours / ref:.2f}x",
                f"{res['peak_gb']:.2f} GB",
                repeat,
            ]
        )
    print(
        table(
            [
                "customers",
                "rows imported",
                "time",
                "stages (s, last run)",
                "rows/s (validated, indexed)",
                "reference rows/s (bare sqlite3 inserts)",
                "ratio",
                "peak memory",
                "runs",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
