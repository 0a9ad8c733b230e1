"""Exploration with logged propensities: a share of decisions shows a random eligible candidate
first, every decision logs the probability of what it showed and every eligible candidate, and
with exploration at 0 the service decides exactly as without it."""

from __future__ import annotations

import json
from collections import Counter
from contextlib import contextmanager

import numpy as np
import pytest
import sqlalchemy as sa

from kundenwert.errors import ConfigurationError
from kundenwert.serving.catalog import load_catalog
from kundenwert.serving.exploration import Explorer, probability


def test_without_exploration_nothing_is_drawn_and_the_order_is_the_score_order() -> None:
    e = Explorer({}, 0.0, seed=1)
    state = e._rng.getstate()
    for k in range(6):
        choice = e.choose([f"a{i}" for i in range(k)])
        assert choice.order == list(range(k)) and not choice.explored
        assert choice.probability == 1.0 and choice.epsilon == 0.0
    assert e._rng.getstate() == state  # no draw at all: the same decisions as before exploration


def test_the_logged_probability_is_the_frequency_with_which_each_candidate_is_shown_first() -> None:
    e, k, eps, n = Explorer({}, 0.3, seed=7), 4, 0.3, 40_000
    first: Counter[int] = Counter()
    explored = 0
    for _ in range(n):
        c = e.choose(["a", "b", "c", "d"])
        assert sorted(c.order) == [0, 1, 2, 3]  # every candidate kept, one moved to the front
        assert c.order[1:] == sorted(c.order[1:])  # the rest in score order
        assert c.probability == pytest.approx(probability(c.order[0], k, eps))
        first[c.order[0]] += 1
        explored += c.explored
    for position in range(k):
        p = probability(position, k, eps)
        assert abs(first[position] / n - p) < 4 * np.sqrt(p * (1 - p) / n), (position, first)
    assert abs(explored / n - eps) < 4 * np.sqrt(eps * (1 - eps) / n)
    assert sum(probability(j, k, eps) for j in range(k)) == pytest.approx(1.0)


def test_an_actions_share_applies_to_the_decisions_it_would_win() -> None:
    e = Explorer({"loud": 0.5}, 0.0, seed=3)
    assert not any(e.choose(["quiet", "loud"]).explored for _ in range(500))
    share = np.mean([e.choose(["loud", "quiet"]).explored for _ in range(4_000)])
    assert abs(share - 0.5) < 0.04
    assert e.choose(["loud"]).probability == 1.0  # one candidate: nothing to explore


ONE_ACTION = """
[[actions]]
id = "keep"
kind = "retention"
title = "Keep"
channels = {email = 0.05}
value = "clv"
"""


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("exploration = 1.0\n" + ONE_ACTION, "exploration"),
        ("exploration = -0.1\n" + ONE_ACTION, "exploration"),
        (ONE_ACTION + "explore = 2\n", "explore"),
    ],
)
def test_a_share_outside_0_to_1_is_refused_by_name(tmp_path, toml, named) -> None:
    path = tmp_path / "actions.toml"
    path.write_text(toml)
    with pytest.raises(ConfigurationError, match=named):
        load_catalog(path)


def test_an_explorer_refuses_a_share_outside_0_to_1_by_name() -> None:
    with pytest.raises(ValueError, match="share of x"):
        Explorer({"x": 1.5})
    with pytest.raises(ValueError, match="share of default"):
        Explorer({}, 1.0)


def test_the_packaged_catalog_explores_a_small_share() -> None:
    catalog = load_catalog()
    assert 0 < catalog.exploration <= 0.1


@contextmanager
def exploring(state, share: float, seed: int):
    """The served state with exploration ``share`` (seeded), restored after."""
    before = state.explorer
    state.explorer = Explorer({}, share, seed=seed)
    try:
        yield state.explorer
    finally:
        state.explorer = before


def _stored(world, decision_ids: list[str]) -> dict[str, tuple]:
    world["client"].app.state.serving.decisions.flush()
    engine = sa.create_engine(world["url"])
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT decision_id, suggestions, candidates FROM kw_decisions")).all()
    engine.dispose()
    wanted = set(decision_ids)
    return {
        r.decision_id: (json.loads(r.suggestions), json.loads(r.candidates))
        for r in rows
        if r.decision_id in wanted
    }


def test_at_exploration_0_the_service_decides_as_the_score_order(served) -> None:
    """Every suggestion of the route is the funnel's ranking as ``decide`` gives it (rank <= limit),
    each first suggestion logged with probability 1, and every eligible candidate stored."""
    c, key = served["client"], {"X-API-Key": served["keys"]["sales"]}
    state = c.app.state.serving
    ids = served["customers"][:150]
    with exploring(state, 0.0, seed=0):
        bodies = [c.get(f"/v1/customers/{cid}/next-best-actions", headers=key).json() for cid in ids]
        frame = state.decide(ids).frame()
    kept = frame[frame["reason"] == ""]
    decided = 0
    for cid, body in zip(ids, bodies, strict=True):
        mine = kept[kept["customer_id"] == cid]
        expected = sorted(
            (ch, int(r), a) for a, ch, r in mine[["action_id", "channel", "rank"]].to_numpy() if r <= 3
        )
        shown = sorted((s["channel"], s["rank"], s["action_id"]) for s in body["suggestions"])
        assert shown == expected, cid
        for s in body["suggestions"]:
            assert s["explored"] is False
            assert s["probability"] == (1.0 if s["rank"] == 1 else None)
        if body["decision_id"]:
            decided += 1
            suggestions, candidates = _stored(served, [body["decision_id"]])[body["decision_id"]]
            assert all(s["probability"] == 1.0 for s in suggestions if s["rank"] == 1)
            for ch, slot in candidates.items():
                eligible = mine[mine["channel"] == ch].sort_values("rank")
                assert [x[0] for x in slot["candidates"]] == eligible["action_id"].tolist()
                assert slot["shown"] == 0 and slot["epsilon"] == 0.0
    assert decided >= 20


def test_explored_decisions_log_the_probability_of_what_they_showed(served) -> None:
    """With a share of 0.5: about half the decisions of a customer with several candidates show
    another first; each stored decision names what it showed, and the stored probability is the
    frequency with which each candidate came first over many decisions."""
    c, key = served["client"], {"X-API-Key": served["keys"]["sales"]}
    state = c.app.state.serving
    with exploring(state, 0.0, seed=0):
        for cid in served["customers"]:
            body = c.get(
                f"/v1/customers/{cid}/next-best-actions",
                headers=key,
                params={"channel": "email", "limit": 50},
            ).json()
            if len(body["suggestions"]) >= 3:
                break
        else:
            pytest.fail("no customer with three email candidates")
    ranked = [s["action_id"] for s in body["suggestions"]]
    k, n = len(ranked), 600
    with exploring(state, 0.5, seed=11):
        answers = [
            c.get(f"/v1/customers/{cid}/next-best-actions", headers=key, params={"channel": "email"}).json()
            for _ in range(n)
        ]
    stored = _stored(served, [a["decision_id"] for a in answers])
    first: Counter[str] = Counter()
    for a in answers:
        top = a["suggestions"][0]
        first[top["action_id"]] += 1
        position = ranked.index(top["action_id"])
        assert top["probability"] == pytest.approx(probability(position, k, 0.5))
        if top["action_id"] != ranked[0]:
            assert top["explored"]  # only a draw puts another candidate first
        suggestions, candidates = stored[a["decision_id"]]
        slot = candidates["email"]
        assert slot["epsilon"] == 0.5 and [x[0] for x in slot["candidates"]] == ranked
        assert slot["candidates"][slot["shown"]][0] == top["action_id"]
        assert suggestions[0]["probability"] == top["probability"]
        rest = [s["action_id"] for s in a["suggestions"][1:]]
        assert rest == [x for x in ranked if x != top["action_id"]][: len(rest)]  # then score order
    for position, action in enumerate(ranked):
        p = probability(position, k, 0.5)
        assert abs(first[action] / n - p) < 4 * np.sqrt(p * (1 - p) / n), (action, first)
