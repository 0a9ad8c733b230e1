"""Columnar reads of a SQLite store, in a process of their own.

Apache Arrow's ADBC driver reads SQLite columnar (about twice the rows per second of ``sqlite3``,
and no Python object per value), but it bundles its own SQLite library. Two SQLite libraries in one
process break each other's POSIX file locks, which can corrupt a database (sqlite.org, "How To
Corrupt An SQLite Database", 2.2.1). So ADBC never runs in the process that holds ``sqlite3``
connections: ``read_columnar`` starts this module as child processes (two by default, reading
different tables at the same time), which write each result as an Arrow IPC file, and the parent
memory-maps them.

    python -m kundenwert.db.arrow_reader   (reads a JSON request on stdin)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa


def read_columnar(
    database: str,
    queries: dict[str, list[str]],
    weights: dict[str, float] | None = None,
    jobs: int = 2,
) -> dict[str, pa.Table] | None:
    """Run ``queries`` against the SQLite file ``database`` in child processes; None if that fails.

    Each table's query may come in parts (e.g. rowid ranges), concatenated here in the given order.
    The parts are spread over ``jobs`` children that read at the same time: heaviest first (by
    ``weights``, e.g. rows times columns), each to the least loaded child.
    """
    weights = weights or {}
    units = [(name, i) for name, parts in queries.items() for i in range(len(parts))]
    cost = {(n, i): (weights.get(n, 0.0) or 1.0) / len(queries[n]) for n, i in units}
    groups: list[list[tuple[str, int]]] = [[] for _ in range(max(1, min(jobs, len(units))))]
    load = [0.0] * len(groups)
    for unit in sorted(units, key=lambda u: -cost[u]):
        i = load.index(min(load))
        groups[i].append(unit)
        load[i] += cost[unit]
    with tempfile.TemporaryDirectory(prefix="kw-read-") as out:
        children = []
        ok = True
        try:
            for group in groups:
                child = subprocess.Popen(
                    [sys.executable, "-m", "kundenwert.db.arrow_reader"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
                children.append(child)
                request = {
                    "database": database,
                    "queries": {f"{n}.{i}": queries[n][i] for n, i in group},
                    "out": out,
                }
                child.stdin.write(json.dumps(request))  # a few kilobytes: never blocks
                child.stdin.close()
            for child in children:
                ok = child.wait(timeout=3600) == 0 and ok
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        if not ok:
            return None
        tables = {}
        for name, parts in queries.items():
            pieces = []
            for i in range(len(parts)):
                with pa.memory_map(str(Path(out) / f"{name}.{i}.arrow")) as source:
                    pieces.append(pa.ipc.open_file(source).read_all())
            tables[name] = _concat(pieces)
            if tables[name] is None:
                return None
        return tables


def _concat(pieces: list[pa.Table]) -> pa.Table | None:
    """The parts of one table as one; None if their types cannot be reconciled.

    The driver infers each part's types from its values, so a column that is all NULL in one part
    gets a guessed type there: it takes the type of a part that has values.
    """
    if len(pieces) == 1:
        return pieces[0]
    fixed = [[] for _ in pieces]
    for name in pieces[0].column_names:
        cols = [p.column(name) for p in pieces]
        typed = [c.type for c in cols if c.null_count < len(c)]
        for out, col in zip(fixed, cols, strict=True):
            empty = typed and col.null_count == len(col) and col.type != typed[0]
            out.append(pa.nulls(len(col), typed[0]) if empty else col)
    try:
        return pa.concat_tables(
            [pa.table(cols, names=pieces[0].column_names) for cols in fixed], promote_options="permissive"
        )
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return None


def _main() -> int:
    request = json.loads(sys.stdin.read())
    try:  # the low-level API: the DB-API layer imports pandas, which doubles the start-up time
        import adbc_driver_manager
        import adbc_driver_sqlite
    except ImportError:
        print("adbc_driver_sqlite is not installed", file=sys.stderr)
        return 3
    with (
        adbc_driver_sqlite.connect(request["database"]) as db,
        adbc_driver_manager.AdbcConnection(db) as conn,
    ):
        for name, sql in request["queries"].items():
            with adbc_driver_manager.AdbcStatement(conn) as stmt:
                # Types are inferred from the first batch: one batch for all rows makes a column
                # that starts with NULLs safe. The caller applies the contract's types afterwards.
                stmt.set_options(**{"adbc.sqlite.query.batch_rows": str(2**30)})
                stmt.set_sql_query(sql)
                stream, _ = stmt.execute_query()
                table = pa.RecordBatchReader._import_from_c(stream.address).read_all()
            path = str(Path(request["out"]) / f"{name}.arrow")
            with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
