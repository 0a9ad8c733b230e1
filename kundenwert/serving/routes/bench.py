"""The reference of ``bench/serve.py`` (``shared/benchmarks.md``): the next-best-action route's auth
and parameter validation with a constant answer, and a header naming the worker process on every
answer (``WorkerHeader``). Mounted only with KUNDENWERT_BENCH_ENDPOINTS=1."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from kundenwert.serving.deps import allow

router = APIRouter(prefix="/v1/bench", tags=["bench"], include_in_schema=False)


@router.get("/customers/{customer_id}/bare", dependencies=[Depends(allow("sales", "data_science"))])
async def bare(
    customer_id: str,
    channel: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 3,
    explain: Annotated[bool, Query()] = False,
) -> dict:
    return {"customer_id": customer_id, "suggestions": []}


class WorkerHeader:
    """Every answer names the worker process that made it (``X-Kundenwert-Worker``: its pid), so a
    test of ``serve --workers N`` can see that every worker served. A plain ASGI middleware."""

    def __init__(self, app) -> None:
        self.app = app
        self.header = (b"x-kundenwert-worker", str(os.getpid()).encode())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self.header]
            await send(message)

        await self.app(scope, receive, sending)
