"""Web app sessions: a signed cookie naming the API key's id (never its secret), an expiry and a
random session id; the CSRF token of every form is an HMAC of that session id.

The signing key is ``KUNDENWERT_SESSION_SECRET``, else ``<home>/session.key`` (made on first use,
mode 0600), so every worker of one installation accepts the others' cookies. The cookie is
signed, not encrypted: it holds nothing but the key id, the session id, the expiry and the ids
of the customers the user opened (the user's own "recently opened").
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from itsdangerous import BadSignature, URLSafeSerializer

from kundenwert.errors import ConfigurationError

COOKIE = "kw_session"
SALT = "kundenwert.app.session"
KEY_FILE = "session.key"
RECENT = 8  # customers kept in "recently opened"


@dataclass(frozen=True)
class Session:
    """One browser's session: ``key_id`` None until it signs in."""

    sid: str
    expires: float
    key_id: str | None = None
    recent: tuple[str, ...] = field(default_factory=tuple)

    def opened(self, customer_id: str) -> Session:
        """The session with ``customer_id`` first in "recently opened"."""
        recent = (customer_id, *(c for c in self.recent if c != customer_id))[:RECENT]
        return replace(self, recent=recent)


def session_secret() -> bytes:
    """``KUNDENWERT_SESSION_SECRET``, else the text of ``<home>/session.key`` (made when missing)."""
    from kundenwert.db.erasure import make_key_file
    from kundenwert.settings import get_settings

    settings = get_settings()
    if settings.session_secret is not None:
        text = settings.session_secret.get_secret_value().strip()
        if len(text) < 16:
            raise ConfigurationError(
                "KUNDENWERT_SESSION_SECRET is shorter than 16 characters: set a long random text or unset it"
            )
        return text.encode()
    path = Path(settings.home) / KEY_FILE
    if not path.exists():
        make_key_file(path)
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise ConfigurationError(f"the session key {path} is empty: delete it (sessions end) or restore it")
    return text.encode()


class Sessions:
    """Reads, writes and checks session cookies with one secret."""

    def __init__(self, secret: bytes, hours: float) -> None:
        self._secret = secret
        self._signer = URLSafeSerializer(secret, salt=SALT)
        self.seconds = hours * 3600.0

    def new(self) -> Session:
        """A fresh session, not signed in (the sign-in form's CSRF token is bound to it)."""
        return Session(sid=secrets.token_urlsafe(18), expires=time.time() + self.seconds)

    def read(self, cookie: str | None) -> Session | None:
        """The session of a cookie; None when it is missing, forged or past its expiry."""
        if not cookie:
            return None
        try:
            data = self._signer.loads(cookie)
            s = Session(
                sid=str(data["s"]),
                expires=float(data["e"]),
                key_id=data.get("k"),
                recent=tuple(str(c) for c in data.get("r", ())),
            )
        except (BadSignature, KeyError, TypeError, ValueError):
            return None
        return s if time.time() < s.expires else None

    def dump(self, s: Session) -> str:
        return self._signer.dumps({"s": s.sid, "e": s.expires, "k": s.key_id, "r": list(s.recent)})

    def csrf(self, s: Session) -> str:
        """The CSRF token of every form of session ``s``."""
        return hmac.new(self._secret, b"csrf:" + s.sid.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, s: Session | None, token: str | None) -> bool:
        return s is not None and bool(token) and hmac.compare_digest(self.csrf(s), str(token))
