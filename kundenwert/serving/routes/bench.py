"""The reference of ``bench/serve.py`` (``shared/benchmarks.md``): the next-best-action route's auth
and parameter validation with a constant answer. Mounted only with KUNDENWERT_BENCH_ENDPOINTS=1."""

from __future__ import annotations

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
