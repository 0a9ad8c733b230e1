"""Benchmark: server time per page of the web app (issue 18) against the JSON API serving the same
data, measured in the same run on the same app.

- the customer page (``GET /app/customers/{id}``: profile, consent, timeline of 24 months, next
  best actions with reasons) against its reference, the two API calls that give the same data
  (``GET /v1/customers/{id}`` + ``GET /v1/customers/{id}/next-best-actions``); also with
  ``explain`` (why the others were dropped) against ``next-best-actions?explain=true``;
- the campaigns page (``GET /app/campaigns``: every campaign's headline lift) with the overview
  cached, against the same page with the overview computed anew (what the first request after a
  change of the store pays) and against ``GET /v1/campaigns``;
- the target-list builder's preview (``POST /app/lists/preview``: build without saving, and the
  page) against ``build_target_list`` called directly (the same build, no HTTP, no page) and
  ``POST /v1/target-lists`` (the same build, saved).

The app runs in this process (Starlette's TestClient: ASGI calls, no sockets), so the times are
the server's own plus the client's small constant cost, alike for the page and its reference.
Customers rotate over the first ``--customers`` who do not object. Medians and 99th percentiles
of ``--requests`` requests per row after a warm-up.

    python bench/web.py [--home var] [--requests 300] [--previews 30] [--customers 200]

Needs a scored store (``make run`` leaves one in ``var/``; or ``kundenwert score``).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import table  # noqa: E402


def _times(fn: Callable[[int], object], n: int) -> list[float]:
    """Seconds of ``n`` calls ``fn(i)`` after ``min(n, 10)`` warm-up calls."""
    for i in range(min(n, 10)):
        fn(i)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def _p(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", default=os.environ.get("KUNDENWERT_HOME", "var"))
    ap.add_argument("--requests", type=int, default=300, help="customer page requests per row")
    ap.add_argument("--previews", type=int, default=30, help="list previews per row")
    ap.add_argument("--customers", type=int, default=200)
    args = ap.parse_args()
    os.environ["KUNDENWERT_HOME"] = args.home
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ["KUNDENWERT_RELOAD_SECONDS"] = "0"

    from fastapi.testclient import TestClient

    from kundenwert.db.store import Store
    from kundenwert.serving.app import create_app
    from kundenwert.serving.keys import create_key, revoke_key
    from kundenwert.serving.target_lists import TargetListRequest, build_target_list
    from kundenwert.settings import get_settings

    store = Store()
    keys = {r: create_key(store.engine, r, "bench-web") for r in ("sales", "marketing")}
    try:
        with TestClient(create_app(Store())) as c:
            state = c.app.state.serving
            ids = [str(i) for i in state.held_scores().index[: args.customers * 2]]
            objecting = state.standing(ids).objecting
            ids = [i for i in ids if i not in objecting][: args.customers]

            def browser(role: str) -> TestClient:
                b = TestClient(c.app)
                token = re.search(r'name="csrf" value="(\w+)"', b.get("/app/signin").text)[1]
                b.post("/app/signin", data={"key": keys[role], "csrf": token})
                return b

            sales, marketing = browser("sales"), browser("marketing")
            api_sales = {"X-API-Key": keys["sales"]}
            api_marketing = {"X-API-Key": keys["marketing"]}

            def page(i: int) -> None:
                r = sales.get(f"/app/customers/{ids[i % len(ids)]}")
                assert r.status_code == 200, r.status_code

            def page_explain(i: int) -> None:
                assert sales.get(f"/app/customers/{ids[i % len(ids)]}?explain=1").status_code == 200

            def api(i: int) -> None:
                cid = ids[i % len(ids)]
                assert c.get(f"/v1/customers/{cid}", headers=api_sales).status_code == 200
                assert c.get(f"/v1/customers/{cid}/next-best-actions", headers=api_sales).status_code == 200

            def api_explain(i: int) -> None:
                cid = ids[i % len(ids)]
                assert c.get(f"/v1/customers/{cid}", headers=api_sales).status_code == 200
                r = c.get(f"/v1/customers/{cid}/next-best-actions?explain=true", headers=api_sales)
                assert r.status_code == 200

            body = {"name": "bench", "objective": "churn_prevention", "channel": "email", "size": 500}
            body |= {"control_share": 0.1}
            token = re.search(r'name="csrf" value="(\w+)"', marketing.get("/app/lists/new").text)[1]
            form = {"csrf": token, **{k: str(v) for k, v in body.items()}}

            def preview(_: int) -> None:
                r = marketing.post("/app/lists/preview", data=form)
                assert r.status_code == 200 and 'id="preview-result"' in r.text, r.status_code

            wanted = TargetListRequest.model_validate(body)

            def build(_: int) -> None:
                build_target_list(
                    wanted,
                    state.catalog,
                    state.decide,
                    state.held_scores(),
                    state.current.unavailable,
                    max_size=get_settings().max_target_list,
                )

            def api_list(_: int) -> None:
                assert c.post("/v1/target-lists", json=body, headers=api_marketing).status_code == 201

            def campaigns_page(_: int) -> None:
                assert marketing.get("/app/campaigns").status_code == 200

            def campaigns_computed(_: int) -> None:
                state.campaigns._held = None  # forget: computed as on the first request after a change
                assert marketing.get("/app/campaigns").status_code == 200

            def api_campaigns(_: int) -> None:
                assert c.get("/v1/campaigns", headers=api_marketing).status_code == 200

            rows = []
            for name, fn, n, ref_name, ref, rn in (
                (
                    "campaigns page (cached overview)",
                    campaigns_page,
                    args.previews,
                    "the page with the overview computed anew",
                    campaigns_computed,
                    max(3, args.previews // 5),
                ),
                (
                    "campaigns page (cached overview)",
                    campaigns_page,
                    args.previews,
                    "GET /v1/campaigns (cached overview)",
                    api_campaigns,
                    args.previews,
                ),
                (
                    "customer page",
                    page,
                    args.requests,
                    "GET /v1/customers/{id} + /next-best-actions",
                    api,
                    args.requests,
                ),
                (
                    "customer page, explain",
                    page_explain,
                    args.requests,
                    "the same, ?explain=true",
                    api_explain,
                    args.requests,
                ),
                (
                    "list builder preview",
                    preview,
                    args.previews,
                    "build_target_list (no HTTP)",
                    build,
                    args.previews,
                ),
                (
                    "list builder preview",
                    preview,
                    args.previews,
                    "POST /v1/target-lists (saved)",
                    api_list,
                    args.previews,
                ),
            ):
                a, b = _times(fn, n), _times(ref, rn)
                rows.append(
                    [
                        name,
                        n,
                        f"{_p(a, 0.5):.1f}",
                        f"{_p(a, 0.99):.1f}",
                        ref_name,
                        f"{_p(b, 0.5):.1f}",
                        f"{_p(b, 0.99):.1f}",
                        f"{statistics.median(a) / statistics.median(b):.2f}",
                    ]
                )
    finally:
        for key in keys.values():
            revoke_key(store.engine, key.split("_")[1])
        store.dispose()
    scored = len(state.held_scores())
    print(f"web app server time per page ({scored:,} scored customers; {len(ids)} customers rotated)\n")
    print(
        table(
            ["page", "n", "p50 ms", "p99 ms", "reference", "ref p50 ms", "ref p99 ms", "page / ref (p50)"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
