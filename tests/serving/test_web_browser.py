"""The web app end to end in a real headless Chromium (issue 18): Debian's ``chromium``
(``scripts/install-chromium.sh``) driven by Playwright, against ``kundenwert serve`` on 127.0.0.1.
Each journey writes screenshots of its pages to ``KUNDENWERT_SCREENSHOTS`` (default
``var/screenshots``)."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import own_world

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a trained world, a server and a browser: minutes

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("KUNDENWERT_SCREENSHOTS", "var/screenshots"))


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium, or a skip that says why there is none."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no {CHROMIUM}: run `make chromium` (scripts/install-chromium.sh) as root")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        except Exception as exc:  # noqa: BLE001  a browser that cannot start here is a skip, not a failure
            pytest.skip(f"Chromium does not start here: {str(exc).splitlines()[0]}")
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def site(imported_world, trained_small, small_config, tmp_path_factory):
    """A trained, scored copy of the sample store served by ``kundenwert serve`` on 127.0.0.1."""
    with own_world(imported_world, trained_small, small_config, tmp_path_factory, "kw-browser") as world:
        port = _port()
        env = {
            **os.environ,
            "KUNDENWERT_HOME": str(world["home"]),
            "KUNDENWERT_DATABASE_URL": world["url"],
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "KUNDENWERT_RELOAD_SECONDS": "0",
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        server = subprocess.Popen(
            [sys.executable, "-m", "kundenwert.cli", "serve", "--port", str(port)],
            env=env,
            stderr=subprocess.PIPE,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                assert server.poll() is None, f"the server exited: {server.stderr.read().decode()[-2000:]}"
                assert time.monotonic() < deadline, "the server did not get ready"
                try:
                    if httpx.get(f"{base}/health/ready", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            world["base"] = base
            world["db"] = world["url"].removeprefix("sqlite:///")
            yield world
        finally:
            server.terminate()
            server.wait(timeout=60)


def _standing(site) -> set[str]:
    """The customers who object now, read from the store as the service reads them."""
    import pandas as pd

    from kundenwert.db.store import Store
    from kundenwert.serving.live import consent_now as now_of

    store = Store(site["url"])
    try:
        c = now_of(store.read_table("consents"), pd.Timestamp.now(tz="UTC"))
    finally:
        store.dispose()
    return set(c.index[c["objection"].to_numpy(dtype=bool)].astype(str))


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def signed_in(chromium, site, role: str, locale: str = "en-US", screenshot: str | None = None):
    context = chromium.new_context(
        locale=locale, accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    page = context.new_page()
    page.goto(f"{site['base']}/app")
    assert page.url.endswith("/app/signin")
    if screenshot:
        shot(page, screenshot)
    page.fill("#key", site["keys"][role])
    page.click("button[type=submit]")
    page.wait_for_url(f"{site['base']}/app")
    return context, page


def test_sales_opens_a_customer_sees_reasons_and_records_an_outcome(chromium, site):
    context, page = signed_in(chromium, site, "sales", screenshot="00-signin")
    shot(page, "01-signed-in-sales")
    page.click("nav >> text=Customers")
    objecting = _standing(site)
    for cid in site["customers"][:300]:
        if cid in objecting:
            continue
        page.goto(f"{site['base']}/app/customers")
        page.fill("#customer_id", cid)
        page.click("text=Open")
        if page.locator("tr.suggestion").count() and page.locator("#timeline tbody tr").count():
            break
    else:
        pytest.fail("no customer of the first 300 has a suggestion and a timeline")
    assert page.url.endswith(f"/app/customers/{cid}")
    assert page.title() == f"Customer {cid} · kundenwert"
    assert page.locator("#profile").is_visible() and page.locator("#timeline").is_visible()
    reasons = page.locator("tr.suggestion td.reasons").first.inner_text()
    assert len(reasons) > 10  # a reason in words
    shot(page, "02-customer")
    page.click("#explain")
    assert page.locator("#dropped tbody tr").count() > 0
    shot(page, "03-customer-why-dropped")
    row = page.locator("tr.suggestion").first
    decision = row.locator("input[name=decision_id]").get_attribute("value")
    action = row.locator("input[name=action_id]").get_attribute("value")
    row.locator("select[name=outcome]").select_option("clicked")
    row.locator("button").click()
    page.wait_for_selector("#stored")
    assert "clicked" in page.locator("#stored").inner_text()
    shot(page, "04-outcome-stored")
    with sqlite3.connect(site["db"]) as db:
        stored = db.execute(
            "select outcome, action_id from kw_feedback where decision_id = ?", (decision,)
        ).fetchall()
    assert stored == [("clicked", action)]
    page.goto(f"{site['base']}/app/customers")
    assert page.locator(f"ul.recent >> text={cid}").count() == 1  # recently opened, from the session
    context.close()


def test_marketing_builds_a_list_downloads_it_and_sees_it_in_the_overview(chromium, site):
    context, page = signed_in(chromium, site, "marketing")
    page.goto(f"{site['base']}/app/lists/new")
    shot(page, "05a-list-builder")
    page.fill("#name", "browser churn list")
    page.select_option("#objective", "churn_prevention")
    page.select_option("#channel", "email")
    page.fill("#size", "300")
    page.fill("#control_share", "0.2")
    page.fill("#detect_lift", "0.03")
    page.click("#preview")
    page.wait_for_selector("#preview-result")
    assert re.search(r"\d", page.locator("#expected-responders").inner_text())
    shot(page, "05-list-preview")
    page.click("#save")
    page.wait_for_url(re.compile(r".*/app/lists/[0-9a-f]{32}$"))
    list_id = page.url.rsplit("/", 1)[1]
    shot(page, "06-list")
    with page.expect_download() as got:
        page.click("#csv")
    path = got.value.path()
    lines = Path(path).read_text().splitlines()
    assert lines[0].startswith("position,customer_id,group,action_id")
    assert 1 < len(lines) <= 301
    with sqlite3.connect(site["db"]) as db:
        (exports,) = db.execute(
            "select count(*) from kw_audit where action = 'target_list.export' and object_id = ?", (list_id,)
        ).fetchone()
    assert exports == 1
    page.click("nav >> text=Target lists")
    assert page.locator("#lists >> text=browser churn list").count() == 1
    shot(page, "07-lists")
    page.click("nav >> text=Campaigns")
    assert page.locator("#campaigns").count() == 1
    shot(page, "08-campaigns")
    measured = page.locator("#campaigns tbody tr", has=page.locator("td.num")).locator(
        "a[href^='/app/campaigns/']"
    )
    assert measured.count() > 0  # campaigns of the contact history with enough customers
    measured.first.click()
    page.wait_for_selector("#results table.results")
    assert page.locator("#results svg").count() == 2  # drawn on the server, no script
    png = page.locator("#results a[download]").get_attribute("href")
    got = page.request.get(f"{site['base']}{png}")  # the same chart as PNG, for slides
    assert got.status == 200 and got.body()[:4] == b"\x89PNG"
    shot(page, "08b-campaign-results")
    page.click("nav >> text=Analytics")
    assert page.locator("#kpis").is_visible() and page.locator("#affinity svg").count() == 1
    shot(page, "09-analytics")
    context.close()


def test_a_sales_key_is_refused_the_marketing_pages(chromium, site):
    context, page = signed_in(chromium, site, "sales")
    for path in ("/app/lists", "/app/lists/new", "/app/campaigns", "/app/analytics", "/app/models"):
        response = page.goto(f"{site['base']}{path}")
        assert response.status == 403, path
        assert "Your role may not see this page." in page.content()
    assert page.locator("nav >> text=Target lists").count() == 0  # nor offered them
    shot(page, "10-sales-refused")
    context.close()


def test_an_objecting_customer_shows_no_profile(chromium, site):
    cid = sorted(_standing(site))[0]
    context, page = signed_in(chromium, site, "sales")
    page.goto(f"{site['base']}/app/customers/{cid}")
    assert page.locator("#profiling-stopped").is_visible()
    assert page.locator("#consent").is_visible()
    for hidden in ("#profile", "#value", "#suggestions", "#timeline"):
        assert page.locator(hidden).count() == 0, hidden
    shot(page, "11-objecting-customer")
    context.close()


def test_form_posts_without_the_csrf_token_are_refused(chromium, site):
    context, page = signed_in(chromium, site, "marketing")
    page.goto(f"{site['base']}/app/lists/new")
    page.locator("form.builder input[name=csrf]").evaluate("e => e.remove()")
    page.click("#preview")
    page.wait_for_load_state()
    assert "This form was not sent from this page" in page.content()
    assert page.locator("#preview-result").count() == 0
    forged = context.request.post(
        f"{site['base']}/app/signout", form={"csrf": "0" * 64}, max_redirects=0, fail_on_status_code=False
    )
    assert forged.status == 403
    page.goto(f"{site['base']}/app/lists")
    assert page.url.endswith("/app/lists")  # still signed in: the forged sign-out did nothing
    context.close()


def test_german_and_english_both_render(chromium, site):
    context, page = signed_in(chromium, site, "marketing", locale="de-DE")
    page.goto(f"{site['base']}/app/analytics")
    assert page.locator("html").get_attribute("lang") == "de"
    assert page.locator("h1").inner_text() == "Auswertungen"
    kpis = page.locator("#kpis").inner_text()
    assert "Umsatz in offenen Angeboten" in kpis
    assert re.search(r"\d €", kpis.replace("\xa0", " "))  # German money: the sign after the amount
    assert "," in page.locator("#channels").inner_text() or "%" in page.locator("#channels").inner_text()
    shot(page, "12-analytics-de")
    page.click("form.lang button[value=en]")
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Analytics"
    assert "Revenue in pending offers" in page.locator("#kpis").inner_text()
    assert re.search(r"€\d", page.locator("#kpis").inner_text())
    context.close()
    context, page = signed_in(chromium, site, "data_science", locale="de-DE")
    page.goto(f"{site['base']}/app/models")
    assert page.locator("h1").inner_text() == "Modelle im Einsatz"
    assert page.locator("#champions tbody tr").count() >= 1
    shot(page, "13-models-de")
    context.close()
