"""The API against its own OpenAPI document: schemathesis generates requests for every operation
(valid and invalid), with every check, on a served sample world of its own; every answer must be
one the document promises. A stateful run follows the document's links (a list created, then
read; a decision, then its feedback)."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET
from schemathesis.core.failures import FailureGroup

from kundenwert.serving.app import create_app
from tests.serving.conftest import own_world

CASES = {"n": 0}
STATUSES: Counter[int] = Counter()  # of the stateless run
EXAMPLES = 40  # per operation; over twenty operations: about 1,500 cases per run (2,222 at 60)


# The app is built at import (no I/O: the store opens in its lifespan, from the environment the
# fixture sets), so that schemathesis can read its OpenAPI document when it collects the tests.
# Read from the app itself, not over ASGI: ``from_asgi`` starts the app's lifespan to fetch the
# document, at import, on whatever store the environment names then (an empty ``var/`` store
# without keys: every keyed request was a 401), and schemathesis keeps that lifespan running for
# the whole process. So the lifespan starts at the first call, inside the fixture's environment.
APP = create_app(reload_seconds=0)


def _schema():
    """The document of ``APP``, its calls made to ``APP`` in process. The ``X-API-Key`` header is
    not generated: every call sends the admin key (a generated one is a 401 that tells nothing,
    and a "missing" one that the call then sends is not missing; keys are tested in test_keys.py)."""
    loaded = schemathesis.openapi.from_dict(APP.openapi())
    loaded.app = APP  # the calls go to the app in process, as from_asgi's would
    loaded.config.generation.update(with_security_parameters=False)
    return loaded.exclude(
        path="/v1/admin/reload"  # a reload re-verifies a whole run (seconds each): tested in test_api.py
    )


schema = _schema()


def _serves(world: dict) -> bool:
    """The app's lifespan has run on ``world``'s store (not on one the import-time environment named)."""
    store = getattr(APP.state, "store", None)
    return store is not None and store.engine.url.render_as_string() == world["url"]


@pytest.fixture(scope="module")
def fuzzed(imported_world, trained_small, small_config, tmp_path_factory):
    """A served world of its own (the fuzzer may erase customers or write feedback)."""
    with own_world(imported_world, trained_small, small_config, tmp_path_factory, "kw-fuzz") as world:
        mp = pytest.MonkeyPatch()
        assert getattr(APP.state, "store", None) is None, "APP's lifespan started before the fixture"
        mp.setenv(
            "KUNDENWERT_DATABASE_URL", world["url"]
        )  # schemathesis runs APP's lifespan at its first call
        try:
            yield world
        finally:
            mp.undo()


# minutes (about 1,500 cases on a served world): with the slow suites, which CI runs (`make
# test-slow`), so every CI run still fuzzes every operation; `make test` stays under 15 minutes
@pytest.mark.slow
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
    try:
        response = case.call_and_validate(headers={"X-API-Key": fuzzed["keys"]["admin"]})
    except FailureGroup as failed:
        if not all(_mislabelled(case, f) for f in failed.exceptions):
            raise
        MISLABELLED.append(case.operation.label)  # schemathesis' mistake, not the service's
        return
    STATUSES[response.status_code] += 1
    assert _serves(fuzzed)


MISLABELLED: list[str] = []


def _mislabelled(case, failure) -> bool:
    """A "schema-valid request rejected" whose request is not schema-valid: schemathesis'
    generator now and then puts a value its own parameter check refuses into a positive case
    (an id with U+001C, against the pattern that forbids control characters), and the service's
    422 for it is right. Judged by schemathesis' own ``is_valid`` of each parameter's value."""
    if type(failure).__name__ != "RejectedPositiveData":
        return False
    values = {
        "path": case.path_parameters or {},
        "query": case.query or {},
        "header": case.headers or {},
    }
    for param in case.operation.iter_parameters():
        where = values.get(str(param.location.value))
        if where is not None and param.name in where and not param.is_valid(where[param.name]):
            return True
    return False


@pytest.mark.slow  # counts the cases of the test above, which runs with the slow suites
def test_enough_cases_were_generated() -> None:
    print(
        f"schemathesis generated {CASES['n']:,} cases: {dict(sorted(STATUSES.items()))}; "
        f"{len(MISLABELLED)} mislabelled by schemathesis: {MISLABELLED}"
    )  # -s / -rA
    assert CASES["n"] >= 1_000, CASES["n"]
    # schemathesis' own mislabelled cases (see _mislabelled) stay rare, or they would hide cases
    assert len(MISLABELLED) <= 0.01 * CASES["n"], MISLABELLED
    # the cases reached the service behind the key check (every call sends the admin key): none
    # was refused for its key, and valid requests were answered
    assert 401 not in STATUSES and 403 not in STATUSES, STATUSES
    assert sum(n for status, n in STATUSES.items() if 200 <= status < 300) >= 0.05 * CASES["n"], STATUSES


# The stateful run: valid requests only (a request the document refuses ends its chain).
STATEFUL = _schema()
STATEFUL.config.generation.update(modes=[GenerationMode.POSITIVE])
STEPS: Counter[str] = Counter()  # "followed <link>", "<METHOD path> <status>" of the stateful run
SCENARIOS = 60
STEPS_PER_SCENARIO = 8


@pytest.mark.slow  # minutes (every chain ends in a list's campaign results): CI runs it with the slow suites
def test_the_links_lead_from_each_answer_to_the_next_request(fuzzed, monkeypatch) -> None:
    """A stateful run: schemathesis chains requests along the document's links (a target list
    created, then read, page by page, then a member's next best actions, then feedback on that
    decision; a batch score, then feedback), every answer checked against the document as above.
    The links must actually be followed: several of them to an accepted request (2xx)."""
    import schemathesis.specs.openapi.stateful as stateful

    key = fuzzed["keys"]["admin"]
    # schemathesis starts scenarios only at operations it thinks likely to succeed with random
    # data; it takes a list request's optional action_id for a reference to an "Action" resource
    # no operation returns, and so would never create a list. Creating one is where that chain starts.
    likely = stateful.is_likely_root_transition
    monkeypatch.setattr(
        stateful,
        "is_likely_root_transition",
        lambda operation, *args: operation.label == "POST /v1/target-lists" or likely(operation, *args),
    )

    class Workflow(STATEFUL.as_state_machine()):  # type: ignore[misc, valid-type]
        rule_order_seed = 16  # any operation may start a scenario, not the first by name each time

        def get_call_kwargs(self, case):
            return {"headers": {"X-API-Key": key}}

        def step(self, input):
            output = super().step(input)
            status = output.response.status_code
            STEPS[f"{input.case.operation.label} {status}"] += 1
            if input.transition is not None and input.is_applied:
                # "POST /v1/target-lists -> [201] ReadTheList -> GET /v1/target-lists/{list_id}"
                name = input.transition.id.split(" -> ")[1].split("] ", 1)[-1]
                STEPS[f"followed {name} {status}"] += 1
            return output

        def validate_response(self, response, case, *args, **kwargs):
            try:
                super().validate_response(response, case, *args, **kwargs)
            except BaseException as failed:
                FAILED.append(failed)
                raise

    # The service is the state: what a draw may be depends on what earlier scenarios stored (a
    # list that exists, a decision that has feedback), so Hypothesis' replay of a scenario can
    # draw differently and stop with FlakyStrategyDefinition. That is the fuzzer meeting a
    # stateful server, not a wrong answer: every answer's checks are recorded, and any failed
    # check fails the test; a run cut short that way goes on with the scenarios left.
    FAILED: list[BaseException] = []
    left = SCENARIOS
    for _ in range(3):
        before = sum(STEPS.values())
        try:
            Workflow.run(
                settings=settings(
                    max_examples=left,
                    stateful_step_count=STEPS_PER_SCENARIO,
                    deadline=None,
                    derandomize=True,  # the same draws in CI as on a developer's machine
                    database=None,  # not replays of what a developer's earlier runs found
                    suppress_health_check=list(HealthCheck),
                )
            )
            break
        except FlakyStrategyDefinition:
            if FAILED:
                raise FAILED[0] from None
            STEPS["runs cut short by a replay that drew differently"] += 1
            left = max(10, left - (sum(STEPS.values()) - before) // STEPS_PER_SCENARIO)
    assert not FAILED, FAILED
    assert _serves(fuzzed)
    print("stateful run:", dict(sorted(STEPS.items())))  # shown with -s / in the CI log's -rA
    followed = {k: v for k, v in STEPS.items() if k.startswith("followed ")}
    assert sum(followed.values()) >= 20, STEPS
    # which links a random run reaches is chance (the CI run of 2026-12-01 took a list member's
    # feedback link twice and a decision's never); that every link leads to an accepted request
    # is shown every time by test_every_link_leads_from_a_real_answer_to_an_accepted_request
    assert len({k.rsplit(" ", 1)[0] for k, v in followed.items() if k.endswith(" 200")}) >= 3, STEPS


def _resolve(expression, request: dict, answer: dict):
    """The value of an OpenAPI runtime expression of the forms ``links.py`` uses
    (``$response.body#/a/0/b``, ``$request.path.x``) for one answer; constants stay as they are;
    dicts and lists are resolved value by value."""
    if isinstance(expression, dict):
        return {k: _resolve(v, request, answer) for k, v in expression.items()}
    if isinstance(expression, list):
        return [_resolve(v, request, answer) for v in expression]
    if not isinstance(expression, str) or not expression.startswith("$"):
        return expression
    if expression.startswith("$request.path."):
        return request["path"][expression.removeprefix("$request.path.")]
    pointer = expression.removeprefix("$response.body#")
    assert pointer != expression, f"an expression this walk does not know: {expression}"
    value = answer
    for part in pointer.lstrip("/").split("/"):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def test_every_link_leads_from_a_real_answer_to_an_accepted_request(fuzzed) -> None:
    """Each link of the document, followed by hand from a real answer: its target answers 2xx.
    (The stateful run follows links at random and may not reach every one in a run; this walk
    does, every time.) A list's first member may be a control member: the documented refusal
    (409) is then the right answer, and the walk takes a treated member's page."""
    from kundenwert.serving.links import LINKS

    key = {"X-API-Key": fuzzed["keys"]["admin"]}

    def call(method: str, path: str, request: dict):
        case = STATEFUL[path][method.upper()].Case(
            path_parameters=request.get("path") or None,
            query=request.get("query") or None,
            body=request["body"] if request.get("body") is not None else NOT_SET,
        )
        response = case.call(headers=key)
        return response.status_code, (response.json() if response.content else None)

    # one real source answer per link source, the request that produced it kept beside it
    created = {"body": {"objective": "win_back", "channel": "email", "size": 40, "control_share": 0}}
    status, listed = call("post", "/v1/target-lists", created)
    assert status == 201, listed
    read = {"path": {"list_id": listed["list_id"]}, "query": {"limit": 5}}
    status, page = call("get", "/v1/target-lists/{list_id}", read)
    assert status == 200 and page["members"] and page["next_cursor"], page
    customer = page["members"][0]["customer_id"]
    asked = {"path": {"customer_id": customer}}
    status, decided = call("get", "/v1/customers/{customer_id}/next-best-actions", asked)
    assert status == 200 and decided["suggestions"], decided
    scored = {"body": {"customer_ids": [m["customer_id"] for m in page["members"][1:]]}}
    status, batch = call("post", "/v1/score", scored)
    assert status == 200 and batch["results"][0]["suggestions"], batch
    sources = {
        ("post", "/v1/target-lists", "201"): (created, listed),
        ("get", "/v1/target-lists/{list_id}", "200"): (read, page),
        ("get", "/v1/customers/{customer_id}/next-best-actions", "200"): (asked, decided),
        ("post", "/v1/score", "200"): (scored, batch),
    }
    assert set(sources) == set(LINKS), "a link source this walk does not reach"
    answered = {}
    for source, links in LINKS.items():
        request, answer = sources[source]
        for name, (method, path, _, parameters, body) in links.items():
            target: dict = {"path": {}, "query": {}, "body": _resolve(body, request, answer)}
            for where, expression in parameters.items():
                place, param = where.split(".", 1)
                target[place][param] = _resolve(expression, request, answer)
            answered[name] = call(method, path, target)
    refused = {name: answer for name, answer in answered.items() if not 200 <= answer[0] < 300}
    assert not refused, refused
    # the feedback links were taken as what they say: a decision's, a list member's event stored
    for name in ("FeedbackOnTheDecision", "FeedbackOnTheFirstDecision", "FeedbackOnTheFirstMember"):
        assert answered[name][1]["stored"] == 1, (name, answered[name])


def test_only_a_positive_case_its_own_schema_refuses_counts_as_mislabelled() -> None:
    from schemathesis.openapi.checks import RejectedPositiveData

    erase = schemathesis.openapi.from_dict(APP.openapi())["/v1/customers/{customer_id}"]["DELETE"]
    failure = RejectedPositiveData.__new__(RejectedPositiveData)  # only its kind is read
    bad = erase.Case(path_parameters={"customer_id": "č_\x1cN6"})  # the value a run of the fuzzer sent
    good = erase.Case(path_parameters={"customer_id": "00000042"})
    assert _mislabelled(bad, failure)
    assert not _mislabelled(good, failure)  # a valid id refused would be the service's bug
    assert not _mislabelled(bad, AssertionError("another check"))
