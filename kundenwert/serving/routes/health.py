"""Liveness, readiness (503 until the scores and models are loaded) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up (for a liveness probe); says nothing about scores or models. On the
    event loop, no I/O: it answers while the store stalls and every worker thread waits on it."""
    return {"status": "live"}


@router.get("/health/ready", responses={503: {"description": "models not loaded yet"}})
def ready(request: Request, response: Response) -> dict[str, object]:
    """Ready to answer: the scoring run and its models are loaded (names both, the models the
    run had none of and the catalog actions it therefore cannot suggest, with why); 503 with the
    reason while they are not (for a readiness probe or a load balancer). Public: the reasons
    (``error``, ``last_reload.error``) are short categories, never URIs, credentials or exception
    text; the details are in the service log and the admin's reload answer."""
    state = request.app.state.serving
    if state is None:
        response.status_code = 503
        return {"status": "loading", "error": request.app.state.load_error}
    return {
        "status": "ready",
        "score_run": state.run["run_id"],
        "models": state.run["models"],
        "missing_models": state.current.missing_models,
        "unavailable_actions": state.current.unavailable,
        "last_reload": request.app.state.reloader.last,
    }


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Request counts by route and status, and request latencies by route, in the Prometheus text
    format (no customer ids in labels)."""
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
