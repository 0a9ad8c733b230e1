"""Campaign plans: the best contacts for an objective across several channels at once, under a
money budget and a capacity per channel, at most one action per customer.

The candidates are every (customer, action, channel) the arbitration keeps now for the
objective's actions on the plan's channels (consent, eligibility, contact policy, as for a
target list); their objective is the score (the incremental value x lever - cost where the
action is ranked by uplift, else the expected value x lever - cost). ``kundenwert.models.assign``
chooses the set with the largest total score under the budget and the capacities (an exact MILP
for small problems, the LP with a bound beyond) and gives the shadow prices: what one more unit
of money and one more contact per capped channel are worth. Beside it the greedy reference
(customers by their best score while it fits) shows what the optimisation adds. Saved, the plan
is one target list per channel, each with its own control group, so that feedback and results
work as for any list.
"""

from __future__ import annotations

import uuid
from collections.abc import Hashable
from typing import Annotated

import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
    model_validator,
)

from kundenwert.features.contract import MARKETING_CHANNELS
from kundenwert.serving.kinds import ObjectiveName
from kundenwert.serving.schemas import Channel, Id, WholeNumber, bounded
from kundenwert.serving.target_lists import (
    OBJECTIVE_RULES,
    Filters,
    TargetListRequest,
    _filtered,
    assignment_problem,
    check_objective,
    finite,
    incremental,
    kept_candidates,
    list_of,
    serving_actions,
)

MAX_CAPACITY = 1_000_000

_CAPACITY_VALUE = {"type": "integer", "minimum": 0, "maximum": MAX_CAPACITY}


def _rules_schema() -> dict:
    """The request's rules as JSON Schema (a client generated from the document, and the
    fuzzer, know them): a budget or a channel's capacity; cross_sell names its category, action
    its action_id."""
    return {
        "anyOf": [
            {"required": ["budget"], "properties": {"budget": {"type": "number"}}},
            {
                "required": ["channels"],
                "properties": {
                    "channels": {
                        "anyOf": [
                            {"required": [channel], "properties": {channel: {"required": ["capacity"]}}}
                            for channel in MARKETING_CHANNELS
                        ]
                    }
                },
            },
        ],
        "allOf": OBJECTIVE_RULES,
    }


Contacts = Annotated[WholeNumber, Field(ge=0, le=MAX_CAPACITY), WithJsonSchema(_CAPACITY_VALUE)]


def _capacity_not_null(schema: dict) -> None:
    """A capacity is left out, never null (so that "a channel with a capacity" is a JSON Schema
    rule: the key is there)."""
    field = schema["properties"]["capacity"]
    schema["properties"]["capacity"] = {**_CAPACITY_VALUE, "description": field.get("description", "")}


class ChannelLimits(BaseModel):
    """What a channel of the plan may take."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_capacity_not_null)
    capacity: Contacts | None = Field(
        None,
        description="the most contacts on the channel, e.g. 500 (a call centre's week); left out: "
        "the budget (and the service's maximum list size) limits it",
    )


class CampaignPlanRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "November retention",
                    "objective": "churn_prevention",
                    "channels": {"email": {}, "phone": {"capacity": 500}},
                    "budget": 5000,
                    "control_share": 0.1,
                }
            ],
            **_rules_schema(),
        },
    )

    name: str = Field("", max_length=200)
    objective: ObjectiveName = Field(description="an ActionKind's objective, or action (one action by id)")
    category: Id | None = Field(None, description="cross_sell: the category")
    action_id: Id | None = Field(None, description="action: the catalog action")
    channels: dict[Channel, ChannelLimits] = Field(
        min_length=1,
        max_length=len(MARKETING_CHANNELS),
        description='the channels the plan may use, each with its limits: {"email": {}, "phone": '
        '{"capacity": 500}}',
    )
    filters: Filters = Filters()
    budget: bounded(float, gt=0) | None = Field(  # type: ignore[valid-type]
        None, description="money for the whole plan: the sum of the chosen contacts' channel costs"
    )
    control_share: bounded(float, ge=0, lt=1) = Field(  # type: ignore[valid-type]
        0.1, description="saved: the share of each channel's list held out as its control group"
    )
    save: StrictBool = Field(
        False, description="store the plan as one target list per channel (each with its control group)"
    )

    @property
    def capacity(self) -> dict[str, int]:
        """The capacities given, by channel."""
        return {ch: lim.capacity for ch, lim in self.channels.items() if lim.capacity is not None}

    @model_validator(mode="after")
    def _complete(self) -> CampaignPlanRequest:
        if self.budget is None and not self.capacity:
            raise ValueError("give a budget, a channel's capacity (contacts) or both: a plan needs a limit")
        check_objective(self.objective, self.category, self.action_id, "plan")
        return self


# -- the answer ----------------------------------------------------------------------------------


class Expected(BaseModel):
    contacts: int = Field(description="customers chosen (control groups not yet held out)")
    cost: float = Field(description="the sum of their channel costs")
    objective_value: float = Field(description="the sum of their scores: what the plan maximises")
    expected_incremental_responders: float | None = Field(
        description="the sum of the predicted uplifts (null where the model learnt no uplift for an action)"
    )
    expected_incremental_value: float | None = Field(
        description="the sum of the incremental values (uplift x value; null as above)"
    )


class ChannelPlan(Expected):
    expected_responders: float = Field(description="the sum of the response probabilities if contacted")
    actions: dict[str, int] = Field(description="contacts per action")
    capacity: int | None = Field(description="the capacity the plan met (null: none)")
    capped_by_max_size: bool = Field(
        description="the capacity is the service's maximum list size (KUNDENWERT_MAX_TARGET_LIST), "
        "smaller than the one asked for or standing in for none"
    )
    capacity_shadow_price: float | None = Field(
        description="the LP's marginal objective value of one more contact on this channel (0: the "
        "capacity is not binding; null: no capacity)"
    )
    capacity_gain: float | None = Field(
        description="what one more contact buys in the LP, re-solved with the capacity raised by 1 "
        "(equal to the shadow price while the optimal basis holds, else lower)"
    )
    list_id: str | None = Field(None, description="saved: this channel's target list")
    url: str | None = Field(None, description="saved: where the list is read")


class BudgetPlan(BaseModel):
    limit: float
    used: float = Field(description="the chosen contacts' cost")
    shadow_price: float | None = Field(
        description="the LP's marginal objective value of one more unit of money (0: not binding)"
    )
    gain: float | None = Field(
        description="what one more unit of money buys in the LP, re-solved with the budget raised by 1"
    )


class GreedyReference(Expected):
    per_channel: dict[str, int] = Field(description="contacts per channel")


class CampaignPlan(Expected):
    plan_id: str
    name: str
    objective: str
    channels: dict[str, ChannelPlan]
    budget: BudgetPlan | None = Field(description="null: the plan has no budget")
    method: str = Field(description="milp (exact) or lagrangian (the LP, rounded; for large plans)")
    optimal: bool = Field(description="a proven optimum of the 0/1 problem")
    status: str
    lp_bound: float | None = Field(description="the LP relaxation's optimum: no plan earns more")
    gap: float | None = Field(description="lp_bound - objective_value: the most an exact answer could add")
    greedy: GreedyReference = Field(
        description="the reference: each customer's best option by score, customers by that score "
        "while it fits the budget and the capacities"
    )
    candidates: int = Field(description="customers after the filters")
    options: int = Field(description="(customer, action, channel) options the arbitration keeps")
    unavailable_actions: dict[str, str] = Field(
        default_factory=dict, description="actions the current scoring run cannot serve (left out)"
    )
    saved: bool
    created_at: str | None = Field(None, description="saved: when")


def _expected(rows: pd.DataFrame) -> dict:
    responders, value = incremental(rows) if len(rows) else (0.0, 0.0)  # nobody: nothing added
    return {
        "contacts": int(len(rows)),
        "cost": float(rows["cost"].astype(float).sum()),
        "objective_value": float(rows["score"].astype(float).sum()),
        "expected_incremental_responders": responders,
        "expected_incremental_value": value,
    }


def plan_campaign(
    request: CampaignPlanRequest,
    catalog,
    decide,
    scores: pd.DataFrame,
    unavailable: dict[str, str] | None = None,
    max_size: int | None = None,
) -> tuple[dict, list[tuple[str, TargetListRequest, dict, pd.DataFrame]]]:
    """(the plan, one (list id, request, summary, members) per channel with contacts) for
    ``request``: what ``save_target_lists`` stores. ``decide`` and ``unavailable`` as for
    ``build_target_list``; ``max_size`` (``KUNDENWERT_MAX_TARGET_LIST``) caps every channel, so
    that each channel's list can be stored."""
    from kundenwert.models.assign import assign, greedy

    actions = {
        channel: serving_actions(
            catalog, request.objective, request.category, request.action_id, channel, unavailable
        )
        for channel in request.channels
    }
    action_ids = list(dict.fromkeys(a for ids in actions.values() for a in ids))
    pool = _filtered(scores, request.filters)
    # the funnel's pairs are the catalog's: an action comes only on the channels it has
    ok = kept_candidates(pool, decide, list(request.channels), action_ids)
    asked = request.capacity
    capacity: dict[str, int] = {}
    by_max: set[str] = set()
    for channel in request.channels:
        cap = asked.get(channel)
        if max_size is not None and (cap is None or cap > max_size):
            cap = max_size
            by_max.add(channel)
        if cap is not None:
            capacity[channel] = cap
    problem = assignment_problem(ok)
    limits: dict[Hashable, float] = {channel: float(cap) for channel, cap in capacity.items()}
    a = assign(problem, budget=request.budget, capacity=limits or None)
    g = greedy(problem, budget=request.budget, capacity=limits or None)
    chosen = ok.iloc[a.rows]
    reference = ok.iloc[g.rows]
    plan_id = uuid.uuid4().hex
    channels: dict[str, dict] = {}
    lists = []
    for channel in request.channels:
        rows = chosen[chosen["channel"].to_numpy() == channel].sort_values(
            "score", ascending=False, kind="stable"
        )
        cap = capacity.get(channel)
        channels[channel] = {
            **_expected(rows),
            "expected_responders": float(rows["propensity"].astype(float).sum()),
            "actions": {str(k): int(v) for k, v in rows["action_id"].value_counts(sort=False).items()},
            "capacity": cap,
            "capped_by_max_size": channel in by_max,
            "capacity_shadow_price": finite(a.capacity_prices.get(channel)) if cap is not None else None,
            "capacity_gain": finite(a.capacity_gains.get(channel)) if cap is not None else None,
        }
        if request.save and len(rows):
            list_id = uuid.uuid4().hex
            members, summary = list_of(
                rows, list_id, request.control_share, candidates=int(len(pool)), actions=actions[channel]
            )
            summary["plan"] = {
                "plan_id": plan_id,
                "channels": list(request.channels),
                "budget": request.budget,
                "capacity": cap,
                "capacity_shadow_price": channels[channel]["capacity_shadow_price"],
                "budget_shadow_price": finite(a.budget_price),
            }
            list_request = TargetListRequest(
                name=(request.name or f"plan {plan_id[:8]}")[:190] + f" ({channel})",
                objective=request.objective,
                category=request.category,
                action_id=request.action_id,
                channel=channel,
                filters=request.filters,
                size=len(rows),
                control_share=request.control_share,
                selection="optimal",
            )
            lists.append((list_id, list_request, summary, members))
            channels[channel]["list_id"] = list_id
            channels[channel]["url"] = f"/v1/target-lists/{list_id}"
    per_channel = reference["channel"].value_counts(sort=False)
    plan = {
        "plan_id": plan_id,
        "name": request.name,
        "objective": request.objective,
        **_expected(chosen),
        "channels": channels,
        "budget": None
        if request.budget is None
        else {
            "limit": float(request.budget),
            "used": float(a.cost),
            "shadow_price": finite(a.budget_price),
            "gain": finite(a.budget_gain),
        },
        "method": a.method,
        "optimal": bool(a.optimal),
        "status": a.status,
        "lp_bound": finite(a.lp_bound),
        "gap": finite(a.gap),
        "greedy": {
            **_expected(reference),
            "per_channel": {c: int(per_channel.get(c, 0)) for c in request.channels},
        },
        "candidates": int(len(pool)),
        "options": int(len(ok)),
        "unavailable_actions": {
            a_id: why
            for a_id, why in (unavailable or {}).items()
            if any(
                a_id in serving_actions(catalog, request.objective, request.category, request.action_id, c)
                for c in request.channels
            )
        },
        "saved": False,
        "created_at": None,
    }
    return plan, lists
