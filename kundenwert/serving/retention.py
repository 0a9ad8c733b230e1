"""Retention: decisions and feedback events are kept for a period (``KUNDENWERT_RETENTION_DAYS``,
default 730 days) and then deleted by the service's maintenance schedule.

Decisions go by the time they were made, feedback events by the time they arrived (older decision
ids are random, so the ids' time prefix is not used); events whose decision is gone go with it. The contacts that
feedback wrote into the contact history are CRM data and stay (erasure removes them).
"""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from kundenwert.db.errors import map_exceptions
from kundenwert.db.schema import DECISIONS, FEEDBACK


def apply_retention(engine: sa.Engine, days: int, now: pd.Timestamp | None = None) -> dict[str, int]:
    """Delete the decisions made and the feedback events received more than ``days`` ago, and the
    events whose decision is gone; rows deleted per table."""
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    now = now.tz_localize("UTC") if now.tz is None else now.tz_convert("UTC")
    # both tables keep their instants as ISO text in UTC with milliseconds: text order is time order
    before = (now - pd.Timedelta(days=days)).isoformat(timespec="milliseconds")
    with (
        map_exceptions("deleting decisions and feedback past retention", DECISIONS.name),
        engine.begin() as conn,
    ):
        decisions = conn.execute(DECISIONS.delete().where(DECISIONS.c.created_at < before)).rowcount
        events = conn.execute(FEEDBACK.delete().where(FEEDBACK.c.received_at < before)).rowcount
        orphans = conn.execute(
            FEEDBACK.delete().where(~FEEDBACK.c.decision_id.in_(sa.select(DECISIONS.c.decision_id)))
        ).rowcount
    return {DECISIONS.name: int(decisions), FEEDBACK.name: int(events) + int(orphans)}
