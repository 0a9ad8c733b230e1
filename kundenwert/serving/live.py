"""The live state a decision needs beyond the models: consent, contact pressure and ignored offers
at the moment of the decision (not at the snapshot's cutoff: a consent withdrawn this morning
counts this morning).

Contacts that count are outbound and not held out in a control group (a control member was not
contacted). An offer is ignored when its contact is older than the response window and its outcome
is none or opened (or missing); ``ignored_in_a_row`` counts them since the last contact of the same
action that was answered: clicked, responded or converted. An unsubscribe or a bounce is no answer
(it neither counts as ignored nor starts the count again): the consent record it leaves stops the
channel instead (``kundenwert.serving.feedback``).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import numpy as np
import pandas as pd
import sqlalchemy as sa

from kundenwert.db.backends import RawStatement, backend_for
from kundenwert.db.errors import map_exceptions
from kundenwert.db.schema import LIVE_CHANGES, TABLE_DEFS
from kundenwert.features.consent import consent_of_records, consent_state
from kundenwert.features.contract import MARKETING_CHANNELS
from kundenwert.serving.arbitration import LiveOne

DAY = pd.Timedelta(days=1)
IGNORED = ("none", "opened")
ANSWERED = ("clicked", "responded", "converted")


def _utc(t) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")


def consent_now(consents: pd.DataFrame, now) -> pd.DataFrame:
    """Permitted channels and ``objection`` per customer with any record (records up to ``now``)."""
    state = consent_state(consents, _utc(now), channels=MARKETING_CHANNELS, inclusive=True)
    return state[[*MARKETING_CHANNELS, "objection"]]


def _outbound(contacts: pd.DataFrame, now: pd.Timestamp) -> pd.DataFrame:
    c = contacts[(contacts["contacted_at"] <= now) & (contacts["direction"] == "outbound")]
    control = c["is_control"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    return c[~control]


def contact_pressure(contacts: pd.DataFrame, now) -> pd.DataFrame:
    """Per (customer_id, channel): ``contacts_7d``, ``contacts_30d`` and ``days_since_last``."""
    now = _utc(now)
    c = _outbound(contacts, now)
    age = ((now - c["contacted_at"]) / DAY).to_numpy(dtype="float64")
    frame = pd.DataFrame(
        {
            "customer_id": c["customer_id"].to_numpy(),
            "channel": c["channel"].to_numpy(),
            "in_7d": age < 7,
            "in_30d": age < 30,
            "age": age,
        }
    )
    g = frame.groupby(["customer_id", "channel"], sort=False)
    return pd.DataFrame(
        {
            "contacts_7d": g["in_7d"].sum(),
            "contacts_30d": g["in_30d"].sum(),
            "days_since_last": g["age"].min(),
        }
    ).astype({"contacts_7d": "int64", "contacts_30d": "int64"})


def ignored_offers(contacts: pd.DataFrame, now, response_window: int = 14) -> pd.DataFrame:
    """Per (customer_id, action_id): ``ignored_in_a_row``, the ignored contacts of the action since
    its last answered one (only actions with at least one ignored contact are listed)."""
    now = _utc(now)
    c = _outbound(contacts, now)
    c = c[c["action_id"].notna()]
    matured = (c["contacted_at"] <= now - response_window * DAY).to_numpy()
    outcome = c["outcome"].astype("object").to_numpy()
    ignored = matured & (pd.isna(outcome) | np.isin(outcome, IGNORED))
    answered = np.isin(outcome, ANSWERED)
    frame = pd.DataFrame(
        {
            "customer_id": c["customer_id"].to_numpy(),
            "action_id": c["action_id"].astype(str).to_numpy(),
            "at": c["contacted_at"].to_numpy(),
            "ignored": ignored,
            "answered": answered,
        }
    ).sort_values(["customer_id", "action_id", "at"], kind="stable")
    keys = ["customer_id", "action_id"]
    # contacts after the last answered one: a running count of answers, compared with its total
    answers_so_far = frame.groupby(keys, sort=False)["answered"].cumsum()
    total = frame.groupby(keys, sort=False)["answered"].transform("sum")
    after_last_answer = (answers_so_far == total).to_numpy() & ~frame["answered"].to_numpy()
    frame = frame[after_last_answer & frame["ignored"].to_numpy()]
    out = frame.groupby(keys, sort=False).size().rename("ignored_in_a_row").to_frame()
    return out


# ---------------------------------------------------------------------------------- one customer
# The same rules as above on one customer's rows, in plain Python: what a single request needs
# (pandas costs milliseconds per call; these cost microseconds). A test holds both equal on every
# customer of a world.

_US_PER_DAY = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(value) -> int:
    """A stored instant as integer microseconds (SQLite keeps them so; PostgreSQL gives datetimes)."""
    if isinstance(value, datetime):
        return (value - _EPOCH) // timedelta(microseconds=1)
    return int(value)


class Prepared(NamedTuple):
    """One customer's live rows ready for ``live_of_prepared``: consents as (recorded_at,
    channel, granted, double_opt_in), contacts that count (outbound, not held out) as
    (contacted_at, channel, action_id, outcome), instants in microseconds, each sorted by time."""

    consents: list[tuple]
    contacts: list[tuple]
    exists: bool = True  # the customer is in the store (false: never was, or erased)


def prepare_rows(consents: list[tuple], contacts: list[tuple], exists: bool = True) -> Prepared:
    """``consents`` as (channel, granted, recorded_at, double_opt_in), ``contacts`` as
    (contacted_at, channel, direction, action_id, is_control, outcome), as ``LiveReader`` reads
    them; sorted stably, as the batch rules sort."""
    return Prepared(
        sorted(((_us(r[2]), r[0], r[1], r[3]) for r in consents), key=_first),
        sorted(
            ((_us(r[0]), r[1], r[3], r[5]) for r in contacts if r[2] == "outbound" and not r[4]), key=_first
        ),
        exists,
    )


def _first(row: tuple):
    return row[0]


@functools.lru_cache(maxsize=64)
def _positions(channels: tuple[str, ...]) -> dict[str, int]:
    return {ch: j for j, ch in enumerate(channels)}


def live_of_prepared(
    rows: Prepared, now_us: int, channels: list[str], action_ids: list[str], response_window: int = 14
) -> LiveOne:
    """The live state of one customer at ``now_us`` (rows after it do not count yet)."""
    permitted, objection = consent_of_records(  # the consent rule; records after now do not count
        ((r[1], bool(r[2]), bool(r[3])) for r in rows.consents if r[0] <= now_us), channels
    )
    position = _positions(tuple(channels))
    c7, c30 = [0.0] * len(channels), [0.0] * len(channels)
    since = [np.inf] * len(channels)
    matured_before = now_us - response_window * _US_PER_DAY
    per_action: dict[str, int] = {}
    for at, channel, action_id, outcome in rows.contacts:
        if at > now_us:
            break
        j = position.get(channel)
        if j is not None:
            age = (now_us - at) / _US_PER_DAY
            c7[j] += age < 7
            c30[j] += age < 30
            since[j] = min(since[j], age)
        if action_id is None:
            continue
        if outcome in ANSWERED:  # the count starts again
            per_action[action_id] = 0
        elif at <= matured_before and (outcome is None or outcome in IGNORED):
            per_action[action_id] = per_action.get(action_id, 0) + 1
    return LiveOne(
        objection=objection,
        consent=permitted,
        contacts_7d=c7,
        contacts_30d=c30,
        days_since_last=since,
        ignored=[float(per_action.get(a, 0)) for a in action_ids],
    )


class LiveReader:
    """One customer's consent and contact rows, read fast for a request: two statements on an
    index through a pooled raw connection (any thread may call)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        consents, contacts, customers = (TABLE_DEFS[t] for t in ("consents", "contacts", "customers"))
        who: sa.BindParameter[str] = sa.bindparam("customer_id")
        self._consents = RawStatement(
            engine,
            sa.select(
                consents.c.channel, consents.c.granted, consents.c.recorded_at, consents.c.double_opt_in
            ).where(consents.c.customer_id == who),
        )
        self._contacts = RawStatement(
            engine,
            sa.select(
                contacts.c.contacted_at,
                contacts.c.channel,
                contacts.c.direction,
                contacts.c.action_id,
                contacts.c.is_control,
                contacts.c.outcome,
            ).where(contacts.c.customer_id == who),  # sorted by time in prepare_rows, as in batch
        )
        self._exists = RawStatement(
            engine, sa.select(customers.c.customer_id).where(customers.c.customer_id == who)
        )

    @staticmethod
    def _fetch(cur, statements: tuple[RawStatement, ...], customer_id: str) -> list[list[tuple]]:
        values = {"customer_id": customer_id}
        out = []
        for st in statements:
            cur.execute(st.sql, st.params(values))
            out.append(cur.fetchall())
        return out

    def _run(self, *statements: RawStatement, customer_id: str) -> list[list[tuple]]:
        # a locked or unreachable store is our StoreUnavailable (a 503), not a driver error
        with map_exceptions("reading a customer's consents and contacts"):
            return self._run_raw(statements, customer_id)

    def _run_raw(self, statements: tuple[RawStatement, ...], customer_id: str) -> list[list[tuple]]:
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            out = self._fetch(cur, statements, customer_id)
            cur.close()
            return out
        finally:
            conn.close()  # back to the pool (rolled back there)

    def rows_on(self, cur, customer_id: str) -> tuple[list[tuple], list[tuple], bool]:
        """(consent rows, contact rows, whether the customer exists) of one customer read on
        ``cur``, as ``prepare_rows`` takes them."""
        consents, contacts, found = self._fetch(
            cur, (self._consents, self._contacts, self._exists), customer_id
        )
        return consents, contacts, bool(found)

    def rows(self, customer_id: str) -> tuple[list[tuple], list[tuple], bool]:
        """``rows_on`` a pooled connection."""
        consents, contacts, found = self._run(
            self._consents, self._contacts, self._exists, customer_id=customer_id
        )
        return consents, contacts, bool(found)

    def exists(self, customer_id: str) -> bool:
        return bool(self._run(self._exists, customer_id=customer_id)[0])


class LiveCache:
    """Customers' consent and contact rows kept in memory between requests, never stale: each
    call first asks the store's change log (``kw_live_changes``, filled by triggers on every
    write to consents and contacts, whoever writes) for its newest ``seq``, one index probe; when
    it moved, the customers named since are dropped (all of them after a bulk import, or when
    more than ``catch_up`` changes came in). A change committed before the call is therefore
    always seen. Rows of a customer not held are read through ``reader``'s statements.

    Whatever else a service keeps per customer (its online scores) follows the same log: each
    callable in ``listeners`` is called, under the cache's lock, with the ids named since (None:
    anyone may have changed). ``sync`` catches up without reading a customer.

    One dedicated connection (not the pool's: no checkout and rollback per request), used under a
    lock; any thread may call. On a database without the change log's triggers every call reads.
    """

    def __init__(self, reader: LiveReader, capacity: int = 200_000, catch_up: int = 10_000) -> None:
        self.reader, self.capacity, self.catch_up = reader, capacity, catch_up
        engine = reader.engine
        self.enabled = backend_for(engine).has_change_log
        self._top = RawStatement(engine, sa.select(sa.func.max(LIVE_CHANGES.c.seq)))
        self._since = RawStatement(
            engine,
            sa.select(LIVE_CHANGES.c.customer_id).where(LIVE_CHANGES.c.seq > sa.bindparam("seen")),
        )
        self._lock = threading.Lock()
        self._conn = self._cur = None
        self._rows: dict[str, Prepared] = {}
        self._seen: int | None = None
        self.hits = self.misses = self.clears = 0
        self.listeners: list[Callable[[list[str] | None], None]] = []

    def rows(self, customer_id: str) -> Prepared:
        """The live rows of one customer as they are in the store now, prepared."""
        if not self.enabled:
            return prepare_rows(*self.reader.rows(customer_id))
        return self._locked(self._rows_of, customer_id)

    def sync(self) -> None:
        """Catch up with the change log now (drop what changed, tell the listeners)."""
        if not self.enabled:
            self._tell(None)  # no log: anything may have changed
            return
        self._locked(lambda _: self._probe(), None)

    def _locked(self, work, arg):
        with map_exceptions("reading the change log and live rows", LIVE_CHANGES.name), self._lock:
            for attempt in (0, 1):
                try:
                    return work(arg)
                except Exception:
                    self._forget()  # a broken connection: start again from nothing
                    if attempt:
                        raise
        raise AssertionError("unreachable")

    def _probe(self):
        cur = self._cursor()
        cur.execute(self._top.sql, self._top.params({}))
        top = cur.fetchall()[0][0]  # all: a statement left unfinished keeps its read snapshot open
        if top != self._seen:
            self._catch_up(cur, top)
        return cur

    def _rows_of(self, customer_id: str) -> Prepared:
        cur = self._probe()
        hit = self._rows.get(customer_id)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        fresh = prepare_rows(*self.reader.rows_on(cur, customer_id))
        if len(self._rows) >= self.capacity:
            self._rows.clear()
        hit = self._rows[customer_id] = fresh
        return hit

    def _catch_up(self, cur, top: int | None) -> None:
        seen = self._seen
        if seen is None or top is None or top < seen or top - seen > self.catch_up:
            self._clear()
        else:
            cur.execute(self._since.sql, self._since.params({"seen": seen}))
            changed = [r[0] for r in cur.fetchall()]
            if any(c is None for c in changed):  # a bulk write or an erasure: anyone may have changed
                self._clear()
            else:
                for c in changed:
                    self._rows.pop(c, None)
                self._tell(changed)
        self._seen = top

    def _tell(self, changed: list[str] | None) -> None:
        for listener in self.listeners:
            listener(changed)

    def _clear(self) -> None:
        if self._rows:
            self.clears += 1
        self._rows.clear()
        self._tell(None)

    def _cursor(self):
        if self._cur is None:
            conn = self.reader.engine.raw_connection()
            conn.detach()  # ours for good: the pool neither counts nor resets it
            # PostgreSQL: autocommit, no transaction left open between requests
            backend_for(self.reader.engine).prepare_dedicated(conn.dbapi_connection)
            self._conn, self._cur = conn, conn.cursor()
        return self._cur

    def _forget(self) -> None:
        conn, self._conn, self._cur = self._conn, None, None
        self._rows.clear()
        self._tell(None)
        self._seen = None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._forget()
