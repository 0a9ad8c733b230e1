"""Exploration with logged propensities: which of a channel's eligible candidates a decision shows
first, and the probability with which it was chosen.

Per customer and channel, the candidates that passed every rule are ranked by score; without
exploration the decision shows them in that order (the first is the one a campaign tool sends).
With exploration, a decision whose best candidate is action ``a`` is *explored* with probability
``epsilon_a`` (the action's ``explore`` share, else the catalog's ``exploration``): it shows one of
the ``k`` eligible candidates drawn uniformly first, and the rest in score order after it. So
the probability that candidate ``j`` is shown first is

    pi(j) = (1 - epsilon) * [j is the best] + epsilon / k,

which every decision stores for its first suggestion per channel (``probability``), together
with every eligible candidate and ``epsilon`` (``kw_decisions.candidates``), so that off-policy
evaluation (``kundenwert.models.ope``, ``kundenwert evaluate-policy``) can weigh logged outcomes
by it. With every share at 0 nothing is drawn and the order is the score order: decisions are
exactly those without exploration, each first suggestion with probability 1.

Control groups are not touched: a candidate in its action's control group never passed the
rules, so it is not eligible here; exploration only reorders what may be sent anyway.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Choice:
    """The order a channel's eligible candidates are shown in (indices into the candidates given,
    best-scored first unless explored), whether the first was drawn at random, the probability
    with which the first was chosen, and the channel's exploration share."""

    order: list[int]
    explored: bool
    probability: float
    epsilon: float


class Explorer:
    """Draws explored decisions. ``shares``: action id -> exploration share in [0, 1) (actions
    not named: ``default``). ``seed``: for reproducible draws (simulations, tests); by default
    seeded once from the operating system."""

    def __init__(self, shares: Mapping[str, float], default: float = 0.0, seed: int | None = None) -> None:
        for name, share in [("default", default), *shares.items()]:
            if not 0.0 <= share < 1.0:
                raise ValueError(f"exploration share of {name} must be in [0, 1), not {share}")
        self.shares = dict(shares)
        self.default = default
        self.active = default > 0 or any(s > 0 for s in self.shares.values())
        self._rng = random.Random(os.urandom(32) if seed is None else seed)

    def share(self, action_id: str) -> float:
        return self.shares.get(action_id, self.default)

    def choose(self, action_ids: Sequence[str]) -> Choice:
        """The order for one channel's eligible candidates, ``action_ids`` best-scored first."""
        k = len(action_ids)
        if k == 0:
            return Choice([], False, 1.0, 0.0)
        epsilon = self.share(action_ids[0]) if self.active else 0.0
        order = list(range(k))
        if epsilon == 0.0 or k == 1:
            return Choice(order, False, 1.0, epsilon)
        if self._rng.random() < epsilon:
            first = self._rng.randrange(k)
            order.remove(first)
            order.insert(0, first)
            return Choice(order, True, probability(first, k, epsilon), epsilon)
        return Choice(order, False, probability(0, k, epsilon), epsilon)


def probability(position: int, k: int, epsilon: float) -> float:
    """The probability that the candidate at ``position`` of ``k`` (0: best-scored) is shown first
    by a decision with exploration share ``epsilon``."""
    return (1.0 - epsilon) * (position == 0) + epsilon / k


def of_catalog(catalog, seed: int | None = None) -> Explorer:
    """The ``Explorer`` of a catalog's ``exploration`` and its actions' ``explore`` shares."""
    shares = {a.id: a.explore for a in catalog.actions if a.explore is not None}
    return Explorer(shares, catalog.exploration, seed=seed)
