"""API keys with roles. A key is shown once when created (``kw_<key id>_<secret>``); the store keeps
the key id, the SHA-256 of the secret (the secret is 32 random bytes: a slow password hash adds
nothing) and the role. Verification looks the id up and compares digests in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from kundenwert.db.errors import map_exceptions
from kundenwert.db.migrate import ensure_tables
from kundenwert.db.schema import API_KEYS as KEYS
from kundenwert.errors import ConfigurationError

ROLES = ("sales", "marketing", "campaign", "data_science", "admin")


@dataclass(frozen=True)
class Caller:
    key_id: str
    role: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(engine: sa.Engine, role: str, name: str = "") -> str:
    """A new key for ``role``; the only time the full key is available."""
    if role not in ROLES:
        raise ConfigurationError(f"unknown role {role!r}; roles are: {', '.join(ROLES)}")
    ensure_tables(engine, KEYS)
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    with map_exceptions("storing the new key", KEYS.name), engine.begin() as conn:
        conn.execute(
            KEYS.insert().values(
                key_id=key_id,
                secret_sha256=_digest(secret),
                role=role,
                name=name,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                revoked=False,
            )
        )
    return f"kw_{key_id}_{secret}"


def revoke_key(engine: sa.Engine, key_id: str) -> bool:
    ensure_tables(engine, KEYS)
    with map_exceptions("revoking the key", KEYS.name), engine.begin() as conn:
        return conn.execute(KEYS.update().where(KEYS.c.key_id == key_id).values(revoked=True)).rowcount > 0


class KeyRing:
    """The valid keys, read once and refreshed on demand (a revoked key stops at the next refresh)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.refresh()

    def refresh(self) -> None:
        ensure_tables(self.engine, KEYS)
        with map_exceptions("reading the keys", KEYS.name), self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(KEYS.c.key_id, KEYS.c.secret_sha256, KEYS.c.role).where(~KEYS.c.revoked)
            )
            self._keys = {r.key_id: (r.secret_sha256, r.role) for r in rows}

    def verify(self, key: str | None) -> Caller | None:
        """The caller of a presented key, or None when it is missing, malformed, unknown or wrong."""
        if not key or not key.startswith("kw_") or key.count("_") < 2:
            return None
        key_id, _, secret = key[3:].partition("_")
        found = self._keys.get(key_id)
        if found is None or not hmac.compare_digest(found[0], _digest(secret)):
            return None
        return Caller(key_id, found[1])
