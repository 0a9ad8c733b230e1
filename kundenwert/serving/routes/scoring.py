"""Campaign tools score up to 10,000 customers per call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response

from kundenwert.serving.deps import allow, get_state
from kundenwert.serving.problems import KEYED, responses
from kundenwert.serving.routes.customers import _check_channels, decisions_of, json_response
from kundenwert.serving.schemas import ScoreRequest, ScoreResponse
from kundenwert.serving.state import ServingState

router = APIRouter(prefix="/v1", tags=["campaigns"])


@router.post(
    "/score",
    response_model=ScoreResponse,
    dependencies=[Depends(allow("campaign", "data_science"))],
    responses=responses(*KEYED, 400, 409, 413, 422, s409="an action the catalog does not hold"),
)
def score(body: ScoreRequest, state: Annotated[ServingState, Depends(get_state)]) -> Response:
    """Next best actions for a batch of customers (a campaign tool's call): the same decision as
    ``GET /v1/customers/{id}/next-best-actions`` for each id, optionally only for some channels
    or actions. Every suggestion is recorded with a ``decision_id``. Ids the store does not know
    are listed in ``unknown_customer_ids``, not refused."""
    _check_channels(body.channels)
    unknown_actions = sorted(set(body.actions or []) - set(state.catalog.ids))
    if unknown_actions:
        # 409: a well-formed request naming what the catalog does not hold (now)
        raise HTTPException(409, detail=f"unknown action(s) {', '.join(unknown_actions)}")
    ids = list(dict.fromkeys(body.customer_ids))
    known = state.known(ids)
    found = [i for i in ids if i in known]
    results = []
    if found:  # (none known: nothing to decide)
        decisions = state.decide(found, channels=body.channels, actions=body.actions)
        results = decisions_of(state, decisions, found, body.limit, body.explain, record=True)
    return json_response({"results": results, "unknown_customer_ids": [i for i in ids if i not in known]})
