"""The second reference of ``bench/serve.py`` (``shared/benchmarks.md``): a minimal FastAPI app
with the same kind of API-key check (a dict lookup of the ``X-API-Key`` header) and a constant
JSON answer on the next-best-action path, served by uvicorn with uvloop and httptools. The key it
accepts comes from ``KW_BENCH_KEY``.

    KW_BENCH_KEY=... uvicorn --app-dir bench minimal_app:app --loop uvloop --http httptools
"""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Security
from fastapi.security import APIKeyHeader

KEYS = {os.environ.get("KW_BENCH_KEY", ""): "sales"}
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False)


async def caller(key: Annotated[str | None, Security(API_KEY)] = None) -> str:
    role = KEYS.get(key or "")
    if not key or role is None:
        raise HTTPException(401, detail="missing or invalid API key")
    return role


app = FastAPI()


@app.get("/v1/customers/{customer_id}/next-best-actions", dependencies=[Depends(caller)])
async def next_best_actions(customer_id: str, limit: int = 3) -> dict:
    return {"customer_id": customer_id, "suggestions": []}
