"""Dependencies of the routes: the serving state and the caller's role. They are ``async``: they
do no I/O, and a plain ``def`` would cost a thread-pool hop on every request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from kundenwert.serving.keys import Caller
from kundenwert.serving.ratelimit import TokenBuckets

API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="a key from `kundenwert keys create`")


def serving_of(request: Request):
    """The serving state; 503 until the models are loaded."""
    state = request.app.state.serving
    if state is None:
        raise HTTPException(503, detail="models are not loaded yet")
    return state


async def get_state(request: Request):
    return serving_of(request)


async def caller(request: Request, key: Annotated[str | None, Security(API_KEY)] = None) -> Caller:
    """The caller of the presented key; 401 when it is missing, invalid, revoked or expired (the
    ring is in memory: no store read on a request); 429 with ``Retry-After`` when the key has used
    up its role's rate limit (``ratelimit``; checked after the key, so only valid keys have
    buckets, and before the role, so any flood of a valid key is limited)."""
    state = request.app.state
    found, why = state.keys.check(key)
    if found is None:
        detail = "API key expired" if why == "expired" else "missing or invalid API key"
        raise HTTPException(401, detail=detail, headers={"WWW-Authenticate": "X-API-Key"})
    wait = state.buckets.take(found.key_id, found.role)
    if wait:
        rate, burst = state.buckets.limits[found.role]
        raise HTTPException(
            429,
            detail=f"rate limit of this key exceeded ({rate:g} requests/s, burst {burst:g}, role "
            f"{found.role!r}); retry in {wait:.2f} s",
            headers={"Retry-After": TokenBuckets.retry_after(wait)},
        )
    return found


def allow(*roles: str):
    """A dependency that lets only ``roles`` (and admin) through: 403 for any other valid key."""
    permitted = {*roles, "admin"}

    async def check(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if who.role not in permitted:
            raise HTTPException(
                403, detail=f"role {who.role!r} may not do this; allowed: {', '.join(sorted(permitted))}"
            )
        return who

    return check
