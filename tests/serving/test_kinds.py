"""Action kinds are defined once (``serving.kinds``): the catalog, the service's reasons, target
lists and the sample world's design all follow that one definition."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kundenwert.datasets import design
from kundenwert.serving.catalog import Action
from kundenwert.serving.kinds import ACTION_KINDS, KINDS, OBJECTIVE_KINDS
from kundenwert.serving.state import ServingState
from kundenwert.serving.target_lists import TargetListRequest

BASE = {"id": "some_action", "title": "Something", "channels": {"email": 0.1}, "value": "clv"}


@pytest.mark.parametrize("spec", ACTION_KINDS, ids=lambda k: k.name)
def test_every_kind_of_the_definition_is_a_valid_catalog_kind(spec) -> None:
    action = Action.model_validate({**BASE, "kind": spec.name, "category": "books_media"})
    assert action.kind == spec.name
    assert ServingState.REASONS_OF_KIND[spec.name] == spec.reasons
    if spec.by_category:
        with pytest.raises(ValidationError, match=f"a {spec.name} action needs its category"):
            Action.model_validate({**BASE, "kind": spec.name})


def test_an_unknown_kind_is_refused_naming_the_kinds() -> None:
    with pytest.raises(ValidationError, match="unknown kind 'bribe'; kinds are cross_sell, retention"):
        Action.model_validate({**BASE, "kind": "bribe"})


def test_target_list_objectives_come_from_the_kinds() -> None:
    for objective, kind in OBJECTIVE_KINDS.items():
        spec = next(k for k in ACTION_KINDS if k.name == kind)
        extra = {"category": "books_media"} if spec.by_category else {}
        TargetListRequest.model_validate({"objective": objective, "channel": "email", "size": 5, **extra})
    with pytest.raises(ValidationError, match="unknown objective 'bribery'"):
        TargetListRequest.model_validate({"objective": "bribery", "channel": "email", "size": 5})
    schema = TargetListRequest.model_json_schema()["properties"]["objective"]
    assert schema["enum"] == [*OBJECTIVE_KINDS, "action"]  # published in /docs as before


def test_the_sample_world_designs_only_defined_kinds() -> None:
    """``datasets`` sits beside ``features`` and does not import ``serving``: its designed actions
    keep their kind names, held to the one definition here."""
    assert {kind for kind, *_ in design.ACTIONS.values()} <= set(KINDS)
