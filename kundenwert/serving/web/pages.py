"""The web app's pages under ``/app``: sign-in, sales (a customer), marketing (target lists,
campaigns, analytics) and data science (the models in service).

Every page is read through the same keys, roles and serving state as the API, and through the
same functions: the sales view's data protection (``routes.customers.customer``), the next best
actions (``decisions_of``), target lists (``build_target_list``, ``members_now``), campaign
results and the analytics routes. Pages send ``Cache-Control: no-store`` and a strict
Content-Security-Policy; every form carries the session's CSRF token.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import parse_qs

import orjson
import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from pydantic import ValidationError

from kundenwert.db import audit
from kundenwert.errors import KundenwertError
from kundenwert.features.contract import MARKETING_CHANNELS
from kundenwert.serving.deps import serving_of
from kundenwert.serving.keys import Caller
from kundenwert.serving.ratelimit import TokenBuckets
from kundenwert.serving.web import charts, i18n
from kundenwert.serving.web.session import COOKIE, Session, Sessions, session_secret
from kundenwert.settings import get_settings

router = APIRouter(prefix="/app", include_in_schema=False)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
)
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
TIMELINE_DAYS = 730  # "the last 24 months"
TIMELINE_ROWS = 200
TIMELINE_COLUMNS = {  # only what the timeline shows: typing a column costs more than reading it
    "purchases": ["purchased_at", "category", "amount"],
    "contacts": ["contacted_at", "channel", "direction", "action_id", "outcome"],
    "complaints": ["opened_at", "closed_at", "category"],
    "offers": ["created_at", "amount", "status"],
}

# (page, path, roles that see it; admin sees every page)
NAV = (
    ("customers", "/app/customers", ("sales", "data_science")),
    ("lists", "/app/lists", ("marketing", "data_science")),
    ("campaigns", "/app/campaigns", ("marketing", "data_science")),
    ("analytics", "/app/analytics", ("marketing", "data_science")),
    ("models", "/app/models", ("data_science",)),
)
ROLES_OF = {page: roles for page, _, roles in NAV}
OUTCOME_CHOICES = ("sent", "opened", "clicked", "converted", "unsubscribed", "bounced")


class SignInRequired(KundenwertError):
    """No session, or its key was revoked or expired: the page sends the user to sign in."""

    http_status = 401


class PageForbidden(KundenwertError):
    """The signed-in role may not see this page."""

    http_status = 403


class CsrfRefused(KundenwertError):
    """A form was posted without the CSRF token of the user's session."""

    http_status = 403


class PageRateLimited(KundenwertError):
    """The key used up its role's rate limit (the same buckets as the API)."""

    http_status = 429


class Web:
    """What every page needs: templates, sessions, message catalogs, and the settings read once."""

    def __init__(self) -> None:
        settings = get_settings()
        self.env = Environment(
            loader=PackageLoader("kundenwert.serving.web", "templates"),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.sessions = Sessions(session_secret(), settings.session_hours)
        self.catalogs = i18n.load_catalogs()
        self.currency = settings.currency
        self.mlflow_ui_url = settings.mlflow_ui_url

    def formats(self, lang: str) -> i18n.Formats:
        return i18n.Formats(lang, self.catalogs[lang], self.currency)


@dataclass
class View:
    """One page request: its session (written back when it changed), the signed-in caller and
    the language."""

    request: Request
    web: Web
    session: Session
    fresh: bool  # the session is new or changed: send its cookie
    caller: Caller | None
    fmt: i18n.Formats

    @property
    def csrf(self) -> str:
        return self.web.sessions.csrf(self.session)

    def change(self, session: Session) -> None:
        self.session, self.fresh = session, True

    def nav(self) -> list[tuple[str, str]]:
        role = self.caller.role if self.caller else None
        return [(p, path) for p, path, roles in NAV if role == "admin" or role in roles]

    def finish(self, response: Response) -> Response:
        """The page headers and, when needed, the session cookie."""
        response.headers.update(HEADERS)
        if self.fresh:
            response.set_cookie(
                COOKIE,
                self.web.sessions.dump(self.session),
                max_age=int(self.web.sessions.seconds),
                path="/app",
                httponly=True,
                secure=self.request.url.scheme == "https",
                samesite="strict",
            )
        return response

    def render(self, template: str, status: int = 200, **values: Any) -> Response:
        f = self.fmt
        page = self.web.env.get_template(template).render(
            _=f.gettext,
            f=f,
            lang=f.lang,
            languages=i18n.LANGUAGES,
            view=self,
            caller=self.caller,
            csrf=self.csrf,
            nav=self.nav(),
            path=self.request.url.path,
            **values,
        )
        return self.finish(HTMLResponse(page, status_code=status))

    def redirect(self, to: str) -> Response:
        return self.finish(RedirectResponse(to, status_code=303))


def web_of(request: Request) -> Web:
    return request.app.state.web


def view_of(request: Request) -> View:
    """The request's view: its valid session (a new one when it has none) and its language."""
    web = web_of(request)
    session = web.sessions.read(request.cookies.get(COOKIE))
    fresh = session is None
    session = session or web.sessions.new()
    lang = i18n.negotiate(request.cookies.get(i18n.COOKIE), request.headers.get("accept-language"))
    caller = None
    if session.key_id is not None:
        caller, _ = request.app.state.keys.check_id(session.key_id)
    return View(request, web, session, fresh, caller, web.formats(lang))


async def any_view(request: Request) -> View:
    return view_of(request)


def signed_in(*pages: str):
    """A dependency: the view of a signed-in user whose role may see ``pages`` (none: any role).
    The key is checked on every request against the ring the API uses: revoked or expired ends
    the session (``SignInRequired``)."""

    async def check(request: Request) -> View:
        view = view_of(request)
        if view.caller is None:
            raise SignInRequired("sign in with an API key")
        role = view.caller.role
        for page in pages:
            if role != "admin" and role not in ROLES_OF[page]:
                raise PageForbidden(f"role {role!r} may not see this page")
        state = request.app.state
        wait = state.buckets.take(view.caller.key_id, role)
        if wait:
            raise PageRateLimited(f"too many requests: retry in {TokenBuckets.retry_after(wait)} s")
        request.state.view = view
        return view

    return check


ViewDep = Annotated[View, Depends(any_view)]


async def form_of(request: Request, view: View) -> dict[str, list[str]]:
    """The posted form (``application/x-www-form-urlencoded``), refused without the session's
    CSRF token (``CsrfRefused``)."""
    body = await request.body()
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    data = (
        parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        if kind.endswith("urlencoded")
        else {}
    )
    token = one(data, "csrf") or None
    if not view.web.sessions.csrf_ok(view.session, token):
        raise CsrfRefused("this form is out of date or was not sent from this app: open the page again")
    return data


def one(data: dict[str, list[str]], name: str) -> str:
    return (data.get(name) or [""])[0].strip()


# ---------------------------------------------------------------------- errors, static, sign-in


def failure(request: Request, status: int, detail: str, exc: Exception | None = None) -> Response:
    """The page of an error on ``/app`` (the API's problem handlers hand them here): sign-in
    for a missing or ended session, else an error page that says what happened."""
    view = getattr(request.state, "view", None) or view_of(request)
    if isinstance(exc, SignInRequired):
        ended = view.session.key_id is not None  # a key revoked or expired since sign-in
        if ended:
            view.change(view.web.sessions.new())
        return view.redirect("/app/signin?ended=1" if ended else "/app/signin")
    f = view.fmt
    titles = {
        403: f.gettext("Not allowed"),
        404: f.gettext("Not found"),
        429: f.gettext("Too many requests"),
        503: f.gettext("Not ready"),
    }
    if isinstance(exc, CsrfRefused):
        message = f.gettext("This form was not sent from this page or is out of date. Open the page again.")
    elif status == 403:
        message = f.gettext("Your role may not see this page.")
    elif status == 404:
        message = f.gettext("There is nothing here, or it was erased.")
    elif status == 503:
        message = f.gettext("The service is loading its models or the store is busy. Try again in a moment.")
    else:
        message = detail
    return view.render(
        "error.html", status=status, title=titles.get(status, f.gettext("Error")), message=message
    )


@lru_cache(maxsize=8)
def _static(name: str) -> bytes:
    return files("kundenwert.serving.web").joinpath("static", name).read_bytes()


STATIC_TYPES = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}


@router.get("/static/{name}")
async def static(name: str) -> Response:
    """The app's stylesheet and its one small script, shipped in the package."""
    if name not in STATIC_TYPES:
        raise HTTPException(404, "no such file")
    return Response(
        _static(name),
        media_type=STATIC_TYPES[name],
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@router.get("")
@router.get("/")
async def home(view: ViewDep) -> Response:
    """The start page of the signed-in role (sign-in when nobody is signed in)."""
    if view.caller is None:
        return view.redirect("/app/signin")
    return view.render("home.html", title=view.fmt.gettext("Start"))


@router.get("/signin")
async def signin_form(view: ViewDep, ended: Annotated[int, Query()] = 0) -> Response:
    f = view.fmt
    note = f.gettext("You were signed out: the key was revoked or has expired.") if ended else None
    return view.render("signin.html", title=f.gettext("Sign in"), error=None, note=note)


@router.post("/signin")
async def signin(request: Request, view: ViewDep) -> Response:
    """Check the key as every API request does; a valid one starts a new session (a new session
    id: a session id known before the sign-in is worth nothing after it)."""
    data = await form_of(request, view)
    caller, why = request.app.state.keys.check(one(data, "key"))
    f = view.fmt
    if caller is None:
        error = (
            f.gettext("This key has expired.") if why == "expired" else f.gettext("This key is not valid.")
        )
        return view.render("signin.html", status=401, title=f.gettext("Sign in"), error=error, note=None)
    view.change(replace(view.web.sessions.new(), key_id=caller.key_id))
    return view.redirect("/app")


@router.post("/signout")
async def signout(request: Request, view: ViewDep) -> Response:
    await form_of(request, view)
    view.change(view.web.sessions.new())
    return view.redirect("/app/signin")


@router.post("/language")
async def language(request: Request, view: ViewDep) -> Response:
    """The language switch: a cookie (no personal data), back to the page it was used on."""
    data = await form_of(request, view)
    lang = one(data, "lang")
    back = one(data, "back")
    back = back if back.startswith("/app") and "//" not in back else "/app"
    response = view.redirect(back)
    if lang in i18n.LANGUAGES:
        response.set_cookie(
            i18n.COOKIE, lang, max_age=365 * 86400, path="/app", samesite="strict", httponly=True
        )
    return response


# ---------------------------------------------------------------------- sales


@router.get("/customers")
def customers_page(
    view: Annotated[View, Depends(signed_in("customers"))],
    customer_id: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Find a customer by id; the customers this session opened recently."""
    if customer_id and customer_id.strip():
        from urllib.parse import quote

        return view.redirect(f"/app/customers/{quote(customer_id.strip(), safe='')}")
    return view.render("customers.html", title=view.fmt.gettext("Customers"), recent=view.session.recent)


def _timeline(state, customer_id: str) -> list[dict]:
    """Purchases, contacts, complaints and offers of the last 24 months, newest first."""
    frames = state.store.read_tables_for_customers(list(TIMELINE_COLUMNS), [customer_id], TIMELINE_COLUMNS)
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=TIMELINE_DAYS)
    rows: list[dict] = []
    p = frames["purchases"]
    for r in p[p["purchased_at"] >= since].itertuples():
        rows.append(
            {"at": r.purchased_at, "kind": "purchase", "what": r.category, "amount": r.amount, "info": None}
        )
    c = frames["contacts"]
    for r in c[c["contacted_at"] >= since].itertuples():
        rows.append(
            {
                "at": r.contacted_at,
                "kind": "contact",
                "what": r.channel,
                "direction": r.direction,
                "amount": None,
                "info": r.outcome if isinstance(r.outcome, str) else None,
                "action": r.action_id if isinstance(r.action_id, str) else None,
            }
        )
    k = frames["complaints"]
    for r in k[k["opened_at"] >= since].itertuples():
        rows.append(
            {
                "at": r.opened_at,
                "kind": "complaint",
                "what": r.category if isinstance(r.category, str) else "",
                "amount": None,
                "info": "closed" if pd.notna(r.closed_at) else "open",
            }
        )
    o = frames["offers"]
    for r in o[o["created_at"] >= since].itertuples():
        rows.append({"at": r.created_at, "kind": "offer", "what": "", "amount": r.amount, "info": r.status})
    rows.sort(key=lambda x: x["at"], reverse=True)
    return rows[:TIMELINE_ROWS]


def _attributes(state, customer_id: str) -> dict[str, object]:
    """The customer's custom attributes (the CRM's own fields), by name."""
    long = state.store.read_for_customers("customer_attributes", [customer_id], ["name", "number", "text"])
    return {str(r.name): (r.text if isinstance(r.text, str) else r.number) for r in long.itertuples()}


def _suggestions(state, customer_id: str, explain: bool) -> dict:
    """The next best actions as the API answers them (recorded, with decision ids)."""
    from kundenwert.serving.routes.customers import decisions_of

    held = state.blocks([customer_id])
    decisions = state.decide_one(customer_id, block=held[customer_id])
    out = decisions_of(state, decisions, [customer_id], 3, explain, record=True, held=held)[0]
    for s in out["suggestions"]:
        reasons = s["reasons"]
        s["reasons"] = orjson.loads(orjson.dumps(reasons))  # the stored JSON text, embedded as it is
    return out


def _stored_event(state, event_id: str) -> dict | None:
    import sqlalchemy as sa

    from kundenwert.db.schema import FEEDBACK

    with state.store.engine.connect() as conn:
        row = conn.execute(sa.select(FEEDBACK).where(FEEDBACK.c.event_id == event_id)).mappings().first()
    return dict(row) if row else None


@router.get("/customers/{customer_id}")
def customer_page(
    customer_id: str,
    request: Request,
    view: Annotated[View, Depends(signed_in("customers"))],
    explain: Annotated[int, Query()] = 0,
    recorded: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    """One customer: profile, value, risk, affinities, consent, timeline and the next best actions
    with their reasons (``explain``: also why the others were dropped). An objecting customer
    shows consent and objection only, as the sales view answers."""
    from kundenwert.serving.routes.customers import customer

    state = serving_of(request)
    try:
        seen = customer(customer_id, state)
    except HTTPException as exc:
        if exc.status_code == 404:
            return failure(request, 404, "not found")
        raise
    view.change(view.session.opened(customer_id))
    profiled = seen.profiling_stopped is None
    nba = _suggestions(state, customer_id, bool(explain)) if profiled else None
    actions = {a.id: a for a in state.catalog.actions}
    stored = _stored_event(state, recorded) if recorded else None
    return view.render(
        "customer.html",
        title=view.fmt.gettext("Customer %(id)s", id=customer_id),
        c=seen,
        profiled=profiled,
        attributes=_attributes(state, customer_id) if profiled else {},
        timeline=_timeline(state, customer_id) if profiled else [],
        nba=nba,
        explain=bool(explain),
        actions=actions,
        outcomes=OUTCOME_CHOICES,
        may_record=view.caller is not None and view.caller.role in ("sales", "admin"),
        stored=stored,
    )


@router.post("/customers/{customer_id}/outcome")
async def record_outcome(
    customer_id: str, request: Request, view: Annotated[View, Depends(signed_in("customers"))]
) -> Response:
    """What happened with a suggestion: one feedback event naming its decision id, stored by
    ``record_feedback`` as the API's ``POST /v1/feedback`` stores it, then shown stored."""
    from fastapi.concurrency import run_in_threadpool

    from kundenwert.serving.feedback import Event, record_feedback

    data = await form_of(request, view)
    if view.caller is None or view.caller.role not in ("sales", "admin"):
        raise PageForbidden("only sales records outcomes")
    state = serving_of(request)
    event_id = f"app-{uuid.uuid4().hex}"
    try:
        event = Event(
            event_id=event_id,
            decision_id=one(data, "decision_id"),
            action_id=one(data, "action_id"),
            channel=one(data, "channel"),
            outcome=one(data, "outcome"),
            occurred_at=datetime.now(UTC),
        )
    except ValidationError as exc:
        return failure(request, 422, view.fmt.gettext("The outcome could not be read: %(e)s", e=_first(exc)))

    def store() -> None:
        state.decisions.flush()  # the decision shown on the page is committed first
        record_feedback(state.store, [event])

    await run_in_threadpool(store)
    from urllib.parse import quote

    return view.redirect(f"/app/customers/{quote(customer_id, safe='')}?recorded={event_id}")


def _first(exc: ValidationError) -> str:
    e = exc.errors()[0]
    return f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}"


# ---------------------------------------------------------------------- marketing


def _builder_values(data: dict[str, list[str]] | None) -> dict:
    """The builder form's values (defaults for a new list)."""
    d = data or {}
    return {
        "name": one(d, "name"),
        "objective": one(d, "objective") or "churn_prevention",
        "category": one(d, "category"),
        "action_id": one(d, "action_id"),
        "channel": one(d, "channel") or "email",
        "age_groups": d.get("age_groups", []),
        "statuses": d.get("statuses", []),
        "customer_types": d.get("customer_types", []),
        "regions": one(d, "regions"),
        "min_clv": one(d, "min_clv"),
        "max_clv": one(d, "max_clv"),
        "size": one(d, "size") if data is not None else "500",
        "budget": one(d, "budget"),
        "control_share": one(d, "control_share") or "0.1",
        "detect_lift": one(d, "detect_lift"),
        "selection": "optimal" if one(d, "selection") == "optimal" else "ranked",
    }


def _request_of(values: dict):
    """The form's values as a ``TargetListRequest`` (``ValidationError`` when they do not fit)."""
    from kundenwert.serving.target_lists import TargetListRequest

    def num(name: str) -> str | None:
        return values[name].replace(",", ".") or None

    filters: dict[str, object] = {}
    for name in ("age_groups", "statuses", "customer_types"):
        if values[name]:
            filters[name] = values[name]
    regions = [r.strip() for r in values["regions"].split(",") if r.strip()]
    if regions:
        filters["regions"] = regions
    for name in ("min_clv", "max_clv"):
        if num(name) is not None:
            filters[name] = num(name)
    body: dict[str, object] = {
        "name": values["name"],
        "objective": values["objective"],
        "channel": values["channel"],
        "filters": filters,
        "control_share": num("control_share") or 0.1,
        "selection": values.get("selection", "ranked"),
    }
    for name in ("size", "budget", "detect_lift"):
        if num(name) is not None:
            body[name] = num(name)
    if values["objective"] == "cross_sell":
        body["category"] = values["category"] or None
    if values["objective"] == "action":
        body["action_id"] = values["action_id"] or None
    return TargetListRequest.model_validate(body)


def _builder(view: View, state, values: dict, status: int = 200, **extra: Any) -> Response:
    from kundenwert.serving.kinds import OBJECTIVES

    categories = sorted({a.category for a in state.catalog.actions if a.category})
    return view.render(
        "list_new.html",
        status=status,
        title=view.fmt.gettext("New target list"),
        v=values,
        objectives=OBJECTIVES,
        categories=categories,
        catalog=state.catalog.actions,
        channels=MARKETING_CHANNELS,
        age_groups=("<25", "25-34", "35-44", "45-54", "55-64", "65+", "unknown"),
        statuses=("active", "lapsed", "new"),
        customer_types=("consumer", "business", "retailer"),
        preview=extra.get("preview"),
        errors=extra.get("errors", []),
    )


def _build(state, request_):
    from kundenwert.serving.target_lists import build_target_list

    return build_target_list(
        request_,
        state.catalog,
        state.decide,
        state.held_scores(),
        state.current.unavailable,
        max_size=get_settings().max_target_list,
    )


def _may_build(view: View) -> None:
    if view.caller is None or view.caller.role not in ("marketing", "admin"):
        raise PageForbidden("only marketing builds target lists")


@router.get("/lists")
def lists_page(request: Request, view: Annotated[View, Depends(signed_in("lists"))]) -> Response:
    """Every stored target list, newest first."""
    from kundenwert.serving.target_lists import list_overview

    state = serving_of(request)
    return view.render(
        "lists.html", title=view.fmt.gettext("Target lists"), lists=list_overview(state.store.engine)
    )


@router.get("/lists/new")
def list_new(request: Request, view: Annotated[View, Depends(signed_in("lists"))]) -> Response:
    _may_build(view)
    return _builder(view, serving_of(request), _builder_values(None))


async def _built(request: Request, view: View, save: bool) -> Response:
    from fastapi.concurrency import run_in_threadpool

    data = await form_of(request, view)
    _may_build(view)
    state = serving_of(request)
    values = _builder_values(data)
    try:
        wanted = _request_of(values)
    except ValidationError as exc:
        errors = [f"{'.'.join(str(x) for x in e['loc']) or 'list'}: {e['msg']}" for e in exc.errors()]
        return _builder(view, state, values, status=422, errors=errors)
    try:
        list_id, summary, members = await run_in_threadpool(_build, state, wanted)
    except KundenwertError as exc:
        if exc.http_status >= 500:
            raise
        return _builder(view, state, values, status=exc.http_status, errors=[str(exc)])
    if not save:
        return _builder(view, state, values, preview=summary)
    from kundenwert.serving.target_lists import save_target_list

    assert view.caller is not None
    await run_in_threadpool(
        save_target_list, state.store.engine, list_id, wanted, summary, members, view.caller
    )
    return view.redirect(f"/app/lists/{list_id}")


@router.post("/lists/preview")
async def list_preview(request: Request, view: Annotated[View, Depends(signed_in("lists"))]) -> Response:
    """Build the list without saving it: expected responders, value, cost and the planning."""
    return await _built(request, view, save=False)


@router.post("/lists")
async def list_save(request: Request, view: Annotated[View, Depends(signed_in("lists"))]) -> Response:
    """Build the list again (consent as it is now) and save it; then its page."""
    return await _built(request, view, save=True)


def _results(state, list_id: str | None = None, campaign_id: str | None = None) -> dict:
    from kundenwert.serving.results import ResultsQuery, campaign_results

    return campaign_results(
        state.store, state.catalog, ResultsQuery(list_id=list_id, campaign_id=campaign_id)
    )


def _cells(report: dict, view: View, catalog) -> tuple[list[dict], Any, Any]:
    """The report's cells for a table, named in the page's language (an action by its title, a
    channel by its word), and their lift charts (responses, buyers) as SVG."""
    f = view.fmt
    titles = {a.id: a.title for a in catalog.actions}

    def word(key: str, value: object) -> str:
        if key == "action" and value in titles:
            return f.gettext(titles[str(value)])
        if key == "channel":
            return f.gettext(f"{value}:channel")
        return str(value)

    cells = []
    for cell in report.get("cells", []):
        name = " · ".join(word(k, v) for k, v in cell["keys"].items())
        cells.append({"name": name, **cell})

    def bars(metric: str):
        out = []
        for c in cells:
            m = (c.get("metrics") or {}).get(metric)
            if c.get("suppressed") or not m:
                continue
            lift = m["lift"]
            out.append((c["name"], lift["estimate"], lift["low"], lift["high"]))
        return out

    return (
        cells,
        charts.lift_chart(bars("responded"), f.points, f.gettext("Lift of the response rate")),
        charts.lift_chart(bars("bought"), f.points, f.gettext("Lift of the buyer rate")),
    )


@router.get("/lists/{list_id}")
def list_page(list_id: str, request: Request, view: Annotated[View, Depends(signed_in("lists"))]) -> Response:
    """A stored list: what it was asked for, its summary, members now, results and plots."""
    from kundenwert.serving.target_lists import load_target_list, members_now

    state = serving_of(request)
    meta, stored = load_target_list(state.store.engine, list_id)
    members, left_out = members_now(meta, stored, state.standing(stored["customer_id"].astype(str).tolist()))
    report = _results(state, list_id=list_id)
    cells, lift_svg, bought_svg = _cells(report, view, state.catalog)
    return view.render(
        "list.html",
        title=view.fmt.gettext("Target list"),
        meta=meta,
        members=len(members),
        left_out=left_out,
        report=report,
        cells=cells,
        lift_svg=lift_svg,
        bought_svg=bought_svg,
    )


@router.get("/lists/{list_id}/members.csv")
def list_csv(list_id: str, request: Request, view: Annotated[View, Depends(signed_in("lists"))]) -> Response:
    """The list's CSV, the same export as ``GET /v1/target-lists/{id}?format=csv``: members
    checked at this moment, audited."""
    from kundenwert.serving.target_lists import csv_chunks, load_target_list, members_now

    state = serving_of(request)
    meta, stored = load_target_list(state.store.engine, list_id)
    members, left_out = members_now(meta, stored, state.standing(stored["customer_id"].astype(str).tolist()))
    audit.record(
        state.store.engine,
        view.caller,
        "target_list.export",
        "target_list",
        list_id,
        rows=len(members),
        detail={"format": "csv", "left_out": left_out["total"], "via": "app"},
    )
    response = StreamingResponse(
        csv_chunks(members),
        media_type="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="target-list-{list_id}.csv"',
            **{f"X-Left-Out-{k.replace('_', '-').title()}": str(v) for k, v in left_out.items()},
        },
    )
    return view.finish(response)


@router.get("/lists/{list_id}/{plot}.png")
@router.get("/campaigns/{campaign_id}/{plot}.png")
def result_plot(
    request: Request,
    plot: str,
    view: Annotated[View, Depends(signed_in("campaigns"))],
    list_id: str | None = None,
    campaign_id: str | None = None,
) -> Response:
    """A results plot (the API's PNGs): lift, lift_bought, cumulative_revenue."""
    from kundenwert.serving.results import ResultsQuery, measure, result_plots

    if plot not in ("lift", "lift_bought", "cumulative_revenue"):
        raise HTTPException(404, "no such plot")
    state = serving_of(request)
    query = ResultsQuery(list_id=list_id, campaign_id=campaign_id)
    report, e = measure(state.store, state.catalog, query)
    plots = result_plots(state.store, report, e, query)
    if plot not in plots:
        raise HTTPException(404, "nothing to plot")
    return view.finish(Response(plots[plot], media_type="image/png"))


@router.get("/campaigns")
def campaigns_page(request: Request, view: Annotated[View, Depends(signed_in("campaigns"))]) -> Response:
    """Every campaign and target list with its headline lift."""
    state = serving_of(request)
    rows = state.campaigns.overview(state.store, state.catalog)
    # newest first (a list not sent yet is newest of all); the campaigns too small to measure
    # are folded away below the ones with figures
    rows = sorted(rows, key=lambda c: (bool(c.get("not_sent")), c.get("end") or ""), reverse=True)
    measured = [c for c in rows if not c.get("suppressed")]
    small = [c for c in rows if c.get("suppressed")]
    return view.render("campaigns.html", title=view.fmt.gettext("Campaigns"), campaigns=measured, small=small)


@router.get("/campaigns/{campaign_id}")
def campaign_page(
    campaign_id: str, request: Request, view: Annotated[View, Depends(signed_in("campaigns"))]
) -> Response:
    """One campaign's results by action and channel, with lift charts."""
    state = serving_of(request)
    report = _results(state, campaign_id=campaign_id)
    cells, lift_svg, bought_svg = _cells(report, view, state.catalog)
    return view.render(
        "campaign.html",
        title=view.fmt.gettext("Campaign results"),
        campaign_id=campaign_id,
        report=report,
        cells=cells,
        lift_svg=lift_svg,
        bought_svg=bought_svg,
    )


@router.get("/analytics")
def analytics_page(request: Request, view: Annotated[View, Depends(signed_in("analytics"))]) -> Response:
    """KPIs, product affinity by age group as a heatmap, and the campaigns' headline lifts."""
    from kundenwert.serving.routes.marketing import affinity_by_age, kpis

    state = serving_of(request)
    f = view.fmt
    figures = kpis(state, 90)
    affinity = affinity_by_age(state)
    ages = ("<25", "25-34", "35-44", "45-54", "55-64", "65+", "unknown")
    cats = sorted({r["category"] for r in affinity["rows"]})
    cols = [a for a in ages if any(r["age_group"] == a for r in affinity["rows"])]
    cat_name = {c: f.gettext(f"{c}:category") for c in cats}
    age_name = {a: f.gettext(f"{a}:age") for a in cols}
    values = {
        (cat_name[r["category"]], age_name[r["age_group"]]): r["mean_predicted"]
        for r in affinity["rows"]
        if "mean_predicted" in r
    }
    heat = charts.heatmap(
        [cat_name[c] for c in cats],
        [age_name[a] for a in cols],
        values,
        lambda v: f.percent(v, 0),
        f.gettext("Mean predicted affinity by age group"),
    )
    overview = [c for c in state.campaigns.overview(state.store, state.catalog) if c.get("headline")]
    bars = [
        (c["campaign_id"], c["headline"]["estimate"], c["headline"]["low"], c["headline"]["high"])
        for c in overview
    ]
    return view.render(
        "analytics.html",
        title=view.fmt.gettext("Analytics"),
        k=figures,
        heat=heat,
        has_affinity=bool(values),
        lift_svg=charts.lift_chart(bars, f.points, f.gettext("Headline lift per campaign")),
        channels=MARKETING_CHANNELS,
    )


# ---------------------------------------------------------------------- data science


def _model_rows(run: dict) -> tuple[list[dict], str | None]:
    """The champion of every model of the run: version, whether it passed its gates (and the
    spec's default gates), its test metrics and when it was registered, from the registry. An
    unreachable registry is said on the page (the versions of the run stay), never a 500."""
    from kundenwert.experiments.registry import REGISTERED, tracking_uri
    from kundenwert.models.specs import SPECS

    rows = [
        {
            "model": name,
            "version": version,
            "metrics": {},
            "test_rows": None,
            "passed": None,
            "gates": dict(SPECS[name].gates) if name in SPECS else {},
            "at": None,
        }
        for name, version in sorted(run["models"].items())
    ]
    try:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri())
        for row in rows:
            if row["version"] is None:
                continue
            v = client.get_model_version(REGISTERED.format(row["model"]), str(row["version"]))
            metrics = dict(client.get_run(v.run_id).data.metrics) if v.run_id else {}
            row["test_rows"] = metrics.pop("rows", None)
            row["metrics"] = dict(sorted(metrics.items()))
            row["passed"] = v.tags.get("gates_passed")
            row["at"] = datetime.fromtimestamp(v.creation_timestamp / 1000, UTC)
    except Exception as exc:  # noqa: BLE001  the registry is optional for this page: say so, go on
        return rows, type(exc).__name__
    return rows, None


@router.get("/models")
def models_page(request: Request, view: Annotated[View, Depends(signed_in("models"))]) -> Response:
    """The models in service: the scoring run in use and each model's champion."""
    state = serving_of(request)
    run = state.run
    rows, failed = _model_rows(run)
    return view.render(
        "models.html",
        title=view.fmt.gettext("Models in service"),
        run=run,
        rows=rows,
        registry_failed=failed,
        missing=state.current.missing_models,
        unavailable=state.current.unavailable,
        mlflow_ui=view.web.mlflow_ui_url,
    )
