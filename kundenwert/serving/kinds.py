"""The kinds of action the catalog may hold: one spec per kind, read by the catalog (which kinds
exist, what an action of a kind must say), the service (whose reasons explain a suggestion) and
target lists (which objective selects actions of a kind). Adding a kind is adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema


@dataclass(frozen=True)
class ActionKind:
    """One kind of action.

    - ``reasons``: the score whose top SHAP reasons explain a suggestion of this kind (churn risk
      for retention, win-back chance for win-back, otherwise what drives the customer's value).
    - ``objective``: the target-list objective that selects the catalog's actions of this kind
      (None: lists reach them only by ``action_id``).
    - ``by_category``: an action of this kind names its product category, and a target list for
      it names the category too.
    """

    name: str
    reasons: str = "value"
    objective: str | None = None
    by_category: bool = False


ACTION_KINDS: tuple[ActionKind, ...] = (
    ActionKind("cross_sell", objective="cross_sell", by_category=True),
    ActionKind("retention", reasons="churn", objective="churn_prevention"),
    ActionKind("win_back", reasons="winback", objective="win_back"),
    ActionKind("upsell"),
    ActionKind("service_follow_up"),
    ActionKind("newsletter"),
)
KINDS = tuple(k.name for k in ACTION_KINDS)
OBJECTIVE_KINDS = {k.objective: k.name for k in ACTION_KINDS if k.objective is not None}
OBJECTIVES = (*OBJECTIVE_KINDS, "action")  # "action": one catalog action by its id


def action_kind(name: str) -> ActionKind:
    """The spec of kind ``name`` (a ``ValueError`` naming the kinds when there is none)."""
    for k in ACTION_KINDS:
        if k.name == name:
            return k
    raise ValueError(f"unknown kind {name!r}; kinds are {', '.join(KINDS)}")


def _known_kind(name: str) -> str:
    action_kind(name)
    return name


def _known_objective(name: str) -> str:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; objectives are {', '.join(OBJECTIVES)}")
    return name


# pydantic field types: validated against the specs, published as an enum in JSON schemas
KindName = Annotated[
    str, AfterValidator(_known_kind), WithJsonSchema({"type": "string", "enum": list(KINDS)})
]
ObjectiveName = Annotated[
    str, AfterValidator(_known_objective), WithJsonSchema({"type": "string", "enum": list(OBJECTIVES)})
]
