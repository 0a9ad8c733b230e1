"""OpenAPI links of the API document: how an answer leads to the next request (a list created,
then read, page by page, then its results, its members' feedback and next best actions; a
decision, then its feedback).

Generated clients and schemathesis' stateful run (``tests/serving/test_fuzz.py``)
follow them. Targets are named by ``operationRef`` (a JSON pointer to the path and method), not
by ``operationId``: the ids FastAPI derives are what generated clients call their methods, and
links must not make anyone rename them.
"""

from __future__ import annotations

from typing import Any

TARGET_LISTS = "/v1/target-lists"
TARGET_LIST = "/v1/target-lists/{list_id}"
NEXT_BEST_ACTIONS = "/v1/customers/{customer_id}/next-best-actions"
CUSTOMER = "/v1/customers/{customer_id}"
SCORE = "/v1/score"
FEEDBACK = "/v1/feedback"
LIST_RESULTS = "/v1/target-lists/{list_id}/results"


def operation_ref(method: str, path: str) -> str:
    """``#/paths/~1v1~1feedback/post``: a JSON pointer (RFC 6901) to an operation."""
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method.lower()


def _feedback_of(decision: str) -> dict[str, Any]:
    """The body of a feedback request reporting the first suggestion of ``decision`` (a JSON
    pointer of the source answer to a ``CustomerDecision``) as sent, once per decision (its id is
    the event id). A client fills in its own event id, outcome and time; schemathesis sends it as
    it is (``merge_body`` false: a generated batch would carry other, unknown decisions)."""
    return {
        "events": [
            {
                "event_id": f"$response.body#{decision}/decision_id",
                "decision_id": f"$response.body#{decision}/decision_id",
                "action_id": f"$response.body#{decision}/suggestions/0/action_id",
                "channel": f"$response.body#{decision}/suggestions/0/channel",
                "outcome": "sent",
                "occurred_at": "2026-01-01T00:00:00Z",
            }
        ]
    }


# (method, path, status) of the source -> {link name: (target method, target path, description,
# parameters, request body)}
LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str, str, dict[str, str], dict | None]]] = {
    ("post", TARGET_LISTS, "201"): {
        "ReadTheList": (
            "get",
            TARGET_LIST,
            "the members of the list just created",
            {"path.list_id": "$response.body#/list_id"},
            None,
        ),
        "ReadTheResults": (
            "get",
            LIST_RESULTS,
            "the campaign results of the list just created (not_sent until a contact is recorded)",
            {"path.list_id": "$response.body#/list_id"},
            None,
        ),
    },
    ("get", TARGET_LIST, "200"): {
        "NextPage": (
            "get",
            TARGET_LIST,
            "the next page of the list (JSON)",
            {"path.list_id": "$request.path.list_id", "query.cursor": "$response.body#/next_cursor"},
            None,
        ),
        "TheListResults": (
            "get",
            LIST_RESULTS,
            "the campaign results of the list",
            {"path.list_id": "$request.path.list_id"},
            None,
        ),
        "FeedbackOnTheFirstMember": (
            "post",
            FEEDBACK,
            "report that the list's first member on the page was sent the list's action (a control "
            "member's event is refused: control members are never contacted)",
            {},
            {
                "events": [
                    {
                        "event_id": "$response.body#/members/0/customer_id",
                        "list_id": "$request.path.list_id",
                        "customer_id": "$response.body#/members/0/customer_id",
                        "action_id": "$response.body#/members/0/action_id",
                        "channel": "$response.body#/request/channel",
                        "outcome": "sent",
                        "occurred_at": "2026-01-01T00:00:00Z",
                    }
                ]
            },
        ),
        "NextBestActionsOfAMember": (
            "get",
            NEXT_BEST_ACTIONS,
            "the next best actions of the first member on the page",
            {"path.customer_id": "$response.body#/members/0/customer_id"},
            None,
        ),
    },
    ("get", NEXT_BEST_ACTIONS, "200"): {
        "FeedbackOnTheDecision": (
            "post",
            FEEDBACK,
            "report what happened to the first suggestion, by its decision_id",
            {},
            _feedback_of(""),
        ),
        "TheCustomer": (
            "get",
            CUSTOMER,
            "the sales view of the same customer",
            {"path.customer_id": "$request.path.customer_id"},
            None,
        ),
    },
    ("post", SCORE, "200"): {
        "FeedbackOnTheFirstDecision": (
            "post",
            FEEDBACK,
            "report what happened to the first suggestion of the first customer, by its decision_id",
            {},
            _feedback_of("/results/0"),
        ),
    },
}


def add_links(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (an OpenAPI document) with ``LINKS`` on its responses. A link whose source or
    target operation the document lacks is a bug here: ``KeyError`` naming it."""
    paths = schema["paths"]
    for (method, path, status), links in LINKS.items():
        try:
            response = paths[path][method]["responses"][status]
        except KeyError:
            raise KeyError(
                f"link source {method.upper()} {path} {status} is not in the API document"
            ) from None
        out = response.setdefault("links", {})
        for name, (target_method, target_path, description, parameters, body) in links.items():
            if target_method not in paths.get(target_path, {}):
                raise KeyError(
                    f"link {name}: target {target_method.upper()} {target_path} is not in the API document"
                )
            link: dict[str, Any] = {
                "operationRef": operation_ref(target_method, target_path),
                "description": description,
            }
            if parameters:
                link["parameters"] = parameters
            if body is not None:
                link["requestBody"] = body
                link["x-schemathesis"] = {"merge_body": False}  # the body as it is (see _feedback_of)
            out[name] = link
    return schema
