"""The sales view of a customer and their next best actions."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Query

from kundenwert.features.contract import MARKETING_CHANNELS
from kundenwert.serving.deps import allow, get_state
from kundenwert.serving.schemas import ConsentView, CustomerDecision, CustomerView, Dropped, Suggestion
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
    state: ServingState, candidates: pd.DataFrame, ids: list[str], limit: int, explain: bool, record: bool
):
    """One ``CustomerDecision`` per customer id from arbitration's candidates."""
    kept = candidates[(candidates["reason"] == "") & (candidates["rank"] <= limit)]
    kept = kept.sort_values(["customer_id", "channel", "rank"], kind="stable")
    decision_ids = state.record_many(kept) if record else {}
    by_customer = dict(tuple(kept.groupby("customer_id", sort=False)))
    dropped = (
        dict(tuple(candidates[candidates["reason"] != ""].groupby("customer_id", sort=False)))
        if explain
        else {}
    )
    out = []
    for cid in ids:
        part = by_customer.get(cid)
        suggestions = []
        if part is not None:
            for r in part.itertuples():
                a = state.catalog.action(r.action_id)
                suggestions.append(
                    Suggestion(
                        action_id=r.action_id,
                        title=a.title,
                        kind=a.kind,
                        channel=r.channel,
                        rank=int(r.rank),
                        score=float(r.score),
                        expected_value=float(r.expected_value),
                        propensity=float(r.propensity),
                        value=float(r.value),
                        cost=float(r.cost),
                        reasons=state.reasons_for(cid, a.kind),
                    )
                )
        funnel = None
        if explain:
            d = dropped.get(cid)
            funnel = [
                Dropped(
                    action_id=x.action_id,
                    channel=x.channel,
                    reason=x.reason,
                    detail=x.detail,
                    explanation=explain_reason(x.reason),
                )
                for x in (d.itertuples() if d is not None else [])
            ]
        out.append(
            CustomerDecision(
                customer_id=cid,
                decision_id=decision_ids.get(cid),
                scored=cid in state.scores.index,
                suggestions=suggestions,
                funnel=funnel,
                model_versions=state.run["models"],
            )
        )
    return out


@router.get("/{customer_id}/next-best-actions", response_model=CustomerDecision, dependencies=[Reader])
def next_best_actions(
    customer_id: str,
    state: Annotated[ServingState, Depends(get_state)],
    channel: Annotated[str | None, Query(description="only this channel")] = None,
    limit: Annotated[int, Query(ge=1, le=50, description="suggestions per channel")] = 3,
    explain: Annotated[bool, Query(description="also every dropped candidate and why")] = False,
) -> CustomerDecision:
    channels = [channel] if channel else None
    _check_channels(channels)
    if not state.known([customer_id]):
        raise HTTPException(404, detail=f"no customer {customer_id!r} in the store")
    candidates, _ = state.decide([customer_id], channels=channels)
    return decisions_of(state, candidates, [customer_id], limit, explain, record=True)[0]


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
