"""Marketing: target lists and analytics."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from kundenwert.db import audit
from kundenwert.features.contract import MARKETING_CHANNELS
from kundenwert.serving.campaign_plans import CampaignPlan, CampaignPlanRequest, plan_campaign
from kundenwert.serving.deps import allow, get_state
from kundenwert.serving.keys import Caller
from kundenwert.serving.problems import KEYED, responses
from kundenwert.serving.sales import MAX_DAYS, MIN_GROUP, Dimension, SalesBy, sales_report
from kundenwert.serving.schemas import Id, InstantText
from kundenwert.serving.state import ServingState
from kundenwert.serving.target_lists import (
    CURSOR_PATTERN,
    TargetListRequest,
    build_target_list,
    csv_chunks,
    load_target_list,
    members_now,
    page_of,
    save_target_list,
    save_target_lists,
)
from kundenwert.settings import get_settings

router = APIRouter(prefix="/v1", tags=["marketing"])
MAX_PAGE = 10_000  # members per page of a JSON read


@router.post(
    "/target-lists",
    status_code=201,
    responses=responses(*KEYED, 400, 409, 413, 422, s409="no catalog action serves the request now"),
)
def create_target_list(
    body: TargetListRequest,
    state: Annotated[ServingState, Depends(get_state)],
    who: Annotated[Caller, Depends(allow("marketing"))],
) -> dict:
    """Build and store a target list for an objective on one channel: the customers for whom the
    objective's actions are the best suggestion now (consent and contact rules applied), filtered,
    ranked by their score and cut to a size or a budget, with a control group held out. The score
    ranks by the incremental value a contact earns where the response model learnt the action's
    uplift (the catalog's ``ranking``; ``summary.ranked_by`` per action), so the list does not
    spend contacts on customers who would respond anyway. Returns the list id and a summary (with
    ``expected_incremental_responders`` and ``expected_incremental_value`` where the uplift is
    known); ``GET /v1/target-lists/{id}`` exports the members. A list has at most
    ``KUNDENWERT_MAX_TARGET_LIST`` members (default 100,000): a larger size, or a budget that would
    buy more, is cut to it and ``summary.cut_to_max_size`` says so.

    ``selection: "optimal"`` chooses the members instead as the (customer, action) set with the
    largest total score under the budget, with the size (else the maximum) as the channel's
    capacity and at most one action per customer: better than the ranked list where the
    objective's actions cost differently. ``summary.optimisation`` then gives ``method``,
    ``optimal``, ``objective_value`` (the total score) beside ``ranked_objective_value`` (the
    ranked list's), ``lp_bound`` and ``gap``, ``cost``, ``contacts``, the expected incremental
    responders and value of all members (before the control is held out), and the shadow prices:
    ``budget_shadow_price`` (objective value of one more unit of money) and
    ``capacity_shadow_price`` (of one more member), with ``budget_gain`` / ``capacity_gain``, what
    one more unit buys when the LP is solved again (null without a budget or a size)."""
    list_id, summary, members = build_target_list(
        body,
        state.catalog,
        state.decide,
        state.held_scores(),
        state.current.unavailable,
        max_size=get_settings().max_target_list,
    )
    created = save_target_list(state.store.engine, list_id, body, summary, members, who)
    return {
        "list_id": list_id,
        "created_at": created,
        "summary": summary,
        "url": f"/v1/target-lists/{list_id}",
    }


@router.post(
    "/campaign-plans",
    status_code=201,
    response_model=CampaignPlan,
    responses=responses(
        *KEYED, 400, 409, 413, 422, s409="no catalog action serves the request now on a channel of the plan"
    ),
)
def create_campaign_plan(
    body: CampaignPlanRequest,
    state: Annotated[ServingState, Depends(get_state)],
    who: Annotated[Caller, Depends(allow("marketing"))],
) -> dict:
    """Plan a campaign across channels: the set of (customer, action, channel) with the largest
    total score for the objective under a money ``budget`` and a ``capacity`` (contacts) per
    channel, ``{"email": {}, "phone": {"capacity": 500}}``, at most one action per customer, after
    consent, eligibility and contact policy.
    The score is the incremental value x lever - cost where the action is ranked by uplift, else
    the expected value x lever - cost. Solved as an assignment problem (an exact MILP up to
    20,000 options, else the LP rounded with its bound: ``method``, ``optimal``, ``gap``).

    The answer gives per channel the contacts, cost, expected incremental responders and value
    and the capacity's shadow price (the objective value of one more contact), the budget's
    shadow price (of one more unit of money), and the greedy reference (customers by their best
    score while it fits) beside it. Shadow prices are the LP's; ``gain`` says what exactly one
    more unit buys in the LP. Every channel is capped at ``KUNDENWERT_MAX_TARGET_LIST``.

    ``save: true`` stores one target list per channel with contacts (each with its own control
    group of ``control_share``, drawn after the plan, so the spent money is lower by about that
    share), in one transaction: ``channels.<channel>.list_id``, read and measured like any list."""
    plan, lists = plan_campaign(
        body,
        state.catalog,
        state.decide,
        state.held_scores(),
        state.current.unavailable,
        max_size=get_settings().max_target_list,
    )
    if body.save:
        plan["created_at"] = save_target_lists(
            state.store.engine, lists, who, detail={"plan_id": plan["plan_id"]}
        )
        plan["saved"] = True
    return plan


@router.get(
    "/target-lists/{list_id}",
    responses={
        200: {
            "content": {"text/csv": {}},
            "description": "JSON (a page), or CSV (the whole list) with format=csv",
        },
        **responses(*KEYED, 404, 422, s404="no such target list"),
    },
)
def get_target_list(
    list_id: Id,
    state: Annotated[ServingState, Depends(get_state)],
    who: Annotated[Caller, Depends(allow("marketing", "data_science"))],
    format: Annotated[Literal["json", "csv"], Query(description="json or csv")] = "json",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="JSON: members per page")] = 1000,
    cursor: Annotated[
        str | None,
        Query(pattern=CURSOR_PATTERN, description="JSON: the next_cursor of the previous page"),
    ] = None,
):
    """A stored target list with its members in rank order (customer, group: treated or
    control, action, score, propensity, expected value, cost), as JSON or as a CSV download for
    the campaign tool. Control members are never to be contacted: they measure the effect.

    Members are checked against the store at the moment of the export: a customer who objected,
    withdrew the consent for the list's channel or was erased since the list was made is left
    out, and ``left_out`` says how many and why (the CSV carries the counts in the headers
    ``X-Left-Out-*``). Text cells that a spreadsheet would run as a formula are escaped. Every
    export is audited (who, which list, how many rows; every JSON page is one export).

    JSON is read in pages: up to ``limit`` members after ``cursor`` (none: from the start) and
    ``next_cursor`` for the next page (null on the last). The cursor is a position in the list, so
    a walk sees every member once; one who is left out between two pages is simply not on the
    later page, and a page may hold fewer than ``limit`` members. ``left_out`` counts the whole
    list at the moment of each page (counts only, no ids). The CSV is the whole list, streamed."""
    meta, stored = load_target_list(state.store.engine, list_id)
    ids = stored["customer_id"].astype(str).tolist()
    members, left_out = members_now(meta, stored, state.standing(ids))
    page, next_cursor = page_of(members, cursor, limit) if format == "json" else (members, None)
    audit.record(
        state.store.engine,
        who,
        "target_list.export",
        "target_list",
        list_id,
        rows=len(page),
        detail={"format": format, "left_out": left_out["total"]},
    )
    if format == "csv":
        return StreamingResponse(
            csv_chunks(members),
            media_type="text/csv",
            headers={
                "Content-Disposition": f'attachment; filename="target-list-{list_id}.csv"',
                **{f"X-Left-Out-{k.replace('_', '-').title()}": str(v) for k, v in left_out.items()},
            },
        )
    return {**meta, "left_out": left_out, "members": page.to_dict("records"), "next_cursor": next_cursor}


@router.get(
    "/analytics/affinity-by-age-group",
    dependencies=[Depends(allow("marketing", "data_science"))],
    responses=responses(*KEYED),
)
def affinity_by_age(state: Annotated[ServingState, Depends(get_state)]) -> dict:
    """Mean predicted affinity per category and age group and its lift against all customers
    (groups of fewer than 20 customers left out; customers who object to profiling now are not
    counted)."""
    from kundenwert.models.affinity import affinity_by_age_group

    scores = _profiled_now(state)
    predicted = scores[[c for c in scores.columns if c.startswith("affinity_")]]
    if predicted.columns.empty:  # a run without the affinity model
        return {
            "score_run": state.run["run_id"],
            "rows": [],
            "missing": "no affinity model in this scoring run",
        }
    table = affinity_by_age_group(scores[["age_group"]], predicted=predicted)
    table = table[table["customers"] >= MIN_GROUP]
    rows = [
        {"category": cat, "age_group": age, **{k: float(v) for k, v in r.items()}}
        for (cat, age), r in table.iterrows()
    ]
    return {"score_run": state.run["run_id"], "rows": rows}


@router.get(
    "/analytics/sales-by-age-group",
    dependencies=[Depends(allow("marketing", "data_science"))],
    responses=responses(
        *KEYED, 400, 422, s400="since is not before until, or days is given with both since and until"
    ),
)
def sales_by_age(
    state: Annotated[ServingState, Depends(get_state)],
    by: Annotated[SalesBy, Query(description="a row per product category or per product")] = SalesBy.category,
    dims: Annotated[
        list[Dimension] | None,
        Query(
            description="group dimensions besides age_group (always there); repeat: dims=customer_type&dims=region"
        ),
    ] = None,
    days: Annotated[
        int | None, Query(ge=1, le=MAX_DAYS, description="length of the period in days (default 90)")
    ] = None,
    since: Annotated[
        InstantText | None, Query(description="start of the period: ISO date or instant (UTC unless given)")
    ] = None,
    until: Annotated[
        InstantText | None,
        Query(
            description="end of the period, exclusive (default: the end of the day of the latest purchase)"
        ),
    ] = None,
) -> dict:
    """Sales per category (or product) x age group (and customer type, region) over a period:
    net revenue (returns lower it), margin, units, buyers, the share of the item's revenue and
    buyers each group holds, the previous period of the same length and the change against it, and
    beside it the mean predicted affinity of the group from the current scoring run (``by=category``).

    Without dates the period is the last 90 days of data (up to the end of the day of the latest
    purchase: ``period`` says which); ``since`` and ``until`` win over ``days``, and a ``since``
    not before ``until`` is an empty period. Age groups are the contract's bands at the period's last day
    (``age_at``). Customers who object to profiling now are not counted (``objecting_customers``);
    a cell with fewer than 20 buyers is left out and counted in ``suppressed_groups``; previous-period
    figures of fewer than 20 buyers are null (``suppressed_previous``)."""
    report = sales_report(
        state.store,
        days=days,
        since=since,
        until=until,
        by=by,
        dims=dims or (),
        scores=state.held_scores(),
        score_run=state.run["run_id"],
        strict=False,  # every period the schema allows is answered (see sales_period)
    )
    return report.as_dict()


def _profiled_now(state: ServingState) -> pd.DataFrame:
    """The run's scores of the customers who are in the store and do not object at this moment:
    an objection made after the scoring run takes them out of every analysis at once."""
    from kundenwert.serving.live import consent_now

    scores = state.held_scores()
    now = consent_now(state.store.read_table("consents"), pd.Timestamp.now(tz="UTC"))
    objecting = now.index[now["objection"].to_numpy(dtype=bool)]
    exists = state.store.read_table("customers", ["customer_id"], attributes=False)["customer_id"]
    keep = scores.index.isin(exists) & ~scores.index.isin(objecting)
    return scores[keep]


@router.get(
    "/analytics/kpis",
    dependencies=[Depends(allow("marketing", "data_science"))],
    responses=responses(*KEYED, 422),
)
def kpis(
    state: Annotated[ServingState, Depends(get_state)],
    days: Annotated[int, Query(ge=1, le=3650, description="contacts and responses of the last days")] = 90,
) -> dict:
    """Key figures for marketing: revenue in open offers (pending revenue), customers by status,
    and contacts and responses per channel over the last ``days``."""
    offers = state.store.read_table("offers", ["status", "amount"])
    pending = float(offers.loc[offers["status"] == "open", "amount"].sum())
    contacts = state.store.read_table(
        "contacts", ["contacted_at", "channel", "direction", "is_control", "outcome"]
    )
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=days)
    c = contacts[(contacts["contacted_at"] >= since) & (contacts["direction"] == "outbound")]
    c = c[~c["is_control"].astype("boolean").fillna(False).to_numpy(dtype=bool)]
    responded = c["outcome"].isin(["responded", "converted"]).to_numpy()
    per_channel = {
        ch: {
            "contacts": int((c["channel"] == ch).sum()),
            "responses": int(((c["channel"] == ch).to_numpy() & responded).sum()),
        }
        for ch in MARKETING_CHANNELS
    }
    profiled = _profiled_now(state)
    status = profiled["status"].value_counts()
    return {
        "pending_offer_revenue": pending,
        "customers": {k: int(status.get(k, 0)) for k in ("active", "lapsed", "new")},
        "customers_not_profiled": int(
            len(state.store.read_table("customers", ["customer_id"])) - len(profiled)
        ),
        "contacts_per_channel": per_channel,
        "days": days,
        "response_rate": float(responded.mean()) if len(c) else np.nan,
    }
