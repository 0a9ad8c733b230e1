"""Columnar reads of a SQLite store, in a process of their own.

Apache Arrow's ADBC driver reads SQLite columnar (about twice the rows per second of ``sqlite3``,
and no Python object per value), but it bundles its own SQLite library. Two SQLite libraries in one
process break each other's POSIX file locks, which can corrupt a database (sqlite.org, "How To
Corrupt An SQLite Database", 2.2.1). So ADBC never runs in the process that holds ``sqlite3``
connections: ``read_columnar`` starts this module as a child process, which writes each result as
an Arrow IPC file, and the parent memory-maps them.

    python -m kundenwert.features.arrow_reader   (reads a JSON request on stdin)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa


def read_columnar(database: str, queries: dict[str, str]) -> dict[str, pa.Table] | None:
    """Run ``queries`` against the SQLite file ``database`` in a child process; None if that fails."""
    with tempfile.TemporaryDirectory(prefix="kw-read-") as out:
        request = json.dumps({"database": database, "queries": queries, "out": out})
        try:
            done = subprocess.run(
                [sys.executable, "-m", "kundenwert.features.arrow_reader"],
                input=request,
                capture_output=True,
                text=True,
                timeout=3600,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0:
            return None
        tables = {}
        for name in queries:
            with pa.memory_map(str(Path(out) / f"{name}.arrow")) as source:
                tables[name] = pa.ipc.open_file(source).read_all()
        return tables


def _main() -> int:
    request = json.loads(sys.stdin.read())
    try:
        import adbc_driver_sqlite.dbapi as adbc
    except ImportError:
        print("adbc_driver_sqlite is not installed", file=sys.stderr)
        return 3
    with adbc.connect(request["database"]) as conn:
        for name, sql in request["queries"].items():
            cur = conn.cursor()
            # Types are inferred from the first batch: one batch for all rows makes a column that
            # starts with NULLs safe. The caller applies the contract's types afterwards.
            cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(2**30)})
            cur.execute(sql)
            table = cur.fetch_arrow_table()
            cur.close()
            path = str(Path(request["out"]) / f"{name}.arrow")
            with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
