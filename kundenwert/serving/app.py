"""The FastAPI application: ``create_app()`` builds it; models and scores load in ``lifespan``.

If loading fails (no scores yet, a broken catalog), the service still starts: ``/health/ready``
answers 503 with the reason and the other endpoints 503, so an orchestrator waits instead of
sending traffic to a half-ready instance.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram

from kundenwert.errors import KundenwertError
from kundenwert.features.store import Store
from kundenwert.serving.catalog import load_catalog
from kundenwert.serving.keys import KeyRing
from kundenwert.serving.routes import admin, customers, feedback, health, marketing, scoring
from kundenwert.serving.state import ServingState

log = logging.getLogger("kundenwert.serving")


class _Metrics:
    """Request count and latency per route template (never a customer id in a label), as a plain
    ASGI middleware: Starlette's ``BaseHTTPMiddleware`` costs a task and a stream per request."""

    def __init__(self, app, requests, latency) -> None:
        self.app, self.requests, self.latency = app, requests, latency

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = route.path if route is not None else "other"
            self.latency.labels(path).observe(time.perf_counter() - start)
            self.requests.labels(path, str(status["code"])).inc()


def create_app(store: Store | None = None, catalog_path: str | Path | None = None) -> FastAPI:
    """The service on ``store`` (default: the configured store) with the action catalog."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.store = store or Store()
        app.state.keys = KeyRing(app.state.store.engine)
        app.state.serving, app.state.load_error = None, None
        try:
            app.state.serving = ServingState(app.state.store, load_catalog(catalog_path))
        except KundenwertError as exc:
            app.state.load_error = str(exc)
            log.warning("not ready: %s", exc)  # no personal data: a configuration message
        yield
        if app.state.serving is not None:
            app.state.serving.close()
        app.state.store.dispose()

    app = FastAPI(
        title="kundenwert",
        version="1",
        description="Next best actions, customer views and campaign scoring from CRM data; consent first.",
        lifespan=lifespan,
    )
    registry = CollectorRegistry()
    app.state.registry = registry
    requests = Counter("kundenwert_requests", "HTTP requests", ["route", "status"], registry=registry)
    latency = Histogram("kundenwert_request_seconds", "request latency", ["route"], registry=registry)

    app.add_middleware(_Metrics, requests=requests, latency=latency)

    @app.exception_handler(KundenwertError)
    async def our_errors(_request: Request, exc: KundenwertError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=getattr(exc, "http_status", 422))

    for module in (health, customers, scoring, feedback, marketing, admin):
        app.include_router(module.router)
    if os.environ.get("KUNDENWERT_BENCH_ENDPOINTS") == "1":
        from kundenwert.serving.routes import bench

        app.include_router(bench.router)
    return app
