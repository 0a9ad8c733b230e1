"""Per-key rate limits: a token bucket per API key, its rate and burst set per role
(``KUNDENWERT_RATE_LIMITS``). A request takes one token; an empty bucket answers 429 with
``Retry-After``, the seconds until the next token.

The buckets live in the memory of each worker process and are touched only on the event loop
(``deps.caller`` is ``async``): a check is a dict lookup and some arithmetic, no lock, no store
read. With ``--workers N`` every worker keeps its own buckets, so a key's effective limit is up
to N times the configured one (the kernel spreads connections over the workers; a client with
one keep-alive connection stays on one worker). Sharing them through the store would cost a
write per request, more than a next-best-action decision itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

from kundenwert.errors import ConfigurationError


class TokenBuckets:
    """One bucket per key id: ``burst`` tokens at most, refilled at ``rate`` per second.

    Parameters
    ----------
    limits:
        role -> (rate per second, burst); a role missing or mapped to None is not limited.
    clock:
        Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        limits: Mapping[str, tuple[float, float] | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = {role: (float(v[0]), float(v[1])) for role, v in limits.items() if v is not None}
        self.clock = clock
        self._buckets: dict[str, list[float]] = {}  # key id -> [tokens, at]

    def take(self, key_id: str, role: str) -> float:
        """Take a token for ``key_id``: 0.0 when it got one, else the seconds until one is there
        (nothing is taken then)."""
        limit = self.limits.get(role)
        if limit is None:
            return 0.0
        rate, burst = limit
        now = self.clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            self._buckets[key_id] = [burst - 1.0, now]
            return 0.0
        tokens = bucket[0] + (now - bucket[1]) * rate
        if tokens > burst:
            tokens = burst
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / rate

    @staticmethod
    def retry_after(wait: float) -> str:
        """``Retry-After`` for a wait of ``wait`` seconds: whole seconds (RFC 9110), at least 1."""
        return str(max(1, math.ceil(wait)))


def buckets_from_settings() -> TokenBuckets:
    """The buckets the settings ask for (``KUNDENWERT_RATE_LIMITS`` over the defaults)."""
    from kundenwert.serving.keys import ROLES
    from kundenwert.settings import get_settings

    limits = get_settings().resolved_rate_limits()  # an invalid value: ConfigurationError
    unknown = sorted(set(limits) - set(ROLES))
    if unknown:
        raise ConfigurationError(
            f"KUNDENWERT_RATE_LIMITS names unknown role(s) {', '.join(unknown)}; roles are: {', '.join(ROLES)}"
        )
    return TokenBuckets(limits)
