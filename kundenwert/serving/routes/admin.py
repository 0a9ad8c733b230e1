"""Administration: reload the current scoring run and the keys without a restart."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request

from kundenwert.errors import KundenwertError
from kundenwert.serving.deps import allow

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post("/reload", dependencies=[Depends(allow())], responses={409: {"description": "reload failed"}})
def reload(request: Request) -> dict:
    """Read the latest scoring run and the keys again. The new state is built aside and swapped in
    at once; if it cannot be loaded the old one keeps serving and the answer says why."""
    state = request.app.state.serving
    request.app.state.keys.refresh()
    if state is None:
        raise HTTPException(503, detail="not ready: nothing to reload yet")
    before = state.run["run_id"]
    try:
        state.load()
    except KundenwertError as exc:
        raise HTTPException(409, detail=f"reload failed, still serving run {before}: {exc}") from None
    return {"score_run": state.run["run_id"], "previous_run": before, "models": state.run["models"]}
