"""Request and response bodies of the API (the OpenAPI document is generated from these)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kundenwert.features.contract import MARKETING_CHANNELS


class Reason(BaseModel):
    reason: str = Field(description='a plain sentence, e.g. "no purchase for 212 days"')
    direction: str = Field(description="raises or lowers the score")


class Suggestion(BaseModel):
    action_id: str
    title: str
    kind: str
    channel: str
    rank: int = Field(description="1 = best for this customer and channel")
    score: float = Field(description="propensity x value x lever - cost")
    expected_value: float = Field(description="propensity x value")
    propensity: float
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
                            "score": 4.21,
                            "expected_value": 4.26,
                            "propensity": 0.071,
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

    customer_ids: list[str] = Field(min_length=1, max_length=10_000)
    channels: list[str] | None = Field(None, description=f"any of {', '.join(MARKETING_CHANNELS)}")
    actions: list[str] | None = None
    limit: int = Field(3, ge=1, le=50, description="suggestions per customer and channel")
    explain: bool = False


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
