"""Feedback: what happened to each suggestion, stored once and written into the contact history.

Each event has an ``event_id`` chosen by the sender. A batch is one transaction:

- an event id seen before with the same payload is a duplicate and changes nothing;
- an event id seen before with a different payload refuses the whole batch (nothing written,
  the conflicting ids named);
- new events are inserted with the database's insert-or-ignore, so two requests racing with the
  same id store it once, and the batch commits before the answer: a 2xx means stored.

An event names what it reports on: a suggestion (``decision_id``, from a next-best-action or
score answer) or a member of a target list (``list_id`` and ``customer_id``: the list was sent
by a campaign tool). Every new event moves the contact of its (decision or list member, action,
channel) in the ``contacts`` table: the first event creates it (outbound, not control, the
action, the time of the event; a list's contact carries the list id as its ``campaign_id``, so
campaign results find it); later
ones raise its outcome along none < opened < clicked < converted < bounced < unsubscribed. The
next training reads those contacts like any other.

Legal signals act at once, in the same transaction as their event: an ``unsubscribed`` event
writes a consent record (granted false on that channel, the source naming the event) and so does
a hard bounce (``bounce`` "hard", the default for a bounce: the address does not exist; a soft
bounce, a full mailbox, changes nothing). The record is dated when the event arrives, so the
very next request sees it (the change log's triggers tell every service); a later consent
record (a new opt-in, a new address) lifts it, as the consent rule says.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Literal, NamedTuple

import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kundenwert.db.backends import backend_for
from kundenwert.db.errors import map_exceptions
from kundenwert.db.migrate import ensure_tables
from kundenwert.db.schema import DECISIONS, TABLE_DEFS, TARGET_LIST_MEMBERS, TARGET_LISTS
from kundenwert.db.schema import FEEDBACK as EVENTS
from kundenwert.db.store import Store
from kundenwert.errors import KundenwertError, StoreUnavailable
from kundenwert.serving.decisions import WRITER
from kundenwert.serving.schemas import Channel, Id, InstantText

OUTCOMES = {"sent": "none", "opened": "opened", "clicked": "clicked", "converted": "converted"}
OUTCOMES |= {"unsubscribed": "unsubscribed", "bounced": "bounced"}
STAGE = {
    "none": 0,
    "opened": 1,
    "clicked": 2,
    "responded": 3,
    "converted": 4,
    "bounced": 5,
    "unsubscribed": 6,
}


# commit feedback with synchronous=FULL on SQLite: an acknowledged event survives a power loss
# (bench/feedback.py measures what it costs against the engine's NORMAL)
DURABLE = True


class FeedbackConflict(KundenwertError):
    """An event id already stored with a different payload."""

    http_status = 409


class FeedbackInvalid(KundenwertError):
    """An event that does not belong to a suggestion of its decision (409: it contradicts what
    was decided)."""

    http_status = 409


class DecisionNotFound(FeedbackInvalid):
    """An event naming a decision the service does not hold (404)."""

    http_status = 404


_EXAMPLE = """An event, e.g.:

```json
{"event_id": "crm-7781-opened", "decision_id": "<the decision_id of a suggestion>",
 "action_id": "retention_voucher", "channel": "email", "outcome": "opened",
 "occurred_at": "2026-11-22T09:15:00Z"}
```

(An example in the description, not in ``examples``: a decision id is only known once a
suggestion was served, so no fixed example is a request the service accepts, and fuzzers take
``examples`` for valid requests.)"""


class Event(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "description": _EXAMPLE,
            # what ``_one_subject`` checks, as JSON Schema: a suggestion, or a list member
            "oneOf": [
                {
                    "required": ["decision_id"],
                    "properties": {
                        "decision_id": {"type": "string"},
                        "list_id": {"type": "null"},
                        "customer_id": {"type": "null"},
                    },
                },
                {
                    "required": ["list_id", "customer_id"],
                    "properties": {
                        "decision_id": {"type": "null"},
                        "list_id": {"type": "string"},
                        "customer_id": {"type": "string"},
                    },
                },
            ],
        },
    )

    event_id: str = Field(min_length=1, max_length=128, description="the sender's id: a repeat is a no-op")
    decision_id: str | None = Field(
        None, min_length=32, max_length=32, description="from the suggestion's answer (or give list_id)"
    )
    list_id: Id | None = Field(None, description="a target list that was sent (with customer_id)")
    customer_id: Id | None = Field(None, description="the list member the event is about (with list_id)")
    action_id: Id
    channel: Channel
    outcome: Literal["sent", "opened", "clicked", "converted", "unsubscribed", "bounced"]
    occurred_at: InstantText
    bounce: Literal["hard", "soft"] | None = Field(
        None,
        description="for outcome bounced: hard (the address does not exist; the default) or soft "
        "(a full mailbox: changes nothing); ignored with any other outcome",
    )

    @model_validator(mode="after")
    def _one_subject(self) -> Event:
        if self.decision_id is not None and (self.list_id is not None or self.customer_id is not None):
            raise ValueError("name a decision_id, or a list_id with a customer_id, not both")
        if self.decision_id is None and (self.list_id is None or self.customer_id is None):
            raise ValueError(
                "name the decision_id of a suggestion, or the list_id and customer_id of a list member"
            )
        return self

    @property
    def subject(self) -> tuple[str, str]:
        """What the event is about: ("decision", id) or ("list", list id)."""
        return ("decision", self.decision_id) if self.decision_id else ("list", str(self.list_id))

    @property
    def withdraws_consent(self) -> bool:
        """An unsubscribe, or a hard bounce: the channel is stopped for the customer."""
        return self.outcome == "unsubscribed" or (self.outcome == "bounced" and self.bounce != "soft")

    def digest(self) -> str:
        # fields left empty are left out: events stored before ``bounce`` existed keep their digest
        body = self.model_dump(mode="json", exclude={"event_id"}, exclude_none=True)
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


MAX_EVENTS = 1_000  # events per batch


class FeedbackBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)


def contact_id_of(decision_id: str, action_id: str, channel: str) -> str:
    return "kw-" + hashlib.sha1(f"{decision_id}|{action_id}|{channel}".encode()).hexdigest()[:24]


def list_contact_id_of(list_id: str, customer_id: str, action_id: str, channel: str) -> str:
    key = f"list|{list_id}|{customer_id}|{action_id}|{channel}"
    return "kw-" + hashlib.sha1(key.encode()).hexdigest()[:24]


def record_feedback(store: Store, events: list[Event]) -> dict[str, int]:
    """Store a batch (see the module doc); returns ``{"stored": n, "duplicates": m}``.

    On SQLite, batches of one process are written one at a time (SQLite has one writer), each
    taking the write lock first (``BEGIN IMMEDIATE``) and committed with ``synchronous=FULL``:
    a 2xx means stored, also across a power loss. PostgreSQL runs them concurrently and the
    unique event id settles races. A store locked by another writer for longer than the busy
    timeout is ``StoreUnavailable`` (a 503 with Retry-After), never a driver error."""
    with map_exceptions("recording feedback", EVENTS.name):
        if backend_for(store.engine).single_writer:
            from kundenwert.settings import get_settings

            if not WRITER.acquire(timeout=get_settings().busy_timeout):
                raise StoreUnavailable("the store is busy with another write of this service; retry later")
            try:
                return _record(store, events)
            finally:
                WRITER.release()
        return _record(store, events)


def _record(store: Store, events: list[Event]) -> dict[str, int]:
    engine = store.engine
    ensure_tables(
        engine, EVENTS, *((TARGET_LISTS, TARGET_LIST_MEMBERS) if any(e.list_id for e in events) else ())
    )
    insert_ignore = backend_for(engine).insert_ignore(EVENTS)
    seen: dict[str, str] = {}
    for e in events:  # the same id twice inside one batch must agree too
        if seen.setdefault(e.event_id, e.digest()) != e.digest():
            raise FeedbackConflict(f"event {e.event_id!r} appears twice in the batch with different payloads")
    unique = list({e.event_id: e for e in events}.values())
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    contacts = TABLE_DEFS["contacts"]
    with backend_for(engine).write_transaction(engine, durable=DURABLE) as conn:
        about = _subjects(conn, unique)
        before = {
            r.event_id: r.payload_sha256
            for r in conn.execute(
                sa.select(EVENTS.c.event_id, EVENTS.c.payload_sha256).where(
                    EVENTS.c.event_id.in_([e.event_id for e in unique])
                )
            )
        }
        conflicts = [e.event_id for e in unique if e.event_id in before and before[e.event_id] != e.digest()]
        if conflicts:
            raise FeedbackConflict(
                f"event id(s) already stored with a different payload: {', '.join(conflicts[:20])}"
            )
        new = [e for e in unique if e.event_id not in before]
        inserted = []
        for e in new:  # insert-or-ignore: a racing request with the same id wins or loses cleanly
            result = conn.execute(
                insert_ignore.values(
                    event_id=e.event_id,
                    payload_sha256=e.digest(),
                    decision_id=e.decision_id,
                    list_id=e.list_id,
                    customer_id=e.customer_id,
                    action_id=e.action_id,
                    channel=e.channel,
                    outcome=e.outcome,
                    occurred_at=e.occurred_at.isoformat(),
                    received_at=now,
                )
            )
            if result.rowcount == 1:
                inserted.append(e)
        # a racing duplicate that got in first: it must carry the same payload
        lost = [e for e in new if e not in inserted]
        if lost:
            stored = dict(
                conn.execute(
                    sa.select(EVENTS.c.event_id, EVENTS.c.payload_sha256).where(
                        EVENTS.c.event_id.in_([e.event_id for e in lost])
                    )
                ).all()
            )
            bad = [e.event_id for e in lost if stored.get(e.event_id) != e.digest()]
            if bad:
                raise FeedbackConflict(
                    f"event id(s) already stored with a different payload: {', '.join(bad[:20])}"
                )
        for e in inserted:
            _move_contact(conn, contacts, about[e.event_id], e)
        _withdraw(conn, [(about[e.event_id].customer_id, e) for e in inserted if e.withdraws_consent], now)
    return {"stored": len(inserted), "duplicates": len(events) - len(inserted)}


class _Subject(NamedTuple):
    """Where an event's contact goes: its customer, contact id and campaign (a list's id)."""

    customer_id: str
    contact_id: str
    campaign_id: str | None


def _subjects(conn, events: list[Event]) -> dict[str, _Subject]:
    """Per event id, the contact it moves; refuses (nothing written) an event naming a decision
    the service does not hold or that did not suggest its action and channel, or a list member
    who is not on the list, is in its control group, or was given another action or channel."""
    decisions = {e.decision_id for e in events if e.decision_id}
    rows = (
        conn.execute(
            sa.select(DECISIONS.c.decision_id, DECISIONS.c.customer_id, DECISIONS.c.suggestions).where(
                DECISIONS.c.decision_id.in_(decisions)
            )
        ).all()
        if decisions
        else []
    )
    known = {
        r.decision_id: (r.customer_id, {(s["action_id"], s["channel"]) for s in json.loads(r.suggestions)})
        for r in rows
    }
    members = _members(conn, [e for e in events if e.list_id])
    out: dict[str, _Subject] = {}
    for e in events:
        if e.decision_id:
            if e.decision_id not in known:
                raise DecisionNotFound(
                    f"event {e.event_id!r}: unknown decision_id {e.decision_id!r} (never made here, "
                    "deleted after the retention period, or its customer was erased)"
                )
            if (e.action_id, e.channel) not in known[e.decision_id][1]:
                raise FeedbackInvalid(
                    f"event {e.event_id!r}: decision {e.decision_id} did not suggest {e.action_id} on {e.channel}"
                )
            cid = contact_id_of(e.decision_id, e.action_id, e.channel)
            out[e.event_id] = _Subject(known[e.decision_id][0], cid, None)
            continue
        list_id, customer_id = str(e.list_id), str(e.customer_id)
        if list_id not in members["lists"]:
            raise DecisionNotFound(f"event {e.event_id!r}: no target list {list_id!r}")
        member = members["members"].get((list_id, customer_id))
        if member is None:
            raise DecisionNotFound(
                f"event {e.event_id!r}: customer {customer_id!r} is not on target list {list_id} "
                "(never was, or was erased)"
            )
        group, action_id = member
        channel = members["lists"][list_id]
        if group != "target":
            raise FeedbackInvalid(
                f"event {e.event_id!r}: customer {customer_id!r} is in the control group of list {list_id}: "
                "control members are never contacted (a contact would spoil the list's results)"
            )
        if (e.action_id, e.channel) != (action_id, channel):
            raise FeedbackInvalid(
                f"event {e.event_id!r}: list {list_id} gave customer {customer_id!r} {action_id} on {channel}, "
                f"not {e.action_id} on {e.channel}"
            )
        cid = list_contact_id_of(list_id, customer_id, e.action_id, e.channel)
        out[e.event_id] = _Subject(customer_id, cid, list_id)
    return out


def _members(conn, events: list[Event]) -> dict:
    """The lists (id -> channel) and members ((list, customer) -> (group, action)) the events name."""
    if not events:
        return {"lists": {}, "members": {}}
    list_ids = {str(e.list_id) for e in events}
    lists = {
        r.list_id: json.loads(r.request)["channel"]
        for r in conn.execute(
            sa.select(TARGET_LISTS.c.list_id, TARGET_LISTS.c.request).where(
                TARGET_LISTS.c.list_id.in_(list_ids)
            )
        )
    }
    m = TARGET_LIST_MEMBERS
    found = conn.execute(
        sa.select(m.c.list_id, m.c.customer_id, m.c.group, m.c.action_id).where(
            m.c.list_id.in_(list_ids), m.c.customer_id.in_({str(e.customer_id) for e in events})
        )
    )
    return {"lists": lists, "members": {(r.list_id, r.customer_id): (r.group, r.action_id) for r in found}}


def _withdraw(conn, events: list[tuple[str, Event]], received_at: str) -> None:
    """A consent record (granted false) per customer and channel of the withdrawing ``events``,
    dated when they arrived; inserted-or-ignored, so a record of the same instant stays one."""
    if not events:
        return
    consents = TABLE_DEFS["consents"]
    at = pd.Timestamp(received_at).to_pydatetime()
    insert = backend_for(conn).insert_ignore(consents)
    done = set()
    for customer_id, e in events:
        if (customer_id, e.channel) in done:
            continue
        done.add((customer_id, e.channel))
        what = "unsubscribed" if e.outcome == "unsubscribed" else "hard bounce"
        conn.execute(
            insert.values(
                customer_id=customer_id,
                channel=e.channel,
                granted=False,
                recorded_at=at,
                double_opt_in=False,
                source=f"kundenwert feedback: {what} (event {e.event_id})"[:1000],
            )
        )


def _move_contact(conn, contacts: sa.Table, subject: _Subject, e: Event) -> None:
    cid, customer_id = subject.contact_id, subject.customer_id
    outcome = OUTCOMES[e.outcome]
    at = pd.Timestamp(e.occurred_at)
    at = at.tz_localize("UTC") if at.tz is None else at.tz_convert("UTC")
    row = conn.execute(
        sa.select(contacts.c.outcome, contacts.c.contacted_at).where(contacts.c.contact_id == cid)
    ).first()
    if row is None:
        conn.execute(
            contacts.insert().values(
                contact_id=cid,
                customer_id=customer_id,
                contacted_at=at.to_pydatetime(),
                channel=e.channel,
                direction="outbound",
                action_id=e.action_id,
                campaign_id=subject.campaign_id,
                is_control=False,
                outcome=outcome,
            )
        )
        return
    changes = {}
    if STAGE.get(outcome, 0) > STAGE.get(row.outcome or "none", 0):
        changes["outcome"] = outcome
    if e.outcome == "sent" and at.to_pydatetime() < row.contacted_at:
        changes["contacted_at"] = at.to_pydatetime()
    if changes:
        conn.execute(contacts.update().where(contacts.c.contact_id == cid).values(**changes))
