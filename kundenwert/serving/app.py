"""The FastAPI application: ``create_app()`` builds it; models and scores load in ``lifespan``.

If loading fails (no scores yet, a broken catalog), the service still starts: ``/health/ready``
answers 503 with the reason and the other endpoints 503, so an orchestrator waits instead of
sending traffic to a half-ready instance. The reason there is public (no key): a short category
(``public_reason``); the full message, credentials hidden, goes to the log and to the admin's
reload answer.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram

from kundenwert.db.store import Store
from kundenwert.errors import KundenwertError, StoreError, StoreOutdated, StoreUnavailable
from kundenwert.experiments.registry import hide_credentials
from kundenwert.serving import problems
from kundenwert.serving.catalog import load_catalog
from kundenwert.serving.keys import KeyRing
from kundenwert.serving.ratelimit import buckets_from_settings
from kundenwert.serving.routes import admin, campaigns, customers, feedback, health, marketing, scoring
from kundenwert.serving.state import ServingState
from kundenwert.serving.web import pages
from kundenwert.serving.web.pages import Web
from kundenwert.settings import get_settings

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


# Messages of ours whose first words say enough for anyone: (prefix, public reason); a
# verification that names the score keeps its name (numbers and score names only).
_PUBLIC_PREFIXES = (
    ("no precomputed scores", "no scoring run yet: run `kundenwert score`"),
    ("model verification failed: scoring", "model verification failed: the models could not score again"),
    (
        "model verification failed: response propensities",
        "model verification failed: response propensities do not match the stored run",
    ),
    ("action catalog", "the action catalog cannot be used: see the service log"),
    ("action ", "an action of the catalog does not fit the store's data: see the service log"),
)
_VERIFIED_SCORE = re.compile(r"model verification failed: (\w+) of \d+ of \d+ probe customers")


def public_reason(exc: KundenwertError) -> str:
    """What ``/health/ready`` (public, no key) may say about a failed load: a short category,
    never a URI, a credential, an exception class or the text of a driver's error."""
    said = getattr(exc, "public", None)  # errors that carry their own (the model registry's)
    if isinstance(said, str):
        return said
    if isinstance(exc, StoreUnavailable):
        return "the store is unavailable: retry later"
    if isinstance(exc, StoreOutdated):
        return "the store's schema does not fit this kundenwert: see the service log"
    if isinstance(exc, StoreError):
        return "the store could not be read: see the service log"
    text = str(exc)
    checked = _VERIFIED_SCORE.match(text)
    if checked:
        return f"model verification failed: {checked[1]} does not match the stored run"
    for prefix, reason in _PUBLIC_PREFIXES:
        if text.startswith(prefix):
            return reason
    return "the scoring run could not be loaded: see the service log"


class Reloader:
    """Swaps the service to the latest scoring run: on ``POST /v1/admin/reload`` and every
    ``reload_seconds`` when the store holds a newer run. The new run, its models (the versions
    it was scored with) and their verification are built aside while requests go on; any
    failure leaves the old run serving and is reported by ``/health/ready`` (``public_reason``)
    and, in full with credentials hidden, by the log and the reload answer."""

    def __init__(self, app: FastAPI, catalog_path: str | Path | None) -> None:
        self.app, self.catalog_path = app, catalog_path
        self._lock = threading.Lock()  # one reload at a time
        self.last: dict[str, object] = {"at": None, "ok": None, "error": None}

    def start(self) -> KundenwertError | None:
        """The first load at startup; not ready (503) until it succeeds. The error if it fails."""
        try:
            self.app.state.serving = ServingState(self.app.state.store, load_catalog(self.catalog_path))
            self.app.state.load_error = None
            return None
        except KundenwertError as exc:
            self.app.state.load_error = public_reason(exc)
            # no personal data: a configuration message
            log.warning("not ready: %s", hide_credentials(str(exc)))
            return exc

    def reload(self) -> tuple[str | None, str | None]:
        """(previous run, current run); raises ``KundenwertError`` when the new run fails."""
        with self._lock:
            state = self.app.state.serving
            if state is None:
                failed = self.start()
                self._note(self.app.state.load_error)
                if failed is not None:
                    raise failed
                return None, self.app.state.serving.run["run_id"]
            before = state.run["run_id"]
            try:
                state.load()
            except KundenwertError as exc:
                log.warning("reload failed, the old run keeps serving: %s", hide_credentials(str(exc)))
                self._note(public_reason(exc))
                raise
            self._note(None)
            return before, state.run["run_id"]

    def _note(self, error: str | None) -> None:
        """The last reload for ``/health/ready``: ``error`` is a public reason."""
        self.last = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "ok": error is None,
            "error": error,
        }

    def newer_run_waiting(self) -> bool:
        from kundenwert.serving.scores_store import latest_run

        latest = latest_run(self.app.state.store.engine)
        state = self.app.state.serving
        if latest is None:
            return False
        return state is None or latest["run_id"] != state.run["run_id"]

    def maintain(self, seconds: float) -> None:
        """Between reloads: keep the store's live change log short (feedback adds to it; imports
        prune too), delete decisions and feedback past their retention period and work out the
        control draws of the month the next ticks fall in."""
        import pandas as pd

        from kundenwert.serving.decisions import WRITER
        from kundenwert.serving.retention import apply_retention
        from kundenwert.settings import get_settings

        with WRITER:
            self.app.state.store.prune_live_changes()
            apply_retention(self.app.state.store.engine, get_settings().retention_days)
        state = self.app.state.serving
        if state is not None:
            state.warm(pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=2 * seconds))

    async def every(self, seconds: float) -> None:
        import asyncio

        while True:
            await asyncio.sleep(seconds)
            try:
                await asyncio.to_thread(self.maintain, seconds)
                if await asyncio.to_thread(self.newer_run_waiting):
                    await asyncio.to_thread(self.reload)
                    log.info("now serving the latest scoring run")
            except KundenwertError:
                pass  # logged by ``reload``, reported by /health/ready
            except Exception as exc:  # noqa: BLE001  the schedule must survive a bad moment
                log.error("scheduled reload failed: %s", type(exc).__name__)


def create_app(
    store: Store | None = None, catalog_path: str | Path | None = None, reload_seconds: float | None = None
) -> FastAPI:
    """The service on ``store`` (default: the configured store) with the action catalog;
    ``reload_seconds`` (default: the settings' ``reload_seconds``) schedules the reload."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import asyncio

        from kundenwert.settings import get_settings

        app.state.store = store or Store()
        app.state.keys = KeyRing(app.state.store.engine)
        keys_fresh = asyncio.create_task(app.state.keys.keep_fresh())  # revocations within ~1 s
        app.state.serving, app.state.load_error = None, None
        app.state.reloader = reloader = Reloader(app, catalog_path)
        app.state.web = Web()  # the web app's templates, session key and message catalogs
        await asyncio.to_thread(reloader.start)
        seconds = get_settings().reload_seconds if reload_seconds is None else reload_seconds
        schedule = asyncio.create_task(reloader.every(seconds)) if seconds > 0 else None
        yield
        keys_fresh.cancel()
        if schedule is not None:
            schedule.cancel()
        if app.state.serving is not None:
            app.state.serving.close()
        app.state.store.dispose()

    app = FastAPI(
        title="kundenwert",
        version="1",
        description="Next best actions, customer views and campaign scoring from CRM data; consent first.",
        lifespan=lifespan,
        dependencies=[Depends(problems.unknown_query_parameters)],
    )
    registry = CollectorRegistry()
    app.state.registry = registry
    app.state.buckets = buckets_from_settings()  # per-key rate limits, this process's own
    requests = Counter("kundenwert_requests", "HTTP requests", ["route", "status"], registry=registry)
    latency = Histogram("kundenwert_request_seconds", "request latency", ["route"], registry=registry)

    # every error a problem body (RFC 9457); bodies over the limit refused before parsing
    problems.install(app, get_settings().max_body_bytes)
    app.add_middleware(_Metrics, requests=requests, latency=latency)  # outermost: counts 413s too

    for module in (health, customers, scoring, feedback, marketing, campaigns, admin):
        app.include_router(module.router)
    app.include_router(pages.router)  # the web app under /app: the same keys, roles and state
    if os.environ.get("KUNDENWERT_BENCH_ENDPOINTS") == "1":
        from kundenwert.serving.routes import bench

        app.include_router(bench.router)
        app.add_middleware(bench.WorkerHeader)
    return app
