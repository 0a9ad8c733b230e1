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

A batch that cannot commit (the store locked by another writer, unreachable) is tried again,
backing off, until it commits: a decision id handed out is never dropped. Meanwhile the log is
not ``healthy`` once its oldest uncommitted batch waits longer than ``max_lag`` seconds, and
``ServingState.record`` refuses new decisions (``StoreUnavailable``, a 503) before any id is
handed out. Only ``close`` gives up, after ``shutdown_timeout`` seconds, logging how many
decisions were lost (never their ids or customers). ``close`` may be called more than once and
from any thread; after it, ``add`` and ``flush`` refuse at once (``StoreUnavailable``, a 503): a
row is either queued before the writer's stop mark (and written) or refused before its id is
handed out.

On SQLite the writer shares ``WRITER`` with the feedback transactions of this process (SQLite
has one writer; a transaction that read first cannot wait for another). A decision whose customer
is no longer in the store when its batch commits (erased while it waited) is deleted in the same
transaction: an erasure leaves no decision behind. (On PostgreSQL an erasure committing in the
same milliseconds as the batch can still miss it: read committed sees neither side.)
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time

import sqlalchemy as sa

from kundenwert.db.backends import RawStatement, backend_for
from kundenwert.db.errors import map_exceptions
from kundenwert.db.migrate import ensure_tables
from kundenwert.db.schema import DECISIONS, TABLE_DEFS
from kundenwert.errors import StoreError, StoreUnavailable

log = logging.getLogger("kundenwert.serving")

WRITER = threading.Lock()

_COLUMNS = tuple(c.name for c in DECISIONS.columns)


class DecisionLog:
    """Queued decision rows, written in batches by one thread (see the module doc).

    Parameters
    ----------
    engine:
        The store's engine.
    interval:
        Seconds a batch gathers before it is written.
    batch:
        Most rows written in one transaction.
    max_lag:
        Seconds the oldest uncommitted batch may wait before the log is not ``healthy``.
    shutdown_timeout:
        Seconds ``close`` keeps trying to commit what is queued before it gives up.
    """

    def __init__(
        self,
        engine: sa.Engine,
        interval: float = 0.02,
        batch: int = 5_000,
        max_lag: float = 2.0,
        shutdown_timeout: float = 60.0,
    ) -> None:
        ensure_tables(engine, DECISIONS)
        self.engine, self.interval, self.batch = engine, interval, batch
        self.max_lag, self.shutdown_timeout = max_lag, shutdown_timeout
        self._backend = backend_for(engine)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = WRITER if self._backend.single_writer else threading.Lock()
        self._writing_since: float | None = None  # monotonic start of the batch not yet committed
        self._give_up_at: float | None = None  # set by ``close``
        self._closed = False
        # ``add`` and ``close`` under one lock: no row is queued behind the writer's stop mark
        self._closing = threading.Lock()
        self.lost = 0  # decisions given up on at shutdown
        self.failures = 0  # failed commits so far (each tried again)
        self.failures_of_batch = 0
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

    @property
    def lag(self) -> float:
        """Seconds the batch being written has waited for its commit (0: none waiting)."""
        since = self._writing_since
        return 0.0 if since is None else max(0.0, time.monotonic() - since)

    @property
    def healthy(self) -> bool:
        """The writer commits in time: no batch has waited longer than ``max_lag`` seconds."""
        return self.lag <= self.max_lag and self._give_up_at is None

    @property
    def closed(self) -> bool:
        return self._closed

    def check(self) -> None:
        """Raise ``StoreUnavailable`` while the writer cannot commit or after ``close`` (before ids
        are handed out)."""
        if self._closed:
            raise StoreUnavailable(
                "the decision log is closed (the service is shutting down): no decision can be "
                "recorded; retry later"
            )
        if not self.healthy:
            raise StoreUnavailable(
                f"the decision log has not committed for {self.lag:.1f} s (the store is locked or "
                "unreachable); retry later"
            )

    def add(self, rows: list[dict]) -> None:
        """Queue ``rows`` for the writer; ``StoreUnavailable`` once the log is closed (nothing queued).
        A row without ``candidates`` (nullable) is stored with none."""
        with self._closing:
            if self._closed:
                self.check()
            for r in rows:
                if "candidates" not in r:
                    r = {**r, "candidates": None}
                self._queue.put(r)

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every row added before this call is committed; ``StoreUnavailable`` at
        once while the writer is not ``healthy``, or when the commit takes ``timeout`` seconds."""
        done = threading.Event()
        with self._closing:
            self.check()
            self._queue.put(done)  # ahead of the stop mark: the writer sets it
        deadline = time.monotonic() + timeout
        while not done.wait(0.05):
            self.check()  # the writer stuck meanwhile: answer now, not at the timeout
            if time.monotonic() >= deadline:
                raise StoreUnavailable(
                    "the decision log did not commit in time (the store is busy); retry later"
                )

    def close(self, timeout: float | None = None) -> None:
        """Commit what is queued and stop the writer; after ``timeout`` (default
        ``shutdown_timeout``) seconds of failed commits the rest is given up (and counted)."""
        timeout = self.shutdown_timeout if timeout is None else timeout
        with self._closing:
            if not self._closed:  # the first close stops the writer; any other one waits with it
                self._closed = True
                self._give_up_at = time.monotonic() + timeout
                self._queue.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout + 30)

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
                self._write_until_committed(rows)
            for i in items:
                if isinstance(i, threading.Event):
                    i.set()
            if stop:
                return

    def _write_until_committed(self, rows: list[dict]) -> None:
        """Write one batch, trying again (backing off up to 2 s) until it commits; only after
        ``close``'s deadline is it given up."""
        self._writing_since = time.monotonic()
        self.failures_of_batch = 0
        pause = 0.05
        try:
            while True:
                try:
                    if self.failures_of_batch:
                        rows = self._not_stored(rows)  # a commit that failed to answer may have gone in
                    if rows:
                        self._write(rows)
                    return
                except Exception as exc:  # noqa: BLE001  the thread must live on; no personal data logged
                    self.failures += 1
                    self.failures_of_batch += 1
                    give_up = self._give_up_at
                    if give_up is not None and time.monotonic() >= give_up:
                        self.lost += len(rows)
                        log.error(
                            "gave up on %d decisions at shutdown: the store did not take them (%s)",
                            len(rows),
                            _why(exc),
                        )
                        return
                    if self.failures == 1 or self.failures % 20 == 0:
                        log.warning(
                            "could not record %d decisions yet, trying again: %s", len(rows), _why(exc)
                        )
                    time.sleep(pause)
                    pause = min(2.0, pause * 2)
        finally:
            self._writing_since = None

    def _not_stored(self, rows: list[dict]) -> list[dict]:
        """The rows of a batch whose ids the table does not hold."""
        ids = [r["decision_id"] for r in rows]
        stored: set[str] = set()
        with map_exceptions("reading decisions", DECISIONS.name), self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                stored.update(
                    conn.execute(
                        sa.select(DECISIONS.c.decision_id).where(DECISIONS.c.decision_id.in_(chunk))
                    ).scalars()
                )
        return [r for r in rows if r["decision_id"] not in stored]

    def _write(self, rows: list[dict]) -> None:
        with map_exceptions("recording decisions", DECISIONS.name), self._lock:
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
            except BaseException:
                with contextlib.suppress(Exception):  # a broken connection cannot roll back
                    conn.rollback()
                raise
            finally:
                conn.close()


def _why(exc: BaseException) -> str:
    """Our one-line message of a store error (no SQL, no ids), else the exception's class."""
    return str(exc) if isinstance(exc, StoreError) else type(exc).__name__
