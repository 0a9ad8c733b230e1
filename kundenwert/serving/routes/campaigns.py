"""Campaign results: every campaign with its headline lift, a campaign's or a target list's
results by cell, and their plots (``kundenwert.serving.results`` computes them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from kundenwert.serving.deps import allow, get_state
from kundenwert.serving.problems import KEYED, responses
from kundenwert.serving.results import (
    DIMENSIONS,
    ResultsQuery,
    campaign_results,
    measure,
    result_plots,
)
from kundenwert.serving.schemas import Channel, Id, InstantText
from kundenwert.serving.state import ServingState

router = APIRouter(prefix="/v1", tags=["campaign results"])
READERS = Depends(allow("marketing", "data_science"))
Dim = Literal["campaign", "action", "channel", "month"]
PlotName = Literal["lift", "lift_bought", "cumulative_revenue"]
assert set(Dim.__args__) == set(DIMENSIONS)  # type: ignore[attr-defined]


def measured(
    by: Annotated[
        list[Dim] | None,
        Query(description="cells by these dimensions (repeat the parameter); none given: action and channel"),
    ] = None,
    action_id: Annotated[Id | None, Query(description="only this action")] = None,
    channel: Annotated[Channel | None, Query(description="only this channel")] = None,
    since: Annotated[InstantText | None, Query(description="only contacts from this instant on")] = None,
    until: Annotated[InstantText | None, Query(description="only contacts before this instant")] = None,
    response_window: Annotated[int, Query(ge=0, le=365, description="days in which a response counts")] = 14,
    attribution_days: Annotated[int, Query(ge=1, le=365, description="days whose purchases count")] = 30,
    method: Annotated[
        Literal["welch", "bootstrap"], Query(description="revenue and margin intervals")
    ] = "welch",
    control_share: Annotated[
        float | None, Query(gt=0, lt=1, description="the control share drawn (checks the split)")
    ] = None,
) -> ResultsQuery:
    """The measurement options every results route takes."""
    return ResultsQuery(
        by=tuple(by) if by else ("action", "channel"),
        action_id=action_id,
        channel=channel,
        since=_ts(since),
        until=_ts(until),
        response_window=response_window,
        attribution_days=attribution_days,
        method=method,
        control_share=control_share,
    )


def _ts(t: datetime | None):
    import pandas as pd

    return None if t is None else pd.Timestamp(t)


Measured = Annotated[ResultsQuery, Depends(measured)]
State = Annotated[ServingState, Depends(get_state)]
_PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "a PNG image"}}


@router.get("/campaigns", dependencies=[READERS], responses=responses(*KEYED, 422))
def list_campaigns(state: State) -> dict:
    """Every campaign: those of the contact history (by ``campaign_id``) and every target list
    of this service, with treated and control counts, period, actions, channels and the headline
    lift (of responses; of buyers where the control group has no recorded outcome) with its
    95% interval and whether it is significant after Benjamini-Hochberg over all campaigns.
    Campaigns with fewer than 20 treated or control customers show no figures."""
    return {"campaigns": state.campaigns.overview(state.store, state.catalog)}


@router.get(
    "/campaigns/{campaign_id}/results",
    dependencies=[READERS],
    responses=responses(
        *KEYED, 404, 422, s404="no contact names this campaign and no target list has its id"
    ),
)
def get_campaign_results(campaign_id: Id, query: Measured, state: State) -> dict:
    """Did the campaign work? Per cell (``by``): treated and control counts; response,
    conversion and buyer rates with the absolute lift (Newcombe's interval) and the relative lift;
    revenue and margin per customer in the attribution window with their lift (Welch, or a
    bootstrap); incremental responders, revenue and margin; cost and incremental return on cost;
    p-values adjusted by Benjamini-Hochberg; and the warnings of each cell (control too small,
    sample-ratio mismatch, imbalance before the campaign, window still open, control without
    recorded outcomes). Customers who object now are not counted."""
    return campaign_results(state.store, state.catalog, query.model_copy(update={"campaign_id": campaign_id}))


@router.get(
    "/target-lists/{list_id}/results",
    dependencies=[READERS],
    responses=responses(*KEYED, 404, 422, s404="no such target list"),
)
def get_list_results(list_id: Id, query: Measured, state: State) -> dict:
    """The results of a target list that was sent (see ``GET /v1/campaigns/{id}/results``):
    its members as drawn, target against control, dated from the first contact recorded for the
    list. A list without a recorded contact answers with ``not_sent`` and no cells. With the
    uplift its members were predicted when it was made, ``model`` says whether the model helped:
    the Qini coefficient with its interval and the incremental buyers of the model's top
    10/20/30% against a random selection of the same size."""
    return campaign_results(state.store, state.catalog, query.model_copy(update={"list_id": list_id}))


def _plot(state: ServingState, query: ResultsQuery, name: str) -> Response:
    from kundenwert.serving.target_lists import NotFoundError

    report, e = measure(state.store, state.catalog, query)
    plots = result_plots(state.store, report, e, query)
    if name not in plots:
        raise NotFoundError(f"no {name} plot: the groups are too small or the list was not sent")
    return Response(plots[name], media_type="image/png")


@router.get(
    "/campaigns/{campaign_id}/results/{plot}.png",
    dependencies=[READERS],
    response_class=Response,
    responses={**_PNG, **responses(*KEYED, 404, 422, s404="no such campaign, or nothing to plot")},
)
def campaign_plot(campaign_id: Id, plot: PlotName, query: Measured, state: State) -> Response:
    """A campaign's results as a PNG: ``lift`` (of responses per cell, with intervals),
    ``lift_bought`` (of buyers), ``cumulative_revenue`` (incremental revenue by day after the
    contact, with its band)."""
    return _plot(state, query.model_copy(update={"campaign_id": campaign_id}), plot)


@router.get(
    "/target-lists/{list_id}/results/{plot}.png",
    dependencies=[READERS],
    response_class=Response,
    responses={**_PNG, **responses(*KEYED, 404, 422, s404="no such list, or nothing to plot")},
)
def list_plot(list_id: Id, plot: PlotName, query: Measured, state: State) -> Response:
    """A target list's results as a PNG (see the campaign plots)."""
    return _plot(state, query.model_copy(update={"list_id": list_id}), plot)
