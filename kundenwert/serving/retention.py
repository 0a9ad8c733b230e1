"""Retention: decisions and feedback events are kept for a period (``KUNDENWERT_RETENTION_DAYS``,
default 730 days) and then deleted by the service's maintenance schedule.

A decision id begins with its time in microseconds (``state.decision_id``), so the old decisions
are a range of the key index; feedback events go by the time they arrived. The contacts that
feedback wrote into the contact history are CRM data and stay (erasure removes them).
"""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from kundenwert.db.errors import map_exceptions
from kundenwert.db.schema import DECISIONS, FEEDBACK


def apply_retention(engine: sa.Engine, days: int, now: pd.Timestamp | None = None) -> dict[str, int]:
    """Delete the decisions and feedback events older than ``days``; rows deleted per table."""
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    before = now - pd.Timedelta(days=days)
    first_kept = f"{before.value // 1000:014x}"  # decision ids sort by their time
    with (
        map_exceptions("deleting decisions and feedback past retention", DECISIONS.name),
        engine.begin() as conn,
    ):
        decisions = conn.execute(DECISIONS.delete().where(DECISIONS.c.decision_id < first_kept)).rowcount
        events = conn.execute(FEEDBACK.delete().where(FEEDBACK.c.received_at < before.isoformat())).rowcount
    return {DECISIONS.name: int(decisions), FEEDBACK.name: int(events)}
