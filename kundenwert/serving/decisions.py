"""The decision log: every answer with suggestions is recorded (``kw_decisions``) so that
feedback can refer to it and analysts can see what was offered.

A request does not wait for its decision's commit: ``DecisionLog.add`` queues the row and one
background thread writes what has queued in one transaction, at most ``interval`` seconds later
(group commit). A commit per request cost more than the rest of a next-best-action decision
together (about 0.15 ms of CPU and three pages written to the WAL each time); in batches each
decision costs about 15 microseconds. Decision ids begin with the time (``state.decision_id``),
so the key index grows at its end. The price: a crash loses the decisions of its last few
milliseconds; feedback quoting such an id is refused as unknown (422), never stored against a
wrong decision. ``flush`` waits until everything queued so far is committed: feedback calls it
first, so an event sent right after its decision always finds it.

On SQLite the writer shares ``WRITER`` with the feedback transactions of this process (SQLite
has one writer; a transaction that read first cannot wait for another). A decision whose customer
is no longer in the store when its batch commits (erased while it waited) is deleted in the same
transaction: an erasure leaves no decision behind. (On PostgreSQL an erasure committing in the
same milliseconds as the batch can still miss it: read committed sees neither side.)
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import sqlalchemy as sa

from kundenwert.db.backends import RawStatement, backend_for
from kundenwert.db.migrate import ensure_tables
from kundenwert.db.schema import DECISIONS, TABLE_DEFS

log = logging.getLogger("kundenwert.serving")

WRITER = threading.Lock()

_COLUMNS = tuple(c.name for c in DECISIONS.columns)


class DecisionLog:
    """Queued decision rows, written in batches by one thread (see the module doc)."""

    def __init__(self, engine: sa.Engine, interval: float = 0.02, batch: int = 5_000) -> None:
        ensure_tables(engine, DECISIONS)
        self.engine, self.interval, self.batch = engine, interval, batch
        self._backend = backend_for(engine)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = WRITER if self._backend.single_writer else threading.Lock()
        customers = TABLE_DEFS["customers"]
        # decision ids grow with time: the batch just written is the key range from its first id
        self._orphans = RawStatement(
            engine,
            DECISIONS.delete().where(
                DECISIONS.c.decision_id >= sa.bindparam("first"),
                ~sa.exists().where(customers.c.customer_id == DECISIONS.c.customer_id),
            ),
        )
        self._thread = threading.Thread(target=self._run, name="kundenwert-decisions", daemon=True)
        self._thread.start()

    def add(self, rows: list[dict]) -> None:
        for r in rows:
            self._queue.put(r)

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every row added before this call is committed."""
        done = threading.Event()
        self._queue.put(done)
        if not done.wait(timeout):
            from kundenwert.errors import StoreUnavailable

            raise StoreUnavailable("the decision log did not commit in time (the store is busy); retry later")

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            time.sleep(self.interval)  # let a batch gather
            items = [first]
            while len(items) < self.batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in items
            rows = [i for i in items if isinstance(i, dict)]
            if rows:
                self._write(rows)
            for i in items:
                if isinstance(i, threading.Event):
                    i.set()
            if stop:
                return

    def _write(self, rows: list[dict]) -> None:
        for attempt in range(3):
            try:
                with self._lock:
                    conn = self.engine.raw_connection()
                    try:
                        cur = conn.cursor()
                        # many rows per INSERT on SQLite, COPY on PostgreSQL (Backend.insert_rows)
                        self._backend.insert_rows(self.engine, cur, DECISIONS, _COLUMNS, rows)
                        # a customer erased while their decision waited in the queue: not stored
                        first = min(r["decision_id"] for r in rows)
                        cur.execute(self._orphans.sql, self._orphans.params({"first": first}))
                        conn.commit()
                        cur.close()
                    finally:
                        conn.close()
                return
            except Exception as exc:  # noqa: BLE001  the thread must live on; no personal data logged
                if attempt == 2:
                    log.error("could not record %d decisions: %s", len(rows), type(exc).__name__)
                    return
                time.sleep(0.05 * (attempt + 1))
