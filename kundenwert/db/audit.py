"""The audit log (``kw_audit``): who did what to which object, how many rows, when.

Written for every target-list creation and export, every erasure, every key created, rotated or
revoked. Who is the API key's id and role (never its secret) or, on the command line, ``cli``
and the operating-system user. An erasure is audited by its count only: no customer id, in
clear or hashed, goes into this log.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kundenwert.db.errors import map_exceptions
from kundenwert.db.migrate import ensure_tables
from kundenwert.db.schema import AUDIT
from kundenwert.errors import ConfigurationError

__all__ = ["ACTIONS", "AUDIT", "Actor", "actor_of", "cli_actor", "read_audit", "record"]

ACTIONS = (
    "target_list.create",
    "target_list.export",
    "customer.erase",
    "key.create",
    "key.revoke",
    "key.rotate",
)
MAX_READ = 1000  # rows per read of the log (the API's and the command's limit)


@dataclass(frozen=True)
class Actor:
    """Who acts: an API key (id and role) or the command line (``key_id`` None, role ``cli``)."""

    key_id: str | None
    role: str
    name: str = ""

    @property
    def label(self) -> str:
        if self.key_id is None:
            return f"cli:{self.name}" if self.name else "cli"
        return f"key {self.key_id} ({self.role})"


def cli_actor() -> Actor:
    """The command line, named by the operating-system user running it."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001  no user name (a container without one): still audited
        user = ""
    return Actor(None, "cli", user)


def actor_of(caller) -> Actor:
    """An ``Actor`` of anything with ``key_id`` and ``role`` (the service's ``Caller``)."""
    if isinstance(caller, Actor):
        return caller
    return Actor(caller.key_id, caller.role)


def record(
    target: sa.Engine | Connection,
    who,
    action: str,
    object_type: str,
    object_id: str | None = None,
    rows: int | None = None,
    detail: dict | None = None,
) -> None:
    """Append one audit row; on a ``Connection`` it joins that transaction (the audited change
    and its audit row commit together or not at all)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; actions are: {', '.join(ACTIONS)}")
    a = actor_of(who)
    values = {
        "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "key_id": a.key_id,
        "role": a.role,
        "actor": a.label[:200],
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "rows": rows,
        "detail": json.dumps(detail, sort_keys=True) if detail else None,
    }
    if isinstance(target, Connection):
        target.execute(AUDIT.insert().values(**values))
        return
    ensure_tables(target, AUDIT)
    with map_exceptions("writing the audit log", AUDIT.name), target.begin() as conn:
        conn.execute(AUDIT.insert().values(**values))


def since_instant(since: str) -> str:
    """``since`` (an ISO date or instant; UTC unless it says otherwise) in the form the log stores,
    so that comparing the text compares the instants (``...Z`` and ``...+00:00`` sort apart)."""
    try:
        at = datetime.fromisoformat(since.strip())
    except ValueError:
        raise ConfigurationError(
            f"since {since!r} is not an ISO date or instant (2026-12-01, 2026-12-01T09:30:00Z)"
        ) from None
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


def read_audit(
    engine: sa.Engine,
    *,
    action: str | None = None,
    since: str | None = None,
    limit: int = 1000,
) -> list[dict]:
    """Audit rows, newest first (``action``: only these; ``since``: ISO date or instant, inclusive;
    at most ``limit`` rows, 1 to ``MAX_READ``)."""
    if action and action not in ACTIONS:
        raise ConfigurationError(f"unknown audit action {action!r}; actions are: {', '.join(ACTIONS)}")
    if not 1 <= limit <= MAX_READ:
        raise ConfigurationError(f"limit {limit} is out of range: give 1 to {MAX_READ}")
    ensure_tables(engine, AUDIT)
    stmt = sa.select(AUDIT).order_by(AUDIT.c.audit_id.desc()).limit(limit)
    if action:
        stmt = stmt.where(AUDIT.c.action == action)
    if since:
        stmt = stmt.where(AUDIT.c.at >= since_instant(since))
    with map_exceptions("reading the audit log", AUDIT.name), engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
    for r in rows:
        r["detail"] = json.loads(r["detail"]) if r["detail"] else None
    return rows
