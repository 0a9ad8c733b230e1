"""Administration: reload the current scoring run and the keys without a restart; read the audit log."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from kundenwert.db.audit import ACTIONS, MAX_READ, read_audit
from kundenwert.errors import KundenwertError
from kundenwert.experiments.registry import hide_credentials
from kundenwert.serving.deps import allow
from kundenwert.serving.problems import KEYED, responses
from kundenwert.serving.schemas import InstantText

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post(
    "/reload",
    dependencies=[Depends(allow())],
    responses=responses(*KEYED, 409, s409="reload failed: the old run keeps serving"),
)
def reload(request: Request) -> dict:
    """Read the latest scoring run and the keys again. The new state is built aside and swapped in
    at once; if it cannot be loaded the old one keeps serving and the answer says why in full
    (for an admin key only; credentials in URIs hidden; ``/health/ready`` says it in short)."""
    request.app.state.keys.refresh()
    state = request.app.state.serving
    before = state.run["run_id"] if state is not None else None
    try:
        before, now = request.app.state.reloader.reload()
    except KundenwertError as exc:
        still = f"still serving run {before}" if before else "still not ready"
        raise HTTPException(409, detail=f"reload failed, {still}: {hide_credentials(str(exc))}") from None
    return {"score_run": now, "previous_run": before, "models": request.app.state.serving.run["models"]}


@router.get("/audit", dependencies=[Depends(allow())], responses=responses(*KEYED, 422))
def audit(
    request: Request,
    action: Annotated[
        Literal[ACTIONS] | None,  # type: ignore[valid-type]
        Query(description=f"only this action: {', '.join(ACTIONS)}"),
    ] = None,
    since: Annotated[
        InstantText | None, Query(description="ISO date or instant (UTC unless given), inclusive")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_READ)] = 100,
) -> dict:
    """The audit log, newest first: who (key id and role, or cli and the OS user) did what to which
    object, how many rows, when. Never a key's secret or hash."""
    when = since.isoformat() if since is not None else None
    return {"rows": read_audit(request.app.state.store.engine, action=action, since=when, limit=limit)}
