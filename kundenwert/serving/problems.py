"""One error body for every error (RFC 9457 problem details, ``application/problem+json``).

Validation errors of FastAPI, ``HTTPException`` (ours and Starlette's 404/405), our own
``KundenwertError`` (by its ``http_status``) and anything unexpected (500, a bug) all answer a
``Problem``: ``type`` (a stable URI per kind), ``title`` (the status' phrase), ``status``,
``detail`` (one sentence) and, for validation errors, ``errors`` with the location of each
offending field. A validation answer quotes at most ``MAX_QUOTED`` short input values and lists
at most ``MAX_LISTED`` errors (``errors_not_listed`` says how many more), so a 10,001-element
input is never echoed back. A body over the configured size is refused with 413 before it is
parsed (``BodyLimit``).
"""

from __future__ import annotations

import logging
import re
import traceback
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from kundenwert.errors import KundenwertError
from kundenwert.serving.links import add_links

log = logging.getLogger("kundenwert.serving")

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://kundenwert.dev/problems/"
MAX_LISTED = 20  # errors listed in one answer
MAX_QUOTED = 5  # offending input values quoted (short scalars only)
QUOTE_CHARS = 40
RETRY_AFTER_SECONDS = 1  # a 503 without its own Retry-After: the store is locked or models load

_KINDS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "content-too-large",
    422: "unprocessable",
    429: "too-many-requests",
    500: "internal",
    503: "unavailable",
}


class FieldError(BaseModel):
    location: list[str | int] = Field(description='where, e.g. ["body", "customer_ids", 3]')
    message: str
    type: str = Field(description="the kind of error, e.g. string_too_long, missing, value_error")
    input: str | int | float | bool | None = Field(
        None, description="the offending value, for the first few short scalar values only"
    )


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "type": TYPE_BASE + "not-found",
                    "title": "Not Found",
                    "status": 404,
                    "detail": "no target list 'x'",
                }
            ]
        }
    }

    type: str = Field(description="a stable URI per kind of problem")
    title: str = Field(description="the HTTP status' phrase")
    status: int
    detail: str = Field(description="what is wrong and how to fix it")
    errors: list[FieldError] | None = Field(None, description="validation errors: each offending field")
    errors_not_listed: int | None = Field(None, description="validation errors beyond those listed")


_DESCRIPTIONS = {
    400: "the body cannot be parsed, or a request our rules refuse",
    401: "missing, invalid, revoked or expired API key (WWW-Authenticate: X-API-Key)",
    403: "the key's role may not do this",
    404: "no such resource",
    409: "the request conflicts with what is stored",
    413: "the request body is larger than the service accepts",
    422: "invalid request: `errors` names each offending field",
    429: "too many requests for this key: wait for Retry-After seconds",
    503: "the store is locked or unreachable, or the models are loading: retry after Retry-After seconds",
}
KEYED = (401, 403, 429, 503)  # every operation behind an API key can answer these


def responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` of a route: each status with the Problem schema;
    ``descriptions`` (``s404="..."``) replace the default description of a status."""
    out: dict[int | str, dict[str, Any]] = {}
    for s in sorted(set(statuses)):
        out[s] = {
            "description": descriptions.get(f"s{s}", _DESCRIPTIONS.get(s, HTTPStatus(s).phrase)),
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return out


def problem(
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem answer: ``kind`` names the type (default: by status)."""
    body = {
        "type": TYPE_BASE + (kind or _KINDS.get(status, str(status))),
        "title": HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error",
        "status": status,
        "detail": detail,
        **{k: v for k, v in extra.items() if v is not None},
    }
    headers = dict(headers or {})
    if status == 503:
        headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _quoted(value: Any) -> str | int | float | bool | None:
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, str):
        return value if len(value) <= QUOTE_CHARS else value[: QUOTE_CHARS - 3] + "..."
    return None  # lists and objects are never echoed


def field_errors(errors: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """FastAPI's validation errors as ``FieldError`` dicts (the first ``MAX_LISTED``) and how
    many were left out."""
    listed = []
    for i, e in enumerate(errors[:MAX_LISTED]):
        item: dict[str, Any] = {
            "location": [x if isinstance(x, int) else str(x) for x in e.get("loc", ())],
            "message": str(e.get("msg", ""))[:300],
            "type": str(e.get("type", "")),
        }
        if i < MAX_QUOTED and "input" in e and e.get("type") != "missing":
            q = _quoted(e["input"])
            if q is not None:
                item["input"] = q
        listed.append(item)
    return listed, max(0, len(errors) - MAX_LISTED)


def _on_app(request: Request) -> bool:
    """The request is for a page of the web app (``/app``): its errors are pages, not problems."""
    path = request.url.path
    return (path == "/app" or path.startswith("/app/")) and getattr(
        request.app.state, "web", None
    ) is not None


def _page(request: Request, status: int, detail: str, exc: Exception):
    from kundenwert.serving.web.pages import failure

    return failure(request, status, detail, exc)


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    listed, more = field_errors(list(exc.errors()))
    if _on_app(request):
        first = listed[0] if listed else None
        return _page(request, 422, first["message"] if first else "invalid request", exc)
    n = len(listed) + more
    first = listed[0] if listed else None
    where = ".".join(str(x) for x in first["location"]) if first else "the request"
    detail = f"{n} invalid field{'s' if n != 1 else ''}; first: {where}: {first['message'] if first else ''}"
    return problem(422, detail, kind="validation", errors=listed, errors_not_listed=more or None)


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if _on_app(request) and exc.status_code != 405:
        return _page(request, exc.status_code, detail, exc)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # every method of the path, not only those of the first route matched
        headers["Allow"] = ", ".join(allowed_methods(request))
        detail = f"{request.method} is not allowed here; allowed: {headers['Allow']}"
    return problem(exc.status_code, detail, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """The methods the routes of the request's path answer (a path may have several routes,
    e.g. GET and DELETE of a customer)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in _leaf_routes(request.app.router.routes):
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
        for m in getattr(route, "methods", None) or ():
            if route.matches({**request.scope, "method": m})[0] == Match.FULL:
                methods.add(m)
    return sorted(methods)


def _leaf_routes(routes) -> list:
    """The routes themselves, also inside included routers (FastAPI wraps each
    ``include_router`` in an object of its own whose ``matches`` tells no methods)."""
    out = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        out += _leaf_routes(inner.routes) if inner is not None else [route]
    return out


async def unknown_query_parameters(request: Request) -> None:
    """Refuse query parameters the route does not take (422): a misspelt ``chanel=email`` is
    an error, not a silent default. Every route has this dependency (``install``)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = {p.alias for p in _query_params(dependant)}
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise RequestValidationError(
            [
                {
                    "loc": ("query", name),
                    "msg": f"unknown query parameter; this operation takes: {', '.join(sorted(known)) or 'none'}",
                    "type": "extra_forbidden",
                }
                for name in unknown[:MAX_LISTED]
            ]
        )


def _query_params(dependant) -> list:
    out = list(dependant.query_params)
    for sub in dependant.dependencies:
        out += _query_params(sub)
    return out


async def _ours(request: Request, exc: Exception) -> Response:
    status = int(getattr(exc, "http_status", 422))
    if _on_app(request):
        return _page(request, status, str(exc), exc)
    headers = {}
    if status == 503:
        headers["Retry-After"] = str(getattr(exc, "retry_after", RETRY_AFTER_SECONDS))
    return problem(status, str(exc), kind=_kebab(type(exc).__name__), headers=headers)


class CatchAll:
    """An unexpected exception (a bug) answers a 500 problem without its text; the log gets its
    class, the route and the stack's frames, never the message (it may quote a customer id)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:  # noqa: BLE001  a 500 is a bug: answered, logged, not re-raised
            route = scope.get("route")
            log.error(
                "unexpected %s on %s %s\n%s",
                type(exc).__name__,
                scope.get("method"),
                route.path if route is not None else "(no route)",
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            if not started:
                await problem(500, "an unexpected error; it is logged: please report it")(
                    scope, receive, send
                )


class BodyLimit:
    """Refuse a request body over ``max_bytes`` with 413 before it is parsed: at once when its
    ``Content-Length`` says so, else (chunked) as soon as the bytes read pass the limit; the
    rest is never read."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes (KUNDENWERT_MAX_BODY_BYTES)"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await problem(400, "Content-Length is not a number")(scope, receive, send)
                    return
                if declared > self.max_bytes:
                    await problem(413, self._too_large(), headers={"Connection": "close"})(
                        scope, receive, send
                    )
                    return
        seen = 0

        async def counting():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # raised inside the route's body read: FastAPI passes an HTTPException on
                    raise StarletteHTTPException(413, self._too_large(), headers={"Connection": "close"})
            return message

        await self.app(scope, counting, send)


def install(app: FastAPI, max_body_bytes: int) -> None:
    """The problem handlers, the 500 catch, the body limit, and the Problem schema and the
    links (``links.LINKS``) in the OpenAPI document."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(KundenwertError, _ours)
    app.add_middleware(CatchAll)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        defs = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(defs.pop("$defs", {}))
        components["Problem"] = defs
        app.openapi_schema = add_links(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
