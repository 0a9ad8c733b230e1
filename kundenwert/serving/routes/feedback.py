"""Campaign tools report what happened to each suggestion."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from kundenwert.serving.deps import allow, get_state
from kundenwert.serving.feedback import FeedbackBatch, record_feedback
from kundenwert.serving.problems import KEYED, responses
from kundenwert.serving.state import ServingState

router = APIRouter(prefix="/v1", tags=["campaigns"])


class FeedbackResult(BaseModel):
    stored: int
    duplicates: int


@router.post(
    "/feedback",
    response_model=FeedbackResult,
    dependencies=[Depends(allow("campaign"))],
    responses=responses(
        *KEYED,
        400,
        404,
        409,
        413,
        422,
        s404="an event names a decision the service does not hold",
        s409="an event id already stored with a different payload, or a suggestion its decision did not make",
    ),
)
def feedback(body: FeedbackBatch, state: Annotated[ServingState, Depends(get_state)]) -> FeedbackResult:
    """Report what happened to suggestions (sent, opened, clicked, responded, converted,
    unsubscribed, bounced, ...), each by its ``decision_id``. Idempotent by ``event_id``: an event
    sent again is counted once; the same id with a different payload is refused (409). Everything
    is stored before the answer, so an acknowledged event is never lost."""
    state.decisions.flush()  # decisions of the last milliseconds are committed first
    return FeedbackResult(**record_feedback(state.store, body.events))
