"""The sales view of a customer and their next best actions."""

from __future__ import annotations

import bisect
from typing import Annotated

import numpy as np
import orjson
import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from kundenwert.features.contract import MARKETING_CHANNELS
from kundenwert.serving.arbitration import Decisions
from kundenwert.serving.deps import allow, get_state, serving_of
from kundenwert.serving.keys import Caller
from kundenwert.serving.problems import KEYED, responses
from kundenwert.serving.schemas import Channel, ConsentView, CustomerDecision, CustomerView, Id
from kundenwert.serving.state import ServingState, explain_reason

router = APIRouter(prefix="/v1/customers", tags=["customers"])
Reader = Depends(allow("sales", "data_science"))


def _check_channels(channels: list[str] | None) -> None:
    bad = sorted(set(channels or []) - set(MARKETING_CHANNELS))
    if bad:
        raise HTTPException(
            422, detail=f"unknown channel(s) {', '.join(bad)}; channels are {', '.join(MARKETING_CHANNELS)}"
        )


def _lists(x):
    """A ``Decisions`` field as (nested) lists: ``decide_one`` gives lists, ``decide`` arrays."""
    return x.tolist() if isinstance(x, np.ndarray) else x


def decisions_of(
    state: ServingState,
    decisions: Decisions,
    ids: list[str],
    limit: int,
    explain: bool,
    record: bool,
    held: dict | None = None,
) -> list[dict]:
    """One decision per customer id (the rows of ``decisions``, in order), shaped as
    ``CustomerDecision``: plain dicts for ``json_response`` (the routes send them without a
    second validation; the tests check them against the schema). Reasons are the stored JSON
    texts, embedded as they are."""
    d = decisions
    models = state.run["models"]
    actions = {a.id: a for a in state.catalog.actions}
    held = state.blocks(ids, online=False) if held is None else held  # customer -> Block or None
    objecting = _lists(d.objection) if d.objection is not None else [False] * len(ids)
    reason, rank, score = _lists(d.reason), _lists(d.rank), _lists(d.score)
    propensity, value = _lists(d.propensity), _lists(d.value)
    action_ids, channels, cost = _lists(d.action_ids), _lists(d.channels), _lists(d.cost)
    ranked_by = ["response"] * len(action_ids) if d.ranked_by is None else _lists(d.ranked_by)
    uplift = _lists(d.uplift) if d.uplift is not None else None
    incremental = _lists(d.incremental) if d.incremental is not None else None
    explorer = state.explorer
    # what the response model's predicted uplifts were worth on its held-out contacts
    calibration = getattr(state.current.models.get("response"), "uplift_calibration_", None)
    out = []
    logged: dict[str, dict] = {}  # per customer: each channel's eligible candidates (record)
    for i, cid in enumerate(ids):
        r, k = reason[i], rank[i]
        # per channel, the eligible pairs best-scored first (rank order), then the order shown:
        # the score order, or with exploration a random eligible pair first (serving.exploration)
        by_channel: dict[str, list[int]] = {}
        for j in sorted((j for j in range(len(r)) if r[j] == 0), key=lambda j: (channels[j], k[j])):
            by_channel.setdefault(channels[j], []).append(j)
        keep: list[tuple[int, int, float | None, bool]] = []  # (pair, rank shown, probability, explored)
        for ch, pairs in by_channel.items():
            choice = explorer.choose([action_ids[j] for j in pairs])
            for shown, at in enumerate(choice.order[:limit]):
                first = shown == 0
                keep.append((pairs[at], shown + 1, choice.probability if first else None, choice.explored))
            if record:
                logged.setdefault(cid, {})[ch] = {
                    "epsilon": choice.epsilon,
                    "shown": choice.order[0],
                    "candidates": [
                        [
                            action_ids[j],
                            round(score[i][j], 6),
                            propensity[i][j],
                            None if uplift is None else _finite(uplift[i][j]),
                            value[i][j],
                            cost[j],
                        ]
                        for j in pairs
                    ],
                }
        block = held.get(cid)
        texts: dict[str, orjson.Fragment] = {}
        suggestions = []
        for j, shown_rank, chosen_with, explored in keep:
            a = actions[action_ids[j]]
            why = state.REASONS_OF_KIND.get(a.kind, "value")
            if why not in texts:
                texts[why] = state.reasons_text(block, cid, why)
            p, v = propensity[i][j], value[i][j]
            u = None if uplift is None else _finite(uplift[i][j])
            inc = None if incremental is None else _finite(incremental[i][j])
            suggestions.append(
                {
                    "action_id": a.id,
                    "title": a.title,
                    "kind": a.kind,
                    "channel": channels[j],
                    "rank": shown_rank,
                    "probability": chosen_with,
                    "explored": explored and shown_rank == 1,
                    "ranked_by": ranked_by[j],
                    "score": score[i][j],
                    "expected_value": p * v,
                    "incremental_value": None if inc is None else inc * v,
                    "propensity": p,
                    "uplift": u,
                    "uplift_interval": None
                    if u is None or calibration is None
                    else _interval(calibration, u),
                    "value": v,
                    "cost": cost[j],
                    "reasons": texts[why],
                }
            )
        funnel = None
        if explain:
            detail = _lists(d.detail[i])
            funnel = [
                {
                    "action_id": action_ids[j],
                    "channel": channels[j],
                    "reason": (code := d.reason_names[r[j]]),
                    "detail": d.details[detail[j]],
                    "explanation": explain_reason(code),
                }
                for j in range(len(r))
                if r[j] != 0
            ]
        out.append(
            {
                "customer_id": cid,
                "decision_id": None,
                "scored": block is not None and not objecting[i],
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
                        **({"probability": s["probability"]} if s["rank"] == 1 else {}),
                        **({"explored": True} if s["explored"] else {}),
                    }
                    for s in o["suggestions"]
                ]
                for o in out
            },
            logged,
        )
        for o in out:
            o["decision_id"] = decision_ids.get(o["customer_id"])
    return out


def _interval(table: dict, uplift: float) -> list[float]:
    """``[low, high]`` of the calibration bin of one predicted uplift (``response.interval_of``,
    in plain Python: one value per suggestion)."""
    at = bisect.bisect_right(table["edges"], uplift)
    return [table["low"][at], table["high"][at]]


def json_response(content, status_code: int = 200) -> Response:
    """``content`` as JSON, sent as is: the route's ``response_model`` documents it (orjson takes
    a fifth of the standard library's time on these answers)."""
    return Response(orjson.dumps(content), status_code, media_type="application/json")


@router.get(
    "/{customer_id}/next-best-actions",
    response_model=CustomerDecision,
    dependencies=[Reader],
    responses=responses(*KEYED, 404, 422, s404="no such customer in the store"),
)
async def next_best_actions(
    customer_id: Id,
    request: Request,
    channel: Annotated[Channel | None, Query(description="only this channel")] = None,
    limit: Annotated[int, Query(ge=1, le=50, description="suggestions per channel")] = 3,
    explain: Annotated[bool, Query(description="also every dropped candidate and why")] = False,
) -> Response:
    """The next best actions for one customer: per channel, up to ``limit`` actions the customer
    may be contacted with now (consent, objection, contact pressure and the catalog's rules are
    checked at the moment of the call), ranked by score (propensity x value x lever - cost), with
    their numbers and the model's reasons. With ``explain``, also every dropped candidate and the
    first rule it failed.
    Every suggestion is recorded with a ``decision_id`` to report its outcome to ``/v1/feedback``.
    A customer registered after the current scoring run is scored on the spot. 404: no such
    customer in the store."""
    # Every decision reads the store (the change log's probe, the customer's consents and
    # contacts). A store that may stall (PostgreSQL not answering) is read in the thread pool, so
    # a stall holds up only this request, never the event loop that answers /health/live and
    # every other request; SQLite in WAL mode never makes a reader wait, and on the loop a
    # decision skips the hop to a worker thread (KUNDENWERT_DECIDE_ON_LOOP).
    state = serving_of(request)  # as the get_state dependency does, without its resolution per request
    if state.decide_on_loop:
        return _next_best(state, customer_id, channel, limit, explain)
    return await run_in_threadpool(_next_best, state, customer_id, channel, limit, explain)


def _next_best(state: ServingState, customer_id: str, channel, limit: int, explain: bool) -> Response:
    channels = [channel] if channel else None
    _check_channels(channels)
    run = state.current
    if run.holds(customer_id):
        rows = state.live.rows(customer_id)  # as the store holds them now: erased is gone
        if not rows.exists:
            raise HTTPException(404, detail=f"no customer {customer_id!r} in the store")
        if not run.held["stale"]:
            main = run.main
            decisions = state.decide_one(customer_id, channels=channels, block=main, rows=rows)
            held = {customer_id: main}
            return json_response(decisions_of(state, decisions, [customer_id], limit, explain, True, held)[0])
    # not in the run (or its rows are stale): scored online, models and SHAP
    return json_response(_not_in_run(state, customer_id, channels, limit, explain))


def _not_in_run(state: ServingState, customer_id: str, channels, limit: int, explain: bool) -> dict:
    if not state.reader.exists(customer_id):
        raise HTTPException(404, detail=f"no customer {customer_id!r} in the store")
    held = state.blocks([customer_id])
    decisions = state.decide_one(customer_id, channels=channels, block=held[customer_id])
    return decisions_of(state, decisions, [customer_id], limit, explain, record=True, held=held)[0]


PROFILING_STOPPED = (
    "The customer has objected to profiling and direct marketing (GDPR Art. 21): no scores, "
    "reasons or suggestions are shown, and the customer is left out of every list and analysis."
)


def _finite(x: float) -> float | None:
    return x if x == x and x not in (float("inf"), float("-inf")) else None


def _num(v) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


@router.get(
    "/{customer_id}",
    response_model=CustomerView,
    dependencies=[Reader],
    responses=responses(*KEYED, 404, 422, s404="no such customer in the store"),
)
def customer(customer_id: Id, state: Annotated[ServingState, Depends(get_state)]) -> CustomerView:
    """What sales needs to know about one customer: profile (status, type, age group, region,
    open complaint), value (CLV, P(alive)), churn risk or win-back chance, top product affinities,
    consent per channel and any objection, and the reasons behind each score. 404: no such
    customer in the store."""
    now = state.standing([customer_id])
    if customer_id not in now.exists:
        raise HTTPException(404, detail=f"no customer {customer_id!r} in the store")
    consent = now.consent
    c = consent.reindex([customer_id]).iloc[0] if len(consent) else None
    consent_view = ConsentView(
        **{k: bool(c[k]) if c is not None and pd.notna(c[k]) else False for k in ConsentView.model_fields}
    )
    if customer_id in now.objecting:  # GDPR Art. 21: no scores, no reasons, no profile
        return CustomerView(
            customer_id=customer_id,
            scored=False,
            profile={},
            clv=None,
            p_alive=None,
            churn_risk=None,
            winback_chance=None,
            top_affinities=[],
            consent=consent_view,
            reasons={},
            model_versions=state.run["models"],
            profiling_stopped=PROFILING_STOPPED,
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


@router.delete(
    "/{customer_id}",
    responses=responses(*KEYED, 404, 409, 422, s404="no such customer, and none erased under this id"),
)
def erase(
    customer_id: Id,
    state: Annotated[ServingState, Depends(get_state)],
    who: Annotated[Caller, Depends(allow())],
) -> dict:
    """Erase a customer (GDPR Art. 17, admin only): every row of every table that names them
    (CRM tables, custom attributes, every scoring run, decisions, target-list members (lists keep
    their counts), feedback events, the change log) goes in one transaction, and the service
    answers 404 for them from the next request on. A keyed hash of the id is kept so that a later
    import of the same id is refused unless allowed. Idempotent: erasing again answers 200 with
    ``erased`` false; an id never stored nor erased is 404. Audited, without the id."""
    from kundenwert.db.erasure import erase_customers, erased_before

    if customer_id not in state.known([customer_id]):
        if erased_before(state.store, customer_id):
            return {"erased": False, "already_erased": True, "rows": {}}
        raise HTTPException(404, detail=f"no customer {customer_id!r} in the store")
    state.decisions.flush()  # decisions queued for them are committed, and so erased too
    report = erase_customers(state.store, [customer_id], who)
    state.decisions.flush()
    state.live.sync()  # this process drops its cached rows and online scores now
    return {"erased": report.erased == 1, "already_erased": False, "rows": report.rows}
