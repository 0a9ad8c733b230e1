"""Target lists: marketing asks for an objective, a channel, filters and a size or budget; gets the
best customers for it (after consent, eligibility and contact policy, like every suggestion) and
a control group, stored under the list's id.

The candidates are the customers the arbitration keeps for the objective's actions on the channel.
``selection="ranked"`` (the default): one action per customer (their best), taken by score until
the size or the budget (the channel costs) is used up. ``selection="optimal"``: the set of
(customer, action) with the largest total score under the budget and the size (the channel's
capacity), at most one action per customer, solved as an assignment problem
(``kundenwert.models.assign``: exact MILP for small problems, the LP with a bound beyond); the
summary's ``optimisation`` block gives the solver's answer and the shadow prices of the budget
and of the size. Either way a stable draw by list id then holds ``control_share`` of the members
out as the control group (kept in the list, marked ``control``, never to be contacted).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kundenwert.db import audit
from kundenwert.db.backends import backend_for
from kundenwert.db.errors import map_exceptions
from kundenwert.db.migrate import ensure_tables
from kundenwert.db.schema import TABLE_DEFS, TARGET_LIST_MEMBERS, TARGET_LISTS
from kundenwert.errors import KundenwertError
from kundenwert.features.contract import MAX_ID_LENGTH
from kundenwert.serving.arbitration import in_control_group
from kundenwert.serving.exports import safe_csv
from kundenwert.serving.kinds import OBJECTIVE_KINDS, ObjectiveName, action_kind
from kundenwert.serving.schemas import Channel, Id, Number, bounded

LISTS, MEMBERS = TARGET_LISTS, TARGET_LIST_MEMBERS


class NotFoundError(KundenwertError):
    http_status = 404


class UnservableRequest(KundenwertError):
    """A valid request the catalog or the scoring run cannot serve (no action for that objective
    on that channel): 409, a conflict with what is configured now, not a malformed request."""

    http_status = 409


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    age_groups: list[Literal["<25", "25-34", "35-44", "45-54", "55-64", "65+", "unknown"]] | None = None
    regions: list[Annotated[str, Field(max_length=MAX_ID_LENGTH)]] | None = Field(None, max_length=1_000)
    customer_types: list[Literal["consumer", "business", "retailer"]] | None = None
    statuses: list[Literal["active", "lapsed", "new"]] | None = None
    min_clv: Number | None = None
    max_clv: Number | None = None


# ``check_objective`` as JSON Schema: cross_sell names its category, action its action_id (the
# rules of target lists and campaign plans alike)
OBJECTIVE_RULES: list[Any] = [
    {
        "if": {"required": ["objective"], "properties": {"objective": {"const": "cross_sell"}}},
        "then": {
            "required": ["category"],
            "properties": {"category": {"type": "string", "minLength": 1}},
        },
    },
    {
        "if": {"required": ["objective"], "properties": {"objective": {"const": "action"}}},
        "then": {
            "required": ["action_id"],
            "properties": {"action_id": {"type": "string", "minLength": 1}},
        },
    },
]


def check_objective(objective: str, category: str | None, action_id: str | None, what: str) -> None:
    """``ValueError`` when a ``what`` (list, plan) for ``objective`` lacks what it must name: an
    objective by category its category, ``action`` its action_id."""
    by_category = objective != "action" and action_kind(OBJECTIVE_KINDS[objective]).by_category
    if by_category and not category:
        raise ValueError(f"a {objective} {what} needs its category")
    if objective == "action" and not action_id:
        raise ValueError(f"an action {what} needs its action_id")


class TargetListRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "November churn prevention",
                    "objective": "churn_prevention",
                    "channel": "email",
                    "filters": {"age_groups": ["25-34", "35-44"], "min_clv": 50},
                    "size": 500,
                    "control_share": 0.1,
                }
            ],
            # the rules of ``_complete`` as JSON Schema, so that a client generated from the
            # document (and the fuzzer) knows them: a size or a budget; cross_sell names its
            # category, action its action_id
            "anyOf": [
                {"required": ["size"], "properties": {"size": {"type": "integer"}}},
                {"required": ["budget"], "properties": {"budget": {"type": "number"}}},
            ],
            "allOf": OBJECTIVE_RULES,
        },
    )

    name: str = Field("", max_length=200)
    objective: ObjectiveName = Field(description="an ActionKind's objective, or action (one action by id)")
    category: Id | None = Field(None, description="cross_sell: the category")
    action_id: Id | None = Field(None, description="action: the catalog action")
    channel: Channel
    filters: Filters = Filters()
    size: bounded(int, ge=1, le=1_000_000) | None = Field(  # type: ignore[valid-type]
        None,
        description="customers in the list (with control); cut to the service's maximum "
        "(KUNDENWERT_MAX_TARGET_LIST, default 100,000), and the summary says so",
    )
    budget: bounded(float, gt=0) | None = Field(  # type: ignore[valid-type]
        None, description="total channel cost of the targeted customers"
    )
    control_share: bounded(float, ge=0, lt=1) = 0.1  # type: ignore[valid-type]
    detect_lift: bounded(float, gt=0, lt=1) | None = Field(  # type: ignore[valid-type]
        None,
        description="plan for detecting this absolute lift of the response rate (0.01: one point): "
        "the answer's planning gives the list size and the control share it needs",
    )
    selection: Literal["ranked", "optimal"] = Field(
        "ranked",
        description="ranked: each customer's best action, customers by score until the size or "
        "the budget is used up; optimal: the (customer, action) set with the largest total score "
        "under the budget and the size, at most one action per customer (an assignment problem; "
        "the summary's optimisation block gives its shadow prices)",
    )

    @model_validator(mode="after")
    def _complete(self) -> TargetListRequest:
        if self.size is None and self.budget is None:
            raise ValueError("give a size, a budget or both")
        check_objective(self.objective, self.category, self.action_id, "list")
        return self


def actions_for(request: TargetListRequest, catalog, unavailable: dict[str, str] | None = None) -> list[str]:
    """The catalog actions that serve the request's objective on its channel (and that the
    scoring run can serve: none of ``unavailable``, ``Catalog.unavailable``)."""
    return serving_actions(
        catalog, request.objective, request.category, request.action_id, request.channel, unavailable
    )


def serving_actions(
    catalog,
    objective: str,
    category: str | None,
    action_id: str | None,
    channel: str,
    unavailable: dict[str, str] | None = None,
) -> list[str]:
    """The catalog actions that serve ``objective`` (of ``category``; ``action``: ``action_id``)
    on ``channel`` and that the scoring run can serve; ``UnservableRequest`` (409) when none."""
    if objective == "action":
        if action_id not in catalog.ids:
            raise UnservableRequest(f"unknown action {action_id!r}; actions are: {', '.join(catalog.ids)}")
        chosen = [catalog.action(action_id)]
    else:
        kind = action_kind(OBJECTIVE_KINDS[objective])
        chosen = [
            a
            for a in catalog.actions
            if a.kind == kind.name and (not kind.by_category or a.category == category)
        ]
    chosen = [a for a in chosen if channel in a.channels]
    if not chosen:
        raise UnservableRequest(
            f"no catalog action serves {objective}"
            + (f" of {category}" if category else "")
            + f" on {channel}"
        )
    unavailable = unavailable or {}
    servable = [a for a in chosen if a.id not in unavailable]
    if not servable:
        raise UnservableRequest(
            f"no catalog action for {objective} on {channel} can be served by the "
            "current scoring run: " + "; ".join(f"{a.id} {unavailable[a.id]}" for a in chosen)
        )
    return [a.id for a in servable]


def _filtered(scores: pd.DataFrame, f: Filters) -> pd.DataFrame:
    keep = np.ones(len(scores), dtype=bool)
    for column, allowed in (
        ("age_group", f.age_groups),
        ("region", f.regions),
        ("customer_type", f.customer_types),
        ("status", f.statuses),
    ):
        if allowed is not None:
            keep &= scores[column].isin(allowed).to_numpy()
    if "clv" not in scores.columns:
        if f.min_clv is not None or f.max_clv is not None:
            raise UnservableRequest(
                "the min_clv and max_clv filters need clv: no clv model in this scoring run"
            )
        return scores[keep]
    clv = scores["clv"].to_numpy(dtype="float64", na_value=np.nan)
    if f.min_clv is not None:
        keep &= clv >= f.min_clv
    if f.max_clv is not None:
        keep &= clv <= f.max_clv
    return scores[keep]


CANDIDATE_COLUMNS = [
    "customer_id",
    "action_id",
    "channel",
    "score",
    "propensity",
    "expected_value",
    "cost",
    "uplift",
    "ranked_by",
    "incremental_value",
]


def kept_candidates(pool: pd.DataFrame, decide, channels: list[str], action_ids: list[str]) -> pd.DataFrame:
    """The (customer, action, channel) rows of ``pool``'s customers that the arbitration keeps
    now for ``action_ids`` on ``channels`` (``Decisions.frame()`` rows). The action's own control
    group is the list's business: both kinds of candidates count."""
    if not len(pool):
        return pd.DataFrame(columns=CANDIDATE_COLUMNS)
    ids = [str(i) for i in pool.index]
    cand = decide(ids, channels=channels, actions=action_ids).frame()
    return cand[cand["reason"].isin(["", "control_group"])]


def _ranked(
    ok: pd.DataFrame, size: int | None, budget: float | None, max_size: int | None
) -> tuple[pd.DataFrame, bool]:
    """Each customer's best action, customers by score, cut to ``size`` and to the first that
    the ``budget`` (cumulative cost) no longer covers, then to ``max_size``; and whether that
    last cut took any."""
    best = ok.sort_values("score", ascending=False, kind="stable").drop_duplicates("customer_id")
    if size is not None:
        best = best.head(size)
    if budget is not None:
        spent = best["cost"].astype(float).cumsum().to_numpy()
        best = best[np.round(spent, 9) <= budget]  # 40 x 0.05 is 2.0000000000000004
    cut = max_size is not None and len(best) > max_size
    return (best.head(max_size) if cut else best), cut


def assignment_problem(ok: pd.DataFrame) -> pd.DataFrame:
    """``kept_candidates`` rows as ``assign``'s candidates: the objective is the score (the
    incremental value x lever - cost where the action is ranked by uplift, else the expected
    value x lever - cost: what the ranked list sorts by)."""
    return pd.DataFrame(
        {
            "customer": ok["customer_id"].to_numpy(dtype=object),
            "value": ok["score"].to_numpy(dtype="float64"),
            "cost": ok["cost"].to_numpy(dtype="float64"),
            "channel": ok["channel"].to_numpy(dtype=object),
        }
    )


def finite(x: float | None) -> float | None:
    """``x`` as a JSON number, or None when it is missing or not finite (NaN is not JSON)."""
    return None if x is None or not np.isfinite(x) else float(x)


def incremental(rows: pd.DataFrame) -> tuple[float | None, float | None]:
    """(expected incremental responders, expected incremental value) of ``rows``: the sums of
    ``uplift`` and ``incremental_value``; None unless the model learnt the uplift of every row."""
    up = rows["uplift"].to_numpy(dtype="float64") if "uplift" in rows else np.zeros(0)
    inc = rows["incremental_value"].to_numpy(dtype="float64") if len(rows) else np.zeros(0)
    learnt = bool(len(up)) and bool(np.isfinite(up).all() and np.isfinite(inc).all())
    return (float(up.sum()), float(inc.sum())) if learnt else (None, None)


def _optimal(
    ok: pd.DataFrame, request: TargetListRequest, max_size: int | None
) -> tuple[pd.DataFrame, bool, dict]:
    """The members of an optimal list (best first), whether the service's maximum cut it, and
    the summary's ``optimisation`` block. The size is the channel's capacity (the maximum when
    none is given or it is larger)."""
    from kundenwert.models.assign import assign

    capacity = request.size
    by_max = max_size is not None and (capacity is None or capacity > max_size)
    if by_max:
        capacity = max_size
    a = assign(
        assignment_problem(ok),
        budget=request.budget,
        capacity={request.channel: capacity} if capacity is not None else None,
    )
    best = ok.iloc[a.rows].sort_values("score", ascending=False, kind="stable")
    contacts = int(len(best))
    responders, value = incremental(best)
    ranked, _ = _ranked(ok, request.size, request.budget, max_size)
    block = {
        "method": a.method,
        "optimal": bool(a.optimal),
        "status": a.status,
        "objective_value": float(a.value),
        "ranked_objective_value": float(ranked["score"].astype(float).sum()),
        "lp_bound": finite(a.lp_bound),
        "gap": finite(a.gap),
        "expected_incremental_responders": responders,
        "expected_incremental_value": value,
        "cost": float(a.cost),
        "budget": request.budget,
        "budget_shadow_price": finite(a.budget_price),
        "budget_gain": finite(a.budget_gain),
        "capacity": capacity,
        "contacts": contacts,
        "capacity_shadow_price": finite(a.capacity_prices.get(request.channel))
        if capacity is not None
        else None,
        "capacity_gain": finite(a.capacity_gains.get(request.channel)) if capacity is not None else None,
    }
    return best, bool(by_max and capacity is not None and contacts >= capacity), block


def build_target_list(
    request: TargetListRequest,
    catalog,
    decide,
    scores: pd.DataFrame,
    unavailable: dict[str, str] | None = None,
    max_size: int | None = None,
) -> tuple[str, dict, pd.DataFrame]:
    """(list id, summary, members) for ``request``; ``decide(ids, channels=, actions=)`` gives
    arbitration's ``Decisions`` with the customers' live state. ``unavailable``: the actions the
    scoring run cannot serve (left out, and named in the summary). ``max_size``: the most
    members a list may have (``KUNDENWERT_MAX_TARGET_LIST``); a larger size, or a budget that
    would buy more, is cut to it and ``summary["cut_to_max_size"]`` says so (a cut, not a
    refusal: how many a budget buys is only known once the list is built). An optimal list
    (``selection="optimal"``) takes the maximum as its capacity when it has no smaller size."""
    action_ids = actions_for(request, catalog, unavailable)
    pool = _filtered(scores, request.filters)
    list_id = uuid.uuid4().hex
    ok = kept_candidates(pool, decide, [request.channel], action_ids)
    optimisation = None
    if request.selection == "optimal":
        best, cut, optimisation = _optimal(ok, request, max_size)
    else:
        best, cut = _ranked(ok, request.size, request.budget, max_size)
    members, summary = list_of(
        best,
        list_id,
        request.control_share,
        request.detect_lift,
        candidates=int(len(pool)),
        actions=action_ids,
    )
    left_out = {a: why for a, why in (unavailable or {}).items() if a in actions_for(request, catalog)}
    if left_out:  # only when the run lacks models: a run with every model keeps the summary as it was
        summary["unavailable_actions"] = left_out
    if cut:
        summary["cut_to_max_size"] = max_size
    if optimisation is not None:
        summary["optimisation"] = optimisation
    return list_id, summary, members


def list_of(
    best: pd.DataFrame, list_id: str, control_share: float, detect_lift: float | None = None, **about
) -> tuple[pd.DataFrame, dict]:
    """The members (``best`` in its order, one row per customer; ``control_share`` of them held
    out by a stable draw on the list id) and the summary: counts, cost and expectations of the
    targeted members, then ``about`` (the candidates, the actions), the incremental
    expectations, what each action is ranked by and the planning."""
    ids = best["customer_id"].to_numpy(dtype=object)
    control = in_control_group(ids, f"list-{list_id}", control_share, "")
    members = pd.DataFrame(
        {
            "position": np.arange(1, len(best) + 1),
            "customer_id": ids,
            "group": np.where(control, "control", "target"),
            "action_id": best["action_id"].to_numpy(dtype=object),
            "score": best["score"].to_numpy(dtype="float64"),
            "propensity": best["propensity"].to_numpy(dtype="float64"),
            "expected_value": best["expected_value"].to_numpy(dtype="float64"),
            "cost": best["cost"].to_numpy(dtype="float64"),
            "uplift": best["uplift"].to_numpy(dtype="float64") if "uplift" in best else np.nan,
        }
    )
    targeted = members[members["group"] == "target"]
    n_control = int((members["group"] == "control").sum())
    summary: dict = {
        "customers": int(len(members)),
        "targeted": int(len(targeted)),
        "control": n_control,
        "expected_responders": float(targeted["propensity"].sum()),
        "expected_value": float(targeted["expected_value"].sum()),
        "cost": float(targeted["cost"].sum()),
        **about,
    }
    # what the list adds over not contacting it, where the model learnt the uplift of its actions
    inc = best["incremental_value"].to_numpy(dtype="float64")[~control] if len(best) else np.zeros(0)
    up = targeted["uplift"].to_numpy(dtype="float64")
    learnt = bool(len(up)) and bool(np.isfinite(up).all() and np.isfinite(inc).all())
    summary["expected_incremental_responders"] = float(up.sum()) if learnt else None
    summary["expected_incremental_value"] = float(inc.sum()) if learnt else None
    summary["ranked_by"] = (
        {str(a): str(r) for a, r in best[["action_id", "ranked_by"]].drop_duplicates().to_numpy()}
        if len(best)
        else {}
    )
    summary["planning"] = _planning(targeted, n_control, detect_lift)
    return members, summary


def _planning(targeted: pd.DataFrame, control: int, lift: float | None) -> dict | None:
    """The power planning of a list (``results.planning``) at its expected response rate
    without the contact: the propensity minus the predicted uplift where the model knows it,
    else the propensity. None for a list without targeted members."""
    from kundenwert.serving.results import planning

    if targeted.empty:
        return None
    p = targeted["propensity"].to_numpy(dtype="float64")
    u = targeted["uplift"].to_numpy(dtype="float64") if "uplift" in targeted else np.full(len(p), np.nan)
    base = float(np.nanmean(np.where(np.isfinite(u), p - u, p)))
    base = min(max(base, 1e-4), 1 - 1e-4) if np.isfinite(base) else 0.01
    if lift is not None and lift >= 1 - base:
        lift = None  # no rate can rise that far: plan for what can be detected only
    return planning(base, len(targeted), control, lift)


def save_target_list(
    engine: sa.Engine,
    list_id: str,
    request: TargetListRequest,
    summary: dict,
    members: pd.DataFrame,
    who=None,
) -> str:
    """Store the list and its members, and its audit row (``who``: the caller; default the
    command line), in one transaction."""
    return save_target_lists(engine, [(list_id, request, summary, members)], who)


def save_target_lists(
    engine: sa.Engine,
    lists: list[tuple[str, TargetListRequest, dict, pd.DataFrame]],
    who=None,
    detail: dict | None = None,
) -> str:
    """Store several lists (list id, request, summary, members), each with its audit row
    (``detail`` added to each row's detail), in one transaction: all of them or none."""
    ensure_tables(engine, LISTS, MEMBERS, audit.AUDIT)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    actor = who if who is not None else audit.cli_actor()
    # the lists, their members and their audit rows together, or nothing
    with map_exceptions("saving the target list", MEMBERS.name), engine.begin() as conn:
        for list_id, request, summary, members in lists:
            audit.record(
                conn,
                actor,
                "target_list.create",
                "target_list",
                list_id,
                rows=len(members),
                detail={"objective": request.objective, "channel": request.channel, **(detail or {})},
            )
            conn.execute(
                LISTS.insert().values(
                    list_id=list_id,
                    created_at=created,
                    request=request.model_dump_json(),
                    summary=json.dumps(summary),
                )
            )
            if len(members):
                rows = members.assign(list_id=list_id)
                backend_for(conn).bulk_write(conn, MEMBERS, rows, list(rows.columns))
                # a member erased while the list was built is not stored (the export counts them erased)
                customers = TABLE_DEFS["customers"]
                conn.execute(
                    MEMBERS.delete().where(
                        MEMBERS.c.list_id == list_id,
                        ~sa.exists().where(customers.c.customer_id == MEMBERS.c.customer_id),
                    )
                )
    return created


def members_now(meta: dict, members: pd.DataFrame, standing) -> tuple[pd.DataFrame, dict]:
    """The members of a stored list that may still be on it at this moment, and how many were
    left out since its creation and why: ``objection`` (an objection to profiling and direct
    marketing), ``no_consent`` (the consent for the list's channel is withdrawn or bounced),
    ``erased`` (erased customers are gone from the store, the list keeps its count). Both
    groups are checked alike, so target and control stay comparable. ``standing``: the members'
    ``ServingState.standing`` now."""
    channel = meta["request"]["channel"]
    ids = members["customer_id"].astype(str)
    objecting = ids.isin(standing.objecting).to_numpy()
    gone = ~ids.isin(standing.exists).to_numpy()
    no_consent = ~ids.isin(standing.permitted(channel)).to_numpy() & ~objecting & ~gone
    keep = ~(objecting | gone | no_consent)
    erased = max(0, int(meta["summary"].get("customers", len(members))) - len(members)) + int(gone.sum())
    left = {
        "objection": int(objecting.sum()),
        "no_consent": int(no_consent.sum()),
        "erased": erased,
    }
    left["total"] = sum(left.values())
    return members[keep].reset_index(drop=True), left


def list_overview(engine: sa.Engine, limit: int = 500) -> list[dict]:
    """The stored lists, newest first: id, created, name, objective, channel and the summary's
    counts and expectations (no members: a list of lists names no customer)."""
    ensure_tables(engine, LISTS)
    with map_exceptions("reading the target lists", LISTS.name), engine.connect() as conn:
        rows = conn.execute(
            sa.select(LISTS).order_by(LISTS.c.created_at.desc(), LISTS.c.list_id).limit(limit)
        ).mappings()
        out = []
        for row in rows:
            request, summary = json.loads(row["request"]), json.loads(row["summary"])
            out.append(
                {
                    "list_id": row["list_id"],
                    "created_at": row["created_at"],
                    "name": request.get("name", ""),
                    "objective": request.get("objective"),
                    "channel": request.get("channel"),
                    **{
                        k: summary.get(k)
                        for k in ("customers", "targeted", "control", "expected_value", "cost")
                    },
                }
            )
    return out


def load_target_list(engine: sa.Engine, list_id: str, uplift: bool = False) -> tuple[dict, pd.DataFrame]:
    """(meta, members) of a stored list; ``uplift``: with the uplift each member was predicted
    when the list was made (campaign results read it; an export does not carry it)."""
    ensure_tables(engine, LISTS, MEMBERS)
    with map_exceptions("reading the target list", LISTS.name), engine.connect() as conn:
        row = conn.execute(sa.select(LISTS).where(LISTS.c.list_id == list_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"no target list {list_id!r}")
        members = pd.read_sql(
            sa.select(MEMBERS).where(MEMBERS.c.list_id == list_id).order_by(MEMBERS.c.position), conn
        )
    meta = {
        "list_id": row["list_id"],
        "created_at": row["created_at"],
        "request": json.loads(row["request"]),
        "summary": json.loads(row["summary"]),
    }
    return meta, members.drop(columns=["list_id"] if uplift else ["list_id", "uplift"], errors="ignore")


class BadCursor(KundenwertError):
    """A ``cursor`` that is not one this service handed out."""

    http_status = 422


# A cursor is the position of the last member of the previous page, in decimal: every value the
# API document allows (``CURSOR_PATTERN``) is a page (maybe an empty one), so the document says
# exactly which cursors are accepted. (An opaque base64 text let any other string pass the
# document and be refused.)
CURSOR_PATTERN = r"^[0-9]{1,18}$"


def cursor_after(position: int) -> str:
    """The cursor of the page after ``position`` (a member's position in the list)."""
    return str(position)


def position_of(cursor: str | None) -> int:
    """The position a cursor continues after (0: from the start)."""
    if cursor is None:
        return 0
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        raise BadCursor("cursor: not a cursor of this list; pass the next_cursor of the previous page")
    return int(cursor)


def page_of(members: pd.DataFrame, cursor: str | None, limit: int) -> tuple[pd.DataFrame, str | None]:
    """The members after ``cursor`` (by position), at most ``limit``, and the cursor of the next
    page (None: this is the last). Positions only grow, so a walk sees every member once even if
    others are left out between pages."""
    after = members[members["position"].to_numpy() > position_of(cursor)]
    page = after.head(limit)
    more = len(after) > limit
    return page, cursor_after(int(page["position"].iloc[-1])) if more else None


def csv_chunks(members: pd.DataFrame, rows: int = 10_000) -> Iterator[str]:
    """``members`` as CSV text (``safe_csv``) in chunks of ``rows``: the header once, then rows."""
    for start in range(0, max(len(members), 1), rows):
        text = safe_csv(members.iloc[start : start + rows])
        yield text if start == 0 else text.split("\r\n", 1)[1]
