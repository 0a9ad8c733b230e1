"""The web app's rules without a browser (issue 18): sessions, CSRF, roles, headers, languages and
formats, on the TestClient. The end-to-end journeys in Chromium are in ``test_web_browser.py``."""

from __future__ import annotations

import re
from importlib.resources import files
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from kundenwert.serving.keys import create_key, revoke_key
from kundenwert.serving.web import i18n
from kundenwert.serving.web.session import COOKIE, Sessions
from tests.serving.conftest import own_world

# the web app on a served world (sessions, CSRF, roles, pages): minutes, with the slow suites
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(imported_world, trained_small, small_config, tmp_path_factory):
    """A private served world: these tests record outcomes and make keys."""
    with own_world(imported_world, trained_small, small_config, tmp_path_factory, "kw-web") as w:
        yield w


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert found, "no CSRF token in the form"
    return found[1]


def browser(world, https: bool = False, lang: str = "en") -> TestClient:
    """A second client on the world's app with its own cookie jar (a browser of its own)."""
    app = world["client"].app
    return TestClient(
        app,
        base_url="https://testserver" if https else "http://testserver",
        headers={"Accept-Language": lang},
    )


def sign_in(client: TestClient, key: str):
    page = client.get("/app/signin")
    return client.post("/app/signin", data={"key": key, "csrf": csrf_of(page.text)}, follow_redirects=False)


def objecting_customer(world) -> str:
    state = world["client"].app.state.serving
    now = state.standing(world["customers"])
    assert now.objecting, "the sample world has customers who object"
    return sorted(now.objecting)[0]


def profiled_customer(world) -> str:
    state = world["client"].app.state.serving
    now = state.standing(world["customers"])
    return next(c for c in world["customers"] if c not in now.objecting)


def test_signin_sets_a_signed_httponly_strict_cookie_without_the_key_secret(world):
    c = browser(world)
    first = c.get("/app", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/app/signin"
    r = sign_in(c, world["keys"]["sales"])
    assert r.status_code == 303 and r.headers["location"] == "/app"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/app" in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    secret = world["keys"]["sales"].split("_", 2)[2]
    assert secret not in cookie and world["keys"]["sales"] not in cookie
    home = c.get("/app")
    assert home.status_code == 200 and "/app/customers" in home.text


def test_the_cookie_is_secure_on_https(world):
    c = browser(world, https=True)
    r = sign_in(c, world["keys"]["marketing"])
    assert r.status_code == 303
    assert "Secure" in r.headers["set-cookie"]


def test_a_wrong_key_is_refused_and_a_forged_cookie_is_no_session(world):
    c = browser(world)
    r = sign_in(c, "kw_nope_nope")
    assert r.status_code == 401 and "This key is not valid." in r.text
    c.cookies.set(COOKIE, "eyJzIjoiYSIsImUiOjk5OTk5OTk5OTksImsiOiJ4In0.forged", path="/app")
    r = c.get("/app/customers", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/app/signin"


def test_posts_without_the_sessions_csrf_token_are_refused(world):
    c = browser(world)
    assert sign_in(c, world["keys"]["marketing"]).status_code == 303
    r = c.post("/app/lists/preview", data={"objective": "churn_prevention", "channel": "email", "size": "10"})
    assert r.status_code == 403 and "text/html" in r.headers["content-type"]
    assert "This form was not sent from this page" in r.text
    other = browser(world)  # a token of another session is no token for this one
    token = csrf_of(other.get("/app/signin").text)
    r = c.post("/app/signout", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 403
    r = c.post("/app/signin", data={"key": world["keys"]["sales"]}, follow_redirects=False)
    assert r.status_code == 403


def test_a_role_sees_only_its_pages(world):
    sales = browser(world)
    sign_in(sales, world["keys"]["sales"])
    for path in ("/app/lists", "/app/lists/new", "/app/campaigns", "/app/analytics", "/app/models"):
        r = sales.get(path)
        assert r.status_code == 403, path
        assert "Your role may not see this page." in r.text
    marketing = browser(world)
    sign_in(marketing, world["keys"]["marketing"])
    assert marketing.get(f"/app/customers/{profiled_customer(world)}").status_code == 403
    assert marketing.get("/app/lists").status_code == 200
    ds = browser(world)
    sign_in(ds, world["keys"]["data_science"])
    assert ds.get("/app/models").status_code == 200
    assert ds.get("/app/lists/new").status_code == 403  # reads lists, builds none
    admin = browser(world)
    sign_in(admin, world["keys"]["admin"])
    for path in ("/app/customers", "/app/lists/new", "/app/campaigns", "/app/analytics", "/app/models"):
        assert admin.get(path).status_code == 200, path
    campaign = browser(world)
    sign_in(campaign, world["keys"]["campaign"])
    assert "Your role has no pages" in campaign.get("/app").text


def test_pages_are_not_cached_and_have_a_strict_content_security_policy(world):
    c = browser(world)
    sign_in(c, world["keys"]["sales"])
    cid = profiled_customer(world)
    for path in ("/app/signin", "/app/customers", f"/app/customers/{cid}", "/app/lists"):
        r = c.get(path)
        assert r.headers["cache-control"] == "no-store", path
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert "<script>" not in r.text and " style=" not in r.text  # nothing inline
    page = c.get(f"/app/customers/{cid}").text
    title = re.search(r"<title>(.*?)</title>", page)[1]
    assert title == f"Customer {cid} · kundenwert"  # the id the user opened, nothing more


def test_a_revoked_or_expired_key_ends_its_sessions(world):
    engine = world["store"].engine
    keys = world["client"].app.state.keys
    key = create_key(engine, "sales", "web-revoke")
    keys.refresh()
    c = browser(world)
    assert sign_in(c, key).status_code == 303
    assert c.get("/app/customers", follow_redirects=False).status_code == 200
    revoke_key(engine, key.split("_")[1])
    keys.refresh()  # what the service's background refresh does within a second
    r = c.get("/app/customers", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/app/signin?ended=1"
    assert "signed out" in c.get("/app/signin?ended=1").text
    assert c.get("/app/customers", follow_redirects=False).status_code == 303  # the session is gone

    from datetime import UTC, datetime, timedelta

    soon = create_key(engine, "sales", "web-expiry", expires=datetime.now(UTC) + timedelta(seconds=2))
    keys.refresh()
    c = browser(world)
    assert sign_in(c, soon).status_code == 303
    assert c.get("/app/customers", follow_redirects=False).status_code == 200
    import time

    time.sleep(2.1)
    assert c.get("/app/customers", follow_redirects=False).status_code == 303


def test_customer_page_shows_suggestions_and_records_an_outcome_in_the_store(world):
    c = browser(world)
    sign_in(c, world["keys"]["sales"])
    state = world["client"].app.state.serving
    objecting = state.standing(world["customers"]).objecting
    cid = next(
        x
        for x in world["customers"][:400]
        if x not in objecting and 'class="suggestion"' in c.get(f"/app/customers/{x}").text
    )
    page = c.get(f"/app/customers/{cid}").text
    assert 'id="profile"' in page and 'id="timeline"' in page and 'class="suggestion"' in page
    form = re.search(r'<form method="post" action="(/app/customers/[^"]+/outcome)".*?</form>', page, re.S)
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', form[0]))
    r = c.post(form[1], data={**fields, "outcome": "opened"}, follow_redirects=False)
    assert r.status_code == 303
    event_id = r.headers["location"].split("recorded=")[1]
    shown = c.get(r.headers["location"]).text
    assert 'id="stored"' in shown and "opened" in shown
    with world["store"].engine.connect() as conn:
        row = conn.execute(
            sa.text("select decision_id, outcome, action_id from kw_feedback where event_id = :e"),
            {"e": event_id},
        ).one()
    assert (row.decision_id, row.outcome, row.action_id) == (
        fields["decision_id"],
        "opened",
        fields["action_id"],
    )
    explained = c.get(f"/app/customers/{cid}?explain=1").text
    assert 'id="dropped"' in explained
    # recently opened is in the session, not in any URL
    assert cid in c.get("/app/customers").text


def test_an_objecting_customer_shows_no_profile_and_an_unknown_one_is_not_found(world):
    c = browser(world)
    sign_in(c, world["keys"]["sales"])
    page = c.get(f"/app/customers/{objecting_customer(world)}")
    assert page.status_code == 200
    assert 'id="profiling-stopped"' in page.text and 'id="consent"' in page.text
    for hidden in ('id="profile"', 'id="value"', 'id="suggestions"', 'id="timeline"'):
        assert hidden not in page.text
    missing = c.get(f"/app/customers/{quote('no-such-customer')}")
    assert missing.status_code == 404 and "There is nothing here" in missing.text


def test_marketing_previews_saves_and_exports_a_list(world):
    c = browser(world)
    sign_in(c, world["keys"]["marketing"])
    page = c.get("/app/lists/new").text
    form = {"csrf": csrf_of(page), "name": "web test", "objective": "churn_prevention", "channel": "email"}
    form |= {"size": "200", "control_share": "0.2", "detect_lift": "0.02"}
    preview = c.post("/app/lists/preview", data=form)
    assert preview.status_code == 200 and 'id="preview-result"' in preview.text
    assert "Smallest detectable lift" in preview.text
    before = c.get("/app/lists").text.count("web test")
    saved = c.post("/app/lists", data=form, follow_redirects=False)
    assert saved.status_code == 303
    list_id = saved.headers["location"].rsplit("/", 1)[1]
    assert c.get("/app/lists").text.count("web test") == before + 1
    csv = c.get(f"/app/lists/{list_id}/members.csv")
    assert csv.status_code == 200 and csv.text.startswith("position,customer_id,group")
    with world["store"].engine.connect() as conn:
        audited = conn.execute(
            sa.text("select count(*) from kw_audit where action = 'target_list.export' and object_id = :l"),
            {"l": list_id},
        ).scalar()
    assert audited == 1
    bad = c.post("/app/lists/preview", data={**form, "size": "", "budget": ""})
    assert bad.status_code == 422 and "give a size, a budget or both" in bad.text
    # the best set for a budget: the preview says what one more unit of budget would buy
    optimal = {**form, "size": "", "budget": "3", "selection": "optimal"}
    page = c.post("/app/lists/preview", data=optimal).text
    assert 'id="budget-shadow-price"' in page and 'value="optimal" selected' in page
    assert (
        'id="budget-shadow-price"'
        not in c.post("/app/lists/preview", data={**optimal, "selection": "ranked"}).text
    )


def test_german_and_english_pages_and_formats(world):
    de = browser(world, lang="de-DE,de;q=0.9,en;q=0.5")
    sign_in(de, world["keys"]["marketing"])
    page = de.get("/app/analytics").text
    assert '<html lang="de">' in page and "Kennzahlen" in page and "Umsatz in offenen Angeboten" in page
    assert re.search(r"\d\xa0€", page)  # German money: 1.234 € (a no-break space before the sign)
    en = browser(world, lang="en-GB,en;q=0.8")
    sign_in(en, world["keys"]["marketing"])
    page = en.get("/app/analytics").text
    assert '<html lang="en">' in page and "Key figures" in page and "€" in page
    # the switch: a cookie, back to the page
    r = en.post(
        "/app/language",
        data={"lang": "de", "back": "/app/analytics", "csrf": csrf_of(page)},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/app/analytics"
    assert "Kennzahlen" in en.get("/app/analytics").text


def test_negotiation_and_babel_formats():
    assert i18n.negotiate(None, "de-AT,de;q=0.9") == "de"
    assert i18n.negotiate(None, "fr-FR, en;q=0.3, de;q=0.7") == "de"
    assert i18n.negotiate(None, "fr") == "en" and i18n.negotiate(None, None) == "en"
    assert i18n.negotiate("en", "de") == "en"  # the switch wins
    de, en = i18n.Formats("de", {}, "EUR"), i18n.Formats("en", {}, "EUR")
    assert de.number(1234567.891, 2) == "1.234.567,89" and en.number(1234567.891, 2) == "1,234,567.89"
    assert de.money(1234.5) == "1.234,50\xa0€" and en.money(1234.5) == "€1,234.50"
    assert de.percent(0.256) == "25,6\xa0%" and en.percent(0.256) == "25.6%"
    assert de.date("2025-12-31T10:00:00Z") == "31.12.2025" and en.date("2025-12-31") == "Dec 31, 2025"
    assert de.number(None) == i18n.MISSING and de.money(float("nan")) == i18n.MISSING


def test_every_visible_string_has_a_german_translation():
    """Every message of the templates and pages is in the German catalog, every code word too."""
    catalogs = i18n.load_catalogs()
    web = files("kundenwert.serving.web")
    pat = re.compile(r"""(?:\b_|gettext)\(\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')""")
    sources = [p.read_text() for p in web.joinpath("templates").iterdir() if p.name.endswith(".html")]
    sources += [web.joinpath(n).read_text() for n in ("pages.py", "i18n.py")]
    found = {m[0] or m[1] for text in sources for m in pat.findall(text)}
    assert len(found) > 100
    assert found - set(catalogs["de"]) == set()
    codes = {k for k in catalogs["de"] if ":" in k and " " not in k}
    assert codes <= set(catalogs["en"])  # English words for every code


def test_sessions_sign_and_expire():
    s = Sessions(b"x" * 32, hours=1)
    one = s.new()
    assert s.read(s.dump(one)) == one
    assert s.read(s.dump(one)[:-2] + "xx") is None
    assert Sessions(b"y" * 32, hours=1).read(s.dump(one)) is None  # another secret
    from dataclasses import replace

    assert s.read(s.dump(replace(one, expires=0))) is None
    assert s.csrf_ok(one, s.csrf(one)) and not s.csrf_ok(one, s.csrf(s.new())) and not s.csrf_ok(one, None)


def test_the_session_secret_file_is_made_once_with_mode_0600(tmp_path, monkeypatch):
    from kundenwert.serving.web.session import session_secret

    monkeypatch.setenv("KUNDENWERT_HOME", str(tmp_path))
    monkeypatch.delenv("KUNDENWERT_SESSION_SECRET", raising=False)
    first = session_secret()
    assert (tmp_path / "session.key").stat().st_mode & 0o777 == 0o600
    assert session_secret() == first  # a second worker reads the same
    monkeypatch.setenv("KUNDENWERT_SESSION_SECRET", "s" * 40)
    assert session_secret() == b"s" * 40


def test_campaign_results_pages_show_lift_with_intervals_and_plots(world):
    c = browser(world)
    sign_in(c, world["keys"]["marketing"])
    overview = c.get("/app/campaigns")
    assert overview.status_code == 200 and 'id="campaigns"' in overview.text
    state = world["client"].app.state.serving
    from kundenwert.serving.results import campaigns_overview

    rows = campaigns_overview(state.store, state.catalog)
    measured = [x for x in rows if x.get("headline")]
    small = [x for x in rows if x.get("suppressed")]
    assert measured and small, "the sample world has campaigns with and without enough customers"
    # newest first; the ones too small to measure folded away below the table of figures
    main, folded = overview.text.split('id="small-campaigns"')
    newest = sorted(
        (x for x in measured if x["kind"] == "contact_history"), key=lambda x: x["end"], reverse=True
    )
    shown = re.findall(r'href="/app/campaigns/([^"]+)"', main)
    assert shown == [quote(x["campaign_id"]) for x in newest]
    assert {quote(x["campaign_id"]) for x in small if x["kind"] == "contact_history"} <= set(
        re.findall(r'href="/app/campaigns/([^"]+)"', folded)
    )
    assert f"Too small to measure (fewer than 20 treated or control customers): {len(small)}" in folded
    cid = newest[0]["campaign_id"]
    page = c.get(f"/app/campaigns/{quote(cid)}")
    assert page.status_code == 200 and "<svg" in page.text and "Lift of responses" in page.text
    assert f'href="/app/campaigns/{quote(cid)}/lift.png" download' in page.text
    assert re.search(r"[+-]\d+\.\d pp \[[+-]\d+\.\d pp, [+-]\d+\.\d pp\]", page.text)  # lift [low, high]
    png = c.get(f"/app/campaigns/{quote(cid)}/lift.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n" and png.headers["cache-control"] == "no-store"
    assert c.get("/app/campaigns/no-such-campaign").status_code == 404


def test_an_erased_customer_is_not_found_and_only_sales_records_outcomes(world):
    cid = world["customers"][-1]
    admin = world["keys"]["admin"]
    assert world["client"].delete(f"/v1/customers/{cid}", headers={"X-API-Key": admin}).status_code == 200
    c = browser(world)
    sign_in(c, world["keys"]["sales"])
    page = c.get(f"/app/customers/{cid}")
    assert page.status_code == 404 and "There is nothing here, or it was erased." in page.text
    ds = browser(world)
    sign_in(ds, world["keys"]["data_science"])
    other = profiled_customer(world)
    page = ds.get(f"/app/customers/{other}")
    assert page.status_code == 200 and "/outcome" not in page.text  # reads, records nothing
    r = ds.post(f"/app/customers/{other}/outcome", data={"csrf": csrf_of(page.text), "outcome": "opened"})
    assert r.status_code == 403
