"""The sales view of a customer and their next best actions."""

from __future__ import annotations

import json
from typing import Annotated

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.concurrency import run_in_threadpool

from kundenwert.features.contract import MARKETING_CHANNELS
from kundenwert.serving.arbitration import REASON_OF_CODE, Decisions
from kundenwert.serving.deps import allow, get_state
from kundenwert.serving.schemas import ConsentView, CustomerDecision, CustomerView
from kundenwert.serving.state import ServingState, explain_reason

router = APIRouter(prefix="/v1/customers", tags=["customers"])
Reader = Depends(allow("sales", "data_science"))


def _check_channels(channels: list[str] | None) -> None:
    bad = sorted(set(channels or []) - set(MARKETING_CHANNELS))
    if bad:
        raise HTTPException(
            422, detail=f"unknown channel(s) {', '.join(bad)}; channels are {', '.join(MARKETING_CHANNELS)}"
        )


def decisions_of(
    state: ServingState, decisions: Decisions, ids: list[str], limit: int, explain: bool, record: bool
) -> list[dict]:
    """One decision per customer id (the rows of ``decisions``, in order), shaped as
    ``CustomerDecision`` (plain dicts: the routes send them as JSON without a second validation;
    the tests check them against the schema)."""
    d = decisions
    catalog, models = state.catalog, state.run["models"]
    scored = state.is_scored
    out = []
    for i, cid in enumerate(ids):
        keep = np.flatnonzero((d.reason[i] == 0) & (d.rank[i] <= limit))
        keep = keep[np.lexsort((d.rank[i, keep], d.channels[keep]))]  # by channel, then rank
        suggestions = []
        for j in keep.tolist():
            a = catalog.action(d.action_ids[j])
            p, v = float(d.propensity[i, j]), float(d.value[i, j])
            suggestions.append(
                {
                    "action_id": a.id,
                    "title": a.title,
                    "kind": a.kind,
                    "channel": d.channels[j],
                    "rank": int(d.rank[i, j]),
                    "score": float(d.score[i, j]),
                    "expected_value": p * v,
                    "propensity": p,
                    "value": v,
                    "cost": float(d.cost[j]),
                    "reasons": state.reasons_for(cid, a.kind),
                }
            )
        funnel = None
        if explain:
            funnel = []
            for j in np.flatnonzero(d.reason[i] != 0).tolist():
                code = REASON_OF_CODE[d.reason[i, j]]
                funnel.append(
                    {
                        "action_id": d.action_ids[j],
                        "channel": d.channels[j],
                        "reason": code,
                        "detail": d.details[d.detail[i, j]],
                        "explanation": explain_reason(code),
                    }
                )
        out.append(
            {
                "customer_id": cid,
                "decision_id": None,
                "scored": scored(cid),
                "suggestions": suggestions,
                "funnel": funnel,
                "model_versions": models,
            }
        )
    if record:
        decision_ids = state.record(
            {
                o["customer_id"]: [
                    {
                        "action_id": s["action_id"],
                        "channel": s["channel"],
                        "score": round(s["score"], 6),
                        "rank": s["rank"],
                    }
                    for s in o["suggestions"]
                ]
                for o in out
            }
        )
        for o in out:
            o["decision_id"] = decision_ids.get(o["customer_id"])
    return out


def json_response(content, status_code: int = 200) -> Response:
    """``content`` as JSON, sent as is: the route's ``response_model`` documents it."""
    return Response(json.dumps(content, allow_nan=False), status_code, media_type="application/json")


@router.get("/{customer_id}/next-best-actions", response_model=CustomerDecision, dependencies=[Reader])
async def next_best_actions(
    customer_id: str,
    state: Annotated[ServingState, Depends(get_state)],
    channel: Annotated[str | None, Query(description="only this channel")] = None,
    limit: Annotated[int, Query(ge=1, le=50, description="suggestions per channel")] = 3,
    explain: Annotated[bool, Query(description="also every dropped candidate and why")] = False,
) -> Response:
    """Ranked actions for one customer, per channel. Runs on the event loop: a decision is two
    indexed reads, array work on a few dozen candidates and one insert, well under a millisecond;
    a thread-pool hop would cost more than it saves."""
    channels = [channel] if channel else None
    _check_channels(channels)
    if state.current.main.candidates.position(customer_id) is not None:
        decisions = state.decide_one(customer_id, channels=channels)
        return json_response(decisions_of(state, decisions, [customer_id], limit, explain, record=True)[0])
    # not in the run: a new customer is scored online (models and SHAP: far more than a
    # millisecond), so off the event loop
    return json_response(await run_in_threadpool(_not_in_run, state, customer_id, channels, limit, explain))


def _not_in_run(state: ServingState, customer_id: str, channels, limit: int, explain: bool) -> dict:
    if not state.reader.exists(customer_id):
        raise HTTPException(404, detail=f"no customer {customer_id!r} in the store")
    decisions = state.decide_one(customer_id, channels=channels)
    return decisions_of(state, decisions, [customer_id], limit, explain, record=True)[0]


def _num(v) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


@router.get("/{customer_id}", response_model=CustomerView, dependencies=[Reader])
def customer(customer_id: str, state: Annotated[ServingState, Depends(get_state)]) -> CustomerView:
    if not state.known([customer_id]):
        raise HTTPException(404, detail=f"no customer {customer_id!r} in the store")
    consent = state.consent_of([customer_id])
    c = consent.reindex([customer_id]).iloc[0] if len(consent) else None
    consent_view = ConsentView(
        **{k: bool(c[k]) if c is not None and pd.notna(c[k]) else False for k in ConsentView.model_fields}
    )
    p = state.profile(customer_id) or {}
    affinities = sorted(
        (
            (k.removeprefix("affinity_"), v)
            for k, v in p.items()
            if k.startswith("affinity_") and v is not None
        ),
        key=lambda kv: -kv[1],
    )
    return CustomerView(
        customer_id=customer_id,
        scored=bool(p),
        profile={k: p.get(k) for k in ("status", "customer_type", "age_group", "region", "open_complaint")},
        clv=_num(p.get("clv")),
        p_alive=_num(p.get("p_alive")),
        churn_risk=_num(p.get("churn")),
        winback_chance=_num(p.get("winback")),
        top_affinities=[{"category": k, "probability": float(v)} for k, v in affinities[:3]],
        consent=consent_view,
        reasons={k: state.reasons(customer_id, k) for k in ("churn", "winback", "value")},
        model_versions=state.run["models"],
    )
