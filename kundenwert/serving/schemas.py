"""Request and response bodies of the API (the OpenAPI document is generated from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, WithJsonSchema

from kundenwert.features.contract import MARKETING_CHANNELS, MAX_ID_LENGTH

MAX_BATCH = 10_000  # customer ids per scoring call
_CONTROL = "".join(map(chr, [*range(0x20), 0x7F]))


def _plain_id(value: str) -> str:
    if not value:
        raise ValueError("an id cannot be empty")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"an id has at most {MAX_ID_LENGTH} characters, this one {len(value)}")
    if any(c in _CONTROL for c in value):  # (nor does the CRM data contract take them)
        raise ValueError("an id cannot hold control characters (U+0000 to U+001F, U+007F)")
    return value


def _known_channel(value: str) -> str:
    if value not in MARKETING_CHANNELS:
        raise ValueError(f"unknown channel {value[:40]!r}; channels are {', '.join(MARKETING_CHANNELS)}")
    return value


Id = Annotated[
    str,
    AfterValidator(_plain_id),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_ID_LENGTH,
            "pattern": "^[^\\u0000-\\u001f\\u007f]+$",
        }
    ),
]
"""A customer, action or list id as the API takes it: 1 to 200 characters, no control characters."""

Channel = Annotated[
    str, AfterValidator(_known_channel), WithJsonSchema({"type": "string", "enum": list(MARKETING_CHANNELS)})
]
"""A marketing channel; the message of an unknown one names the channels."""


def _not_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("a number, not true or false")
    return value


def _text_only(value: object) -> object:
    """An ISO 8601 date or instant given as text (a query's ``0.5`` is text too, and pydantic
    would read it as seconds since 1970)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError("an ISO 8601 date or instant as text")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 date or instant: {value[:40]!r}") from None


# What JSON Schema says and no more: an integer (12.0 is one there) but no bool; an instant as text
# (pydantic alone would take ``true`` as 1 and ``0`` as 1970-01-01)
WholeNumber = Annotated[int, BeforeValidator(_not_bool)]
Number = Annotated[float, BeforeValidator(_not_bool)]


def bounded(kind: type, **bounds: float) -> object:
    """``WholeNumber`` or ``Number`` (``kind`` int or float) with bounds (``ge=1``, ``gt=0``,
    ...), placed before the bool check so that they reach the schema as JSON Schema's own
    keywords (after it they came out as pydantic's ``gt``, which no client understands)."""
    return Annotated[kind, Field(**bounds), BeforeValidator(_not_bool)]  # type: ignore[call-overload]


InstantText = Annotated[datetime, BeforeValidator(_text_only)]


class Reason(BaseModel):
    reason: str = Field(description='a plain sentence, e.g. "no purchase for 212 days"')
    direction: str = Field(description="raises or lowers the score")


class Suggestion(BaseModel):
    action_id: str
    title: str
    kind: str
    channel: str
    rank: int = Field(
        description="1 = shown first for this customer and channel: the best-scored, or in an explored "
        "decision a random eligible one (then the rest in score order)"
    )
    probability: float | None = Field(
        None,
        description="rank 1: the probability with which this suggestion was chosen to be shown first "
        "(1 without exploration; logged for off-policy evaluation); null for the others",
    )
    explored: bool = Field(
        False, description="rank 1 chosen at random among the eligible candidates (exploration), not by score"
    )
    ranked_by: Literal["uplift", "response"] = Field(
        description="what the score ranks by (the catalog's `ranking` of the action): `uplift`, the "
        "incremental value the contact earns; `response`, the value if contacted"
    )
    score: float = Field(
        description="ranked by uplift: incremental_value x lever - cost; by response: expected_value x lever - cost"
    )
    expected_value: float = Field(description="propensity x value: the value if contacted")
    incremental_value: float | None = Field(
        description="what the contact adds: the propensity with the uplift for the response, x value "
        "(null where the response model learnt no uplift for the action)"
    )
    propensity: float = Field(description="probability of a response if contacted")
    uplift: float | None = Field(
        description="response if contacted minus response if not (null where not learnt: no control rows)"
    )
    uplift_interval: list[float] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="[low, high]: the 95% interval of the uplift observed on the response model's "
        "held-out contacts whose predicted uplift fell in the same bin (of up to five quantile bins); "
        "null where the uplift is unknown or the model's test contacts could not measure one",
    )
    value: float
    cost: float
    reasons: list[Reason] = Field(
        default_factory=list, description="the customer's top factors behind the score this action rests on"
    )


class Dropped(BaseModel):
    action_id: str
    channel: str
    reason: str = Field(description="the first rule the candidate failed (a code)")
    detail: str
    explanation: str


class CustomerDecision(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "00000042",
                    "decision_id": "5f0c2e4b9a0d4e53a6a1c9b7d2e8f013",
                    "scored": True,
                    "suggestions": [
                        {
                            "action_id": "retention_voucher",
                            "title": "Retention voucher for a customer at risk of leaving",
                            "kind": "retention",
                            "channel": "email",
                            "rank": 1,
                            "ranked_by": "uplift",
                            "score": 2.35,
                            "expected_value": 4.26,
                            "incremental_value": 2.4,
                            "propensity": 0.071,
                            "uplift": 0.04,
                            "value": 60.0,
                            "cost": 0.05,
                        }
                    ],
                    "funnel": None,
                    "model_versions": {"churn": "3", "response": "2"},
                }
            ]
        }
    )

    customer_id: str
    decision_id: str | None = Field(description="quote it in feedback; none when nothing is suggested")
    scored: bool = Field(description="false: no scores (an objection forbids profiling, or not scored yet)")
    suggestions: list[Suggestion]
    funnel: list[Dropped] | None = Field(None, description="every dropped candidate (explain=true)")
    model_versions: dict[str, str]


class ScoreRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"customer_ids": ["00000042", "00000043"], "channels": ["email"], "limit": 3}]
        },
    )

    customer_ids: list[Id] = Field(min_length=1, max_length=MAX_BATCH)
    channels: list[Channel] | None = Field(None, max_length=len(MARKETING_CHANNELS))
    actions: list[Id] | None = Field(None, max_length=1_000)
    # ``explain: 0`` or ``limit: true`` is not what the schema says, so it is refused
    limit: bounded(int, ge=1, le=50) = Field(3, description="suggestions per customer and channel")  # type: ignore[valid-type]
    explain: StrictBool = False


class ScoreResponse(BaseModel):
    results: list[CustomerDecision]
    unknown_customer_ids: list[str]


class ConsentView(BaseModel):
    email: bool
    sms: bool
    phone: bool
    mail: bool
    objection: bool


class CustomerView(BaseModel):
    customer_id: str
    scored: bool
    profile: dict[str, object] = Field(description="status, type, age group, region, open complaint")
    clv: float | None
    p_alive: float | None
    churn_risk: float | None = Field(description="active customers")
    winback_chance: float | None = Field(description="lapsed customers")
    top_affinities: list[dict[str, object]]
    consent: ConsentView
    reasons: dict[str, list[Reason]] = Field(
        description="top SHAP factors: churn (active), winback (lapsed), value (everyone scored)"
    )
    model_versions: dict[str, str]
    profiling_stopped: str | None = Field(
        None, description="why nothing is shown: the customer objected to profiling (GDPR Art. 21)"
    )
