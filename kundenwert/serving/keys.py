"""API keys with roles. A key is shown once when created (``kw_<key id>_<secret>``); the store keeps
the key id, the SHA-256 of the secret (the secret is 32 random bytes: a slow password hash adds
nothing), the role, a name and an optional expiry. Verification looks the id up and compares
digests in constant time.

Creating, rotating and revoking a key each write an audit row (``kundenwert.db.audit``) in the
transaction that changes the key: the key id, role and name, never the secret or its hash. A
running service reads the keys again every ``REFRESH_SECONDS`` off the event loop
(``KeyRing.keep_fresh``), so a revoked key is refused within about a second without a reload;
expiry is checked at the moment of use.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kundenwert.db.audit import Actor, cli_actor, record
from kundenwert.db.errors import map_exceptions
from kundenwert.db.migrate import ensure_tables
from kundenwert.db.schema import API_KEYS as KEYS
from kundenwert.db.schema import AUDIT
from kundenwert.errors import ConfigurationError, KundenwertError
from kundenwert.experiments.registry import hide_credentials

ROLES = ("sales", "marketing", "campaign", "data_science", "admin")
REFRESH_SECONDS = 1.0  # a revoked key is refused by a running service after at most this (plus a read)

log = logging.getLogger("kundenwert.serving.keys")


class KeyNotFound(KundenwertError):
    """No API key has this id."""

    http_status = 404


@dataclass(frozen=True)
class Caller:
    key_id: str
    role: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds")


_SPAN = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_span(text: str, option: str = "--grace") -> timedelta:
    """``90d``, ``12h``, ``30m``, ``2w``, ``45s`` as a ``timedelta`` (m: minutes)."""
    found = _SPAN.match(text)
    if found is None:
        raise ConfigurationError(
            f"{option} {text!r} is not a duration: give a number and a unit (s, m, h, d or w), e.g. 90d or 1h"
        )
    return timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})


def parse_expiry(text: str, now: datetime | None = None, option: str = "--expires") -> datetime:
    """When a key given ``--expires text`` stops working: a duration from now (``90d``, ``12h``) or
    an ISO date (the key stops at 00:00 UTC that day) or instant (UTC unless it says otherwise)."""
    now = now or _now()
    if _SPAN.match(text):
        at = now + parse_span(text, option)
    else:
        try:
            at = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ConfigurationError(
                f"{option} {text!r} is neither a duration (90d, 12h) nor an ISO date or instant "
                "(2027-01-01, 2027-01-01T12:00:00Z)"
            ) from None
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
    if at <= now:
        raise ConfigurationError(f"{option} {text!r} is not in the future ({_iso(at)}); give a later time")
    return at.astimezone(UTC)


def _when(expires: str | datetime | None) -> datetime | None:
    """An expiry given as ``--expires`` text or a ``datetime`` (UTC when naive), in the future."""
    if expires is None:
        return None
    if isinstance(expires, str):
        return parse_expiry(expires)
    at = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
    if at <= _now():
        raise ConfigurationError(f"the expiry {_iso(at)} is not in the future; give a later time")
    return at.astimezone(UTC)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ConfigurationError(f"unknown role {role!r}; roles are: {', '.join(ROLES)}")


def _insert(
    conn: Connection, role: str, name: str, expires: datetime | None, now: datetime
) -> tuple[str, str]:
    """(key id, the full key) of a new key written on ``conn``."""
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    conn.execute(
        KEYS.insert().values(
            key_id=key_id,
            secret_sha256=_digest(secret),
            role=role,
            name=name,
            created_at=_iso(now),
            expires_at=_iso(expires) if expires else None,
            revoked=False,
        )
    )
    return key_id, f"kw_{key_id}_{secret}"


def _row(conn: Connection, key_id: str):
    found = conn.execute(sa.select(KEYS).where(KEYS.c.key_id == key_id)).first()
    if found is None:
        raise KeyNotFound(f"no API key has the id {key_id!r}; `kundenwert keys list` shows the ids")
    return found


def create_key(
    engine: sa.Engine,
    role: str,
    name: str = "",
    *,
    expires: str | datetime | None = None,
    who: Actor | None = None,
) -> str:
    """A new key for ``role``; the only time the full key is available.

    Parameters
    ----------
    expires:
        When it stops working (a ``datetime`` or ``--expires`` text: ``90d``, ``2027-01-01``);
        None: never.
    who:
        Who creates it, for the audit log; default the command line (``cli_actor()``).
    """
    _check_role(role)
    at = _when(expires)
    ensure_tables(engine, KEYS, AUDIT)
    now = _now()
    with map_exceptions("storing the new key", KEYS.name), engine.begin() as conn:
        key_id, key = _insert(conn, role, name, at, now)
        detail = {"role": role, "name": name, "expires_at": _iso(at) if at else None}
        record(conn, who or cli_actor(), "key.create", "api_key", key_id, detail=detail)
    return key


def revoke_key(engine: sa.Engine, key_id: str, *, who: Actor | None = None) -> bool:
    """Revoke a key now: True, or False when it was revoked already (nothing changes, nothing is
    audited); ``KeyNotFound`` for an unknown id."""
    ensure_tables(engine, KEYS, AUDIT)
    with map_exceptions("revoking the key", KEYS.name), engine.begin() as conn:
        old = _row(conn, key_id)
        if old.revoked:
            return False
        conn.execute(
            KEYS.update().where(KEYS.c.key_id == key_id).values(revoked=True, revoked_at=_iso(_now()))
        )
        detail = {"role": old.role, "name": old.name}
        record(conn, who or cli_actor(), "key.revoke", "api_key", key_id, detail=detail)
    return True


def rotate_key(
    engine: sa.Engine,
    key_id: str,
    *,
    grace: str | timedelta | None = None,
    expires: str | datetime | None = None,
    who: Actor | None = None,
) -> tuple[str, str | None]:
    """A new key with the role and name of ``key_id``, which is revoked in the same transaction.

    Parameters
    ----------
    grace:
        Let the old key work this much longer (``1h`` or a ``timedelta``): it then expires instead
        of being revoked now. None: revoked at once.
    expires:
        The new key's expiry; default the old key's lifetime (expiry minus creation) from now,
        or never when the old key had none.

    Returns
    -------
    The new full key (shown once) and the instant the old one stops (None: now).
    """
    span = parse_span(grace) if isinstance(grace, str) else grace
    at = _when(expires)
    ensure_tables(engine, KEYS, AUDIT)
    now = _now()
    with map_exceptions("rotating the key", KEYS.name), engine.begin() as conn:
        old = _row(conn, key_id)
        if old.revoked:
            raise ConfigurationError(
                f"the API key {key_id!r} is revoked; make a new one with `kundenwert keys create --role {old.role}`"
            )
        if at is None and old.expires_at:
            lifetime = datetime.fromisoformat(old.expires_at) - datetime.fromisoformat(old.created_at)
            at = now + lifetime
        new_id, key = _insert(conn, old.role, old.name, at, now)
        until = None
        change: dict[str, object]
        if span:
            ends = now + span
            if old.expires_at and datetime.fromisoformat(old.expires_at) < ends:
                ends = datetime.fromisoformat(old.expires_at)
            until = _iso(ends)
            change = {"expires_at": until}
        else:
            change = {"revoked": True, "revoked_at": _iso(now)}
        conn.execute(KEYS.update().where(KEYS.c.key_id == key_id).values(**change))
        detail = {
            "role": old.role,
            "name": old.name,
            "new_key_id": new_id,
            "old_key_until": until,
            "expires_at": _iso(at) if at else None,
        }
        record(conn, who or cli_actor(), "key.rotate", "api_key", key_id, detail=detail)
    return key, until


def list_keys(engine: sa.Engine) -> list[dict]:
    """Every key, oldest first: id, role, name, created, expires, revoked and a status (active,
    expired, revoked); never the secret's hash."""
    ensure_tables(engine, KEYS)
    cols = [
        KEYS.c[c] for c in ("key_id", "role", "name", "created_at", "expires_at", "revoked", "revoked_at")
    ]
    with map_exceptions("listing the keys", KEYS.name), engine.connect() as conn:
        rows = [
            dict(r)
            for r in conn.execute(sa.select(*cols).order_by(KEYS.c.created_at, KEYS.c.key_id)).mappings()
        ]
    now = _iso(_now())
    for r in rows:
        r["revoked"] = bool(r["revoked"])
        expired = r["expires_at"] is not None and r["expires_at"] <= now
        r["status"] = "revoked" if r["revoked"] else "expired" if expired else "active"
    return rows


def _epoch(iso: str | None) -> float:
    return datetime.fromisoformat(iso).timestamp() if iso else float("inf")


class KeyRing:
    """The valid keys in memory: read at start, every ``REFRESH_SECONDS`` by ``keep_fresh`` and on
    ``POST /v1/admin/reload``. A request never reads the store; expiry is checked as it is used."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        ensure_tables(self.engine, KEYS)
        self._keys: dict[str, tuple[str, str, float]] = {}
        self.refresh()

    def refresh(self) -> None:
        """Read the keys not revoked; on failure (``StoreError``) the keys in force stay."""
        cols = (KEYS.c.key_id, KEYS.c.secret_sha256, KEYS.c.role, KEYS.c.expires_at)
        with map_exceptions("reading the keys", KEYS.name), self.engine.connect() as conn:
            rows = conn.execute(sa.select(*cols).where(~KEYS.c.revoked)).all()
        self._keys = {r.key_id: (r.secret_sha256, r.role, _epoch(r.expires_at)) for r in rows}

    async def keep_fresh(self, seconds: float = REFRESH_SECONDS) -> None:
        """Refresh every ``seconds`` in a worker thread until cancelled. A failed refresh keeps the
        last good keys and is logged once (the message has no SQL, no key), and again on recovery."""
        failing = False
        while True:
            await asyncio.sleep(seconds)
            try:
                await asyncio.to_thread(self.refresh)
            except KundenwertError as exc:
                if not failing:
                    log.warning(
                        "refreshing the API keys failed, the last keys read stay in force: %s",
                        hide_credentials(str(exc)),
                    )
                failing = True
                continue
            except Exception as exc:  # noqa: BLE001  the refresh must survive a bad moment
                if not failing:
                    log.error("refreshing the API keys failed: %s", type(exc).__name__)
                failing = True
                continue
            if failing:
                log.info("API keys refreshed again")
                failing = False

    def check(self, key: str | None) -> tuple[Caller | None, str | None]:
        """(the caller, None) for a valid key, else (None, why): ``invalid`` when it is missing,
        malformed, unknown, revoked or wrong; ``expired`` only for the right secret of an expired key."""
        if not key or not key.startswith("kw_") or key.count("_") < 2:
            return None, "invalid"
        key_id, _, secret = key[3:].partition("_")
        found = self._keys.get(key_id)
        if found is None or not hmac.compare_digest(found[0], _digest(secret)):
            return None, "invalid"
        if time.time() >= found[2]:
            return None, "expired"
        return Caller(key_id, found[1]), None

    def check_id(self, key_id: str | None) -> tuple[Caller | None, str | None]:
        """``check`` for a key already verified once (a web app session names its key id, never
        the secret): (the caller, None) while the key is neither revoked nor expired, else (None,
        ``invalid`` or ``expired``). The same ring as every API request, so a revoked key ends its
        sessions within ``REFRESH_SECONDS``."""
        found = self._keys.get(key_id or "")
        if found is None:
            return None, "invalid"
        if time.time() >= found[2]:
            return None, "expired"
        return Caller(str(key_id), found[1]), None

    def verify(self, key: str | None) -> Caller | None:
        """The caller of a presented key, or None when it is missing, malformed, unknown, wrong,
        revoked or expired."""
        return self.check(key)[0]
