"""Benchmark: ``kundenwert import`` of a sample world (read, validate, write in one transaction,
indexes included) into SQLite and PostgreSQL, alone and beside a busy neighbour.

References, measured in the same run on the same rows and under the same load, each repetition
right after the import it is compared with (the median of each is reported):

* SQLite: bare ``sqlite3`` ``executemany`` of the purchases table's typed rows into an unindexed
  table, one row per statement (what a plain "INSERT each row" loader does, with no validation).
* PostgreSQL: a bare ``COPY`` of the same typed rows (psycopg ``copy.write_row`` per row) into an
  unindexed table with the purchases table's columns, in its own transaction.

Rows are built before the reference's clock starts. The busy neighbour is a CPU loop in a process
of its own that the benchmark starts before the import's first repetition and stops after the last
reference. Each size and scenario runs in a fresh subprocess; PostgreSQL is a private cluster
started for the run (``/usr/lib/postgresql/<v>/bin``), or ``--pg-url``.

    python bench/import.py [--sizes 100000 1000000] [--repeat 3] [--no-busy] [--no-postgres]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import run_child, table  # noqa: E402

CHILD = r"""
import json, os, statistics, subprocess, sqlite3, sys, tempfile, time, uuid
sys.path.insert(0, {bench!r})
from _common import peak_rss_gb
from kundenwert.features.importer import import_folder
from kundenwert.db.backends import POSTGRES, SQLITE
from kundenwert.db.store import Store
world, repeat, backend, pg, busy = {world!r}, {repeat}, {backend!r}, {pg!r}, {busy}
work = tempfile.mkdtemp(prefix="kw-bench-import-")

def fresh_url():
    if backend == "sqlite":
        return "sqlite:///" + os.path.join(work, "kw-" + uuid.uuid4().hex[:8] + ".db")
    import psycopg
    name = "kw_bench_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg + "/postgres", autocommit=True) as c:
        c.execute('CREATE DATABASE "' + name + '"')
    return pg.replace("postgresql://", "postgresql+psycopg://") + "/" + name

def drop(url):
    if backend == "sqlite":
        for f in (url[len("sqlite:///"):] + s for s in ("", "-wal", "-shm")):
            if os.path.exists(f): os.remove(f)
        return
    import psycopg
    with psycopg.connect(pg + "/postgres", autocommit=True) as c:
        c.execute('DROP DATABASE "' + url.rsplit("/", 1)[1] + '" WITH (FORCE)')

def import_once():
    url = fresh_url()
    store = Store(url)
    t0 = time.perf_counter()
    r = import_folder(world, store, mode="replace")
    secs = time.perf_counter() - t0
    store.dispose()
    return url, secs, r

def reference(columns, rows):
    if backend == "sqlite":
        path = os.path.join(work, "ref-" + uuid.uuid4().hex[:8] + ".db")
        con = sqlite3.connect(path); con.execute("PRAGMA journal_mode=WAL"); con.execute("PRAGMA synchronous=NORMAL")
        con.execute("CREATE TABLE p (" + ", ".join(columns) + ")")
        sql = "INSERT INTO p VALUES (" + ", ".join("?" for _ in columns) + ")"
        t0 = time.perf_counter(); con.executemany(sql, rows); con.commit(); secs = time.perf_counter() - t0
        con.close(); os.remove(path)
        for s in ("-wal", "-shm"):
            if os.path.exists(path + s): os.remove(path + s)
        return secs
    import psycopg
    with psycopg.connect(pg + "/" + ref_db) as c:
        c.execute("DROP TABLE IF EXISTS p")
        c.execute("CREATE TABLE p (LIKE ref_shape)")
        c.commit()
        t0 = time.perf_counter()
        with c.cursor() as cur, cur.copy("COPY p (" + ", ".join(columns) + ") FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        c.commit()
        return time.perf_counter() - t0

# The reference's rows: the purchases as the store holds them, typed for the driver.
url, _, first = import_once()
peak_import = peak_rss_gb()  # the import alone, before the reference's rows exist
store = Store(url)
p = store.read_table("purchases")
conv = SQLITE if backend == "sqlite" else POSTGRES
rows = list(zip(*[conv.python_values(p[c]) for c in p.columns]))
columns = list(p.columns)
if backend != "sqlite":
    import psycopg
    ref_db = "kw_bench_ref_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg + "/postgres", autocommit=True) as c:
        c.execute('CREATE DATABASE "' + ref_db + '"')
    with store.engine.connect() as conn:  # the purchases table's column types, no keys or indexes
        cols = conn.exec_driver_sql(
            "SELECT column_name, format_type(a.atttypid, a.atttypmod) FROM information_schema.columns i "
            "JOIN pg_attribute a ON a.attrelid = 'purchases'::regclass AND a.attname = i.column_name "
            "WHERE i.table_name = 'purchases' ORDER BY i.ordinal_position").all()
    with psycopg.connect(pg + "/" + ref_db) as c:
        c.execute("CREATE TABLE ref_shape (" + ", ".join(f'"{{n}}" {{t}}' for n, t in cols) + ")")
        c.commit()
store.dispose(); drop(url)
del p

neighbour = None
if busy:  # a CPU loop beside the benchmark, started and stopped here
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)
ours, refs, stages = [], [], []
try:
    for _ in range(repeat):
        url, secs, result = import_once()
        drop(url)
        ours.append(secs); stages.append(result.seconds)
        refs.append(reference(columns, rows))
finally:
    if neighbour is not None:
        neighbour.kill(); neighbour.wait()
if backend != "sqlite":
    with psycopg.connect(pg + "/postgres", autocommit=True) as c:
        c.execute('DROP DATABASE "' + ref_db + '" WITH (FORCE)')
import shutil; shutil.rmtree(work, ignore_errors=True)
stage = {{k: statistics.median(s[k] for s in stages) for k in stages[0]}}
print(json.dumps(dict(seconds=statistics.median(ours), all_seconds=ours, rows=result.total_rows,
                      stages=stage, per_table=result.rows, peak_gb=peak_import, ref_rows=len(rows),
                      ref_seconds=statistics.median(refs), all_ref_seconds=refs,
                      ratios=[len(rows) and (result.total_rows / a) / (len(rows) / b) for a, b in zip(ours, refs)])))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb refuses to run as root: run the server as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@contextmanager
def postgres_cluster() -> Iterator[str | None]:
    """A private PostgreSQL cluster on 127.0.0.1 (the tests' settings); None without the binaries."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        yield None
        return
    bindir = Path(found[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="kw-bench-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    port = _free_port()
    initdb = [
        str(bindir / "initdb"),
        "-D",
        str(data),
        "-A",
        "trust",
        "-U",
        "postgres",
        "--no-sync",
        "-E",
        "UTF8",
    ]
    subprocess.run(_as_postgres(initdb), check=True, capture_output=True)
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    start = [str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-l", str(base / "log"), "start"]
    subprocess.run(_as_postgres(start), check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        stop = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]
        subprocess.run(_as_postgres(stop), capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3, help="repetitions (median); sizes >= 1M run once")
    ap.add_argument("--no-busy", action="store_true", help="leave out the busy-neighbour rows")
    ap.add_argument("--no-postgres", action="store_true", help="leave out the PostgreSQL rows")
    ap.add_argument(
        "--pg-url", help="a PostgreSQL server (postgresql://user@host:port) instead of a private one"
    )
    args = ap.parse_args()
    # Stopped (SIGTERM): leave through the finally blocks, so the private cluster is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    loads = ["quiet"] if args.no_busy else ["quiet", "busy"]
    rows = []
    with postgres_cluster() if not (args.no_postgres or args.pg_url) else _given(args.pg_url) as pg:
        backends = ["sqlite"] + (["postgresql"] if pg and not args.no_postgres else [])
        for n in args.sizes:
            repeat = args.repeat if n < 1_000_000 else 1
            work = Path(tempfile.mkdtemp(prefix="kw-bench-world-"))
            world = str(work / "world")
            sample = [sys.executable, "-m", "kundenwert.cli", "sample", world, "-n", str(n), "--seed", "2"]
            subprocess.run(sample, check=True, capture_output=True)  # its memory is not the import's
            try:
                for backend in backends:
                    for load in loads:
                        code = CHILD.format(
                            bench=str(Path(__file__).parent),
                            world=world,
                            repeat=repeat,
                            backend=backend,
                            pg=pg,
                            busy=load == "busy",
                        )
                        rows.append(_row(n, backend, load, repeat, run_child(code)))
            finally:
                shutil.rmtree(work, ignore_errors=True)
    print(
        table(
            [
                "customers",
                "store",
                "load",
                "rows imported",
                "time",
                "stages (s, median)",
                "rows/s (validated, indexed)",
                "reference rows/s (same rows, same load)",
                "ratio",
                "ratio per run",
                "peak memory",
                "runs",
            ],
            rows,
        )
    )


@contextmanager
def _given(url: str | None) -> Iterator[str | None]:
    yield url


def _row(n: int, backend: str, load: str, repeat: int, res: dict) -> list[object]:
    ours = res["rows"] / res["seconds"]
    ref = res["ref_rows"] / res["ref_seconds"]
    st = res["stages"]
    reference = "bare sqlite3 inserts" if backend == "sqlite" else "bare COPY"
    return [
        f"{n:,}",
        "SQLite" if backend == "sqlite" else "PostgreSQL",
        "busy neighbour (CPU loop)" if load == "busy" else "quiet",
        f"{res['rows']:,}",
        f"{res['seconds']:.1f} s",
        f"read {st['read']:.1f} / validate {st['validate']:.1f} / write {st['write']:.1f}",
        f"{ours:,.0f}",
        f"{ref:,.0f} ({reference})",
        f"{ours / ref:.2f}x",
        " ".join(f"{r:.2f}" for r in res["ratios"]),
        f"{res['peak_gb']:.2f} GB",
        repeat,
    ]


if __name__ == "__main__":
    main()
