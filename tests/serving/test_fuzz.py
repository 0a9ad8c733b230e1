"""The API against its own OpenAPI document: schemathesis generates requests for every operation
(valid and invalid), with every check, on a served sample world of its own; every answer must be
one the document promises. A stateful run follows the document's links (a list created, then
read; a decision, then its feedback)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from kundenwert.serving.app import create_app
from tests.serving.conftest import own_world

CASES = {"n": 0}
EXAMPLES = 150  # per operation; a dozen operations: well over 1,000 cases per run


# The app is built at import (no I/O: the store opens in its lifespan, from the environment the
# fixture sets), so that schemathesis can read its OpenAPI document when it collects the tests.
APP = create_app(reload_seconds=0)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(
    path="/v1/admin/reload"  # a reload re-verifies a whole run (seconds each): tested in test_api.py
)


@pytest.fixture(scope="module")
def fuzzed(imported_world, trained_small, small_config, tmp_path_factory):
    """A served world of its own (the fuzzer may erase customers or write feedback)."""
    with own_world(imported_world, trained_small, small_config, tmp_path_factory, "kw-fuzz") as world:
        mp = pytest.MonkeyPatch()
        mp.setenv(
            "KUNDENWERT_DATABASE_URL", world["url"]
        )  # schemathesis runs APP's lifespan at its first call
        try:
            yield world
        finally:
            mp.undo()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_every_operation_keeps_its_contract(case, fuzzed) -> None:
    CASES["n"] += 1
    case.call_and_validate(headers={"X-API-Key": fuzzed["keys"]["admin"]})


def test_enough_cases_were_generated() -> None:
    print(f"schemathesis generated {CASES['n']:,} cases")  # shown with -s / in the CI log's -rA
    assert CASES["n"] >= 1_000, CASES["n"]
