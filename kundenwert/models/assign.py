"""Budget- and capacity-constrained assignment of options (action, channel) to customers.

The problem: every candidate row is one option for one customer with an expected incremental
value ``value`` (what the caller ranks by: uplift x value - cost, say), a money ``cost``, a
``channel`` and expected incremental ``responders``. Choose at most one option per customer
(taking nothing is always allowed) to maximise the total value subject to

- a money budget: the sum of the chosen costs <= ``budget`` (optional),
- a capacity per channel: the number of chosen rows of channel k <= ``capacity[k]`` (optional,
  any subset of the channels),

a 0/1 programme with one assignment row per customer and only ``m = 1 + #capped channels``
coupling rows. Two ways to solve it (``method``):

- ``"milp"`` (small problems, the default up to ``exact_limit`` = 20,000 candidates with a
  positive value): scipy's ``milp`` (HiGHS branch and cut, relative gap 1e-9), exact; the LP
  relaxation (``linprog``, HiGHS dual simplex) gives the LP bound and the shadow prices. Both
  grow superlinearly: a 12,000-candidate MILP with its LPs takes seconds on a loaded machine.
- ``"lagrangian"`` (large problems: 1,000,000 customers x 26 options is far too big for a MILP
  on two cores). The LP's dual has one multiplier per coupling row (lambda) and one per customer;
  for fixed lambda each customer simply takes the option maximising ``value - lambda . resources``
  or nothing. So the LP is solved through the few multipliers: lambda is estimated on an LP over
  a random sample of 2,000 customers (resources scaled to the sample) and refined the same way
  on samples ten times larger, every customer whose best choice
  cannot change while lambda stays in a box around that estimate is fixed, and the LP over the
  remaining "ambiguous" customers (their possibly-best options only, the resources the fixed
  customers leave) is solved with HiGHS. Its duals are checked against every candidate
  (complementary slackness: each fixed customer's choice must still be its best at the new
  lambda, each ambiguous customer's dual must cover all of its options); a few customers that
  fail join the LP with all their options, many double the box, and it is solved again. When the check passes the joined solution is an optimal
  LP solution of the whole problem, found without ever building the 26M-column LP. A basic
  LP solution has at most ``m`` fractional customers: they are rounded down and what is left
  of the budget and the capacities is filled greedily (by value) with customers that got
  nothing. The gap to the LP bound is reported: it is the most an exact MILP could add.

Shadow prices are the LP duals of the coupling rows: the marginal value of one more unit of
budget (value per money unit) and of one more contact per capped channel, 0 for a slack row.
They are the LP's marginal values, exact for the LP as long as the optimal basis does not
change; for the 0/1 answer they are an approximation (the integer value moves in steps, by
whole customers). ``budget_gain`` and ``capacity_gains`` say what one more unit buys exactly in
the LP (re-solved with the row raised by 1): equal to the price when the basis holds over the
step, lower when it does not (the LP value is concave in each right-hand side, so the price of
the raised problem <= gain <= the price).

Pruning keeps the LP value function unchanged for every budget and capacity: options with a
non-positive value are never worth taking, and (exact path) an option dominated by another of the
same customer and channel (costing no less and worth no more) is dropped.
Pure numpy / scipy / pandas, no I/O.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import optimize, sparse

log = logging.getLogger(__name__)

REQUIRED = ("customer", "value", "cost", "channel")
EXACT_LIMIT = 20_000  # candidates (after pruning) up to which ``method="auto"`` solves the MILP
_SAMPLE_CUSTOMERS = 2_000  # customers in the direct LP that first estimates lambda
_MAX_ROUNDS = 30


@dataclass(frozen=True)
class Assignment:
    """The chosen options, their totals, the LP bound and the shadow prices.

    ``rows`` are the positions (0-based, input order) of the chosen candidate rows, ascending, at
    most one per customer; ``chosen`` holds those rows of the input (every column). ``value``,
    ``responders`` and ``cost`` are their sums, ``contacts`` the chosen rows per channel (every
    channel among the candidates). ``lp_bound`` is the optimum of the LP relaxation (for the
    lagrangian path the dual bound at the final multipliers: an upper bound of every assignment's
    value whatever the rounding), ``gap = lp_bound - value`` and ``relative_gap = gap / lp_bound``.
    ``budget_price`` (``None`` without a budget) and ``capacity_prices`` (the capped channels) are
    the LP shadow prices; ``budget_gain`` / ``capacity_gains`` the LP value that one more unit buys
    (``None`` / empty when not computed). ``optimal`` is true when the answer is a proven optimum
    of the 0/1 problem (the milp path). ``fractional`` counts the customers the LP split between
    options, rounded down before the greedy fill.
    """

    rows: np.ndarray
    chosen: pd.DataFrame
    value: float
    responders: float
    cost: float
    contacts: dict[Hashable, int]
    lp_bound: float
    gap: float
    relative_gap: float
    budget_price: float | None
    capacity_prices: dict[Hashable, float]
    budget_gain: float | None
    capacity_gains: dict[Hashable, float]
    method: str
    status: str
    optimal: bool
    fractional: int = 0
    candidates: int = 0  # after pruning
    lp_candidates: int = 0  # columns of the (last) LP solved: all of them for milp
    rounds: int = 0  # LP solves of the lagrangian path until its check passed
    seconds: float = 0.0
    budget: float | None = None
    capacity: dict[Hashable, float] = field(default_factory=dict)

    @property
    def customers(self) -> int:
        return int(len(self.rows))


@dataclass
class _Problem:
    """The pruned candidates grouped by customer (groups 0..n-1, contiguous, non-empty)."""

    rows: np.ndarray  # input position of each kept candidate
    cust: np.ndarray  # group of each kept candidate, non-decreasing
    starts: np.ndarray  # group boundaries, len n + 1
    value: np.ndarray
    cost: np.ndarray
    resp: np.ndarray
    ch: np.ndarray  # channel code of each kept candidate
    channels: list[Hashable]  # channel labels by code (all input channels)
    has_budget: bool
    cap_codes: np.ndarray  # channel code of each capacity row
    rhs: np.ndarray  # budget (if any), then the capacities in cap_codes order
    n_input: int

    @property
    def n(self) -> int:
        return len(self.starts) - 1

    @property
    def m(self) -> int:
        return len(self.rhs)

    def mu(self, lam: np.ndarray) -> tuple[float, np.ndarray]:
        """(price of money, price per channel code) of the multipliers ``lam`` (0 if uncapped)."""
        lam_b = float(lam[0]) if self.has_budget else 0.0
        mu = np.zeros(len(self.channels))
        mu[self.cap_codes] = lam[1:] if self.has_budget else lam
        return lam_b, mu

    def reduced(self, lam: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """value - lam . resources of every candidate (or of ``idx``)."""
        lam_b, mu = self.mu(lam)
        v, c, ch = (
            (self.value, self.cost, self.ch)
            if idx is None
            else (self.value[idx], self.cost[idx], self.ch[idx])
        )
        r = v - mu[ch] if mu.any() else v.copy()
        if lam_b:
            r -= lam_b * c
        return r

    def usage(self, idx: np.ndarray) -> np.ndarray:
        """Resources (budget, capacity rows) used by the candidates ``idx``."""
        out = []
        if self.has_budget:
            out.append(float(self.cost[idx].sum()))
        counts = np.bincount(self.ch[idx], minlength=len(self.channels))
        out.extend(counts[self.cap_codes].astype(float))
        return np.asarray(out, dtype=float)

    def group_max(self, r: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(r, self.starts[:-1]) if self.n else np.zeros(0)

    def group_argmax(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(max per customer, the first candidate attaining it)."""
        g = self.group_max(r)
        hit = np.flatnonzero(r == g[self.cust])
        first = hit[np.r_[True, self.cust[hit[1:]] != self.cust[hit[:-1]]]] if len(hit) else hit
        return g, first

    def dual_bound(self, lam: np.ndarray, rhs: np.ndarray) -> float:
        """The Lagrangian dual lam . rhs + sum over customers of max(0, best reduced value):
        an upper bound of the LP (and of every assignment) for any lam >= 0."""
        g = self.group_max(self.reduced(lam))
        return float(lam @ rhs + np.maximum(g, 0.0).sum())


# -- input ---------------------------------------------------------------------------------------


def _column(candidates: Any, name: str) -> np.ndarray:
    col = candidates[name]
    if isinstance(col, pd.Series):
        return col.to_numpy()
    return np.asarray(col)


def _numeric(a: np.ndarray, name: str) -> np.ndarray:
    try:
        out = np.asarray(a, dtype="float64")
    except (TypeError, ValueError) as e:
        raise ValueError(f"candidates column {name!r} must be numeric ({e})") from None
    bad = ~np.isfinite(out)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"candidates column {name!r} has {int(bad.sum())} missing or infinite value(s), "
            f"the first at row {i} ({a[i]!r}); every candidate needs a finite {name}"
        )
    return out


def _codes(a: np.ndarray, name: str) -> tuple[np.ndarray, list[Hashable]]:
    """(integer codes, labels) of a label column; a missing label is an error."""
    codes, labels = pd.factorize(a, use_na_sentinel=True)
    if (codes < 0).any():
        i = int(np.flatnonzero(codes < 0)[0])
        raise ValueError(f"candidates column {name!r} is missing at row {i}; every candidate needs a {name}")
    return codes.astype(np.int64), list(np.asarray(labels).tolist())


def _customer_codes(a: np.ndarray) -> tuple[np.ndarray, bool]:
    """(codes, already grouped): sorted integer ids (the usual layout) need no hashing or sort."""
    if a.dtype.kind in "iu" and len(a) and np.all(a[1:] >= a[:-1]):
        return np.r_[0, np.cumsum(a[1:] != a[:-1])].astype(np.int64), True
    return _codes(a, "customer")[0], False


def _prepare(
    candidates: Any,
    budget: float | None,
    capacity: Mapping[Hashable, float] | None,
) -> _Problem:
    if not isinstance(candidates, pd.DataFrame | Mapping):
        raise TypeError("candidates must be a pandas DataFrame or a mapping of column name -> array")
    missing = [c for c in REQUIRED if c not in candidates]
    if missing:
        raise ValueError(
            f"candidates lack column(s) {', '.join(missing)} (needed: {', '.join(REQUIRED)}; "
            "optional: responders)"
        )
    cols = {name: _column(candidates, name) for name in (*REQUIRED, "responders") if name in candidates}
    lengths = {name: len(a) for name, a in cols.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}: {v}" for k, v in lengths.items())
        raise ValueError(f"candidates columns differ in length ({shown}); each needs one entry per candidate")
    n_input = lengths["customer"]
    value = _numeric(cols["value"], "value")
    cost = _numeric(cols["cost"], "cost")
    if (cost < 0).any():
        i = int(np.flatnonzero(cost < 0)[0])
        raise ValueError(f"candidates column 'cost' is negative at row {i} ({cost[i]:g}); costs must be >= 0")
    resp = _numeric(cols["responders"], "responders") if "responders" in cols else np.zeros(n_input)
    if budget is not None and not (
        isinstance(budget, int | float | np.number) and math.isfinite(budget) and budget >= 0
    ):
        raise ValueError(f"budget must be a finite number >= 0 or None (no budget), not {budget!r}")
    cust, cust_sorted = _customer_codes(cols["customer"])
    ch_codes, channels = _codes(cols["channel"], "channel")
    cap_codes, rhs = [], []
    if budget is not None:
        rhs.append(float(budget))
    index = {lab: k for k, lab in enumerate(channels)}
    for lab, cap in (capacity or {}).items():
        if not (isinstance(cap, int | float | np.number) and math.isfinite(cap) and cap >= 0):
            raise ValueError(f"capacity of channel {lab!r} must be a finite number >= 0, not {cap!r}")
        if lab not in index:  # a channel without candidates: its row is slack (price 0)
            index[lab] = len(channels)
            channels.append(lab)
        cap_codes.append(index[lab])
        rhs.append(float(cap))

    keep = np.flatnonzero(value > 0)
    if not cust_sorted:
        keep = keep[np.argsort(cust[keep], kind="stable")]
    kc = cust[keep]
    new = np.r_[True, kc[1:] != kc[:-1]] if len(keep) else np.zeros(0, bool)
    starts = np.r_[np.flatnonzero(new), len(keep)].astype(np.int64)
    group = (np.cumsum(new) - 1).astype(np.int32)
    return _Problem(
        rows=keep,
        cust=group,
        starts=starts,
        value=value[keep],
        cost=cost[keep],
        resp=resp[keep],
        ch=ch_codes[keep].astype(np.int32),
        channels=channels,
        has_budget=budget is not None,
        cap_codes=np.asarray(cap_codes, dtype=np.int64),
        rhs=np.asarray(rhs, dtype=float),
        n_input=n_input,
    )


def _drop_dominated(p: _Problem) -> _Problem:
    """``p`` without the options another option of the same customer and channel dominates (no
    more costly and worth at least as much; of equal ones the first stays): the LP value is the
    same for every budget and capacity, the MILP smaller."""
    if not len(p.value):
        return p
    order = np.lexsort((-p.value, p.cost, p.ch, p.cust))
    c, h, v = p.cust[order], p.ch[order], p.value[order]
    first = np.r_[True, (c[1:] != c[:-1]) | (h[1:] != h[:-1])]
    cummax = pd.Series(v).groupby(np.cumsum(first), sort=False).cummax().to_numpy()
    before = np.r_[-np.inf, cummax[:-1]]
    before[first] = -np.inf
    return _select(p, np.sort(order[before < v]))


# -- LP pieces -----------------------------------------------------------------------------------


def _lp_matrix(p: _Problem, cols: np.ndarray, customers: np.ndarray) -> sparse.csr_matrix:
    """Rows: one per customer of ``customers`` (sum of its x <= 1), then the coupling rows;
    columns: the candidates ``cols`` (all of them options of ``customers``)."""
    row_of = np.full(p.n, -1, dtype=np.int64)
    row_of[customers] = np.arange(len(customers))
    nc, k = len(customers), len(cols)
    pos = np.arange(k)
    r = [row_of[p.cust[cols]]]
    c = [pos]
    d = [np.ones(k)]
    nxt = nc
    if p.has_budget:
        costed = p.cost[cols] != 0
        r.append(np.full(int(costed.sum()), nxt))
        c.append(pos[costed])
        d.append(p.cost[cols][costed])
        nxt += 1
    cap_row = np.full(len(p.channels), -1, dtype=np.int64)
    cap_row[p.cap_codes] = nxt + np.arange(len(p.cap_codes))
    cr = cap_row[p.ch[cols]]
    capped = cr >= 0
    r.append(cr[capped])
    c.append(pos[capped])
    d.append(np.ones(int(capped.sum())))
    return sparse.csr_matrix((np.concatenate(d), (np.concatenate(r), np.concatenate(c))), shape=(nc + p.m, k))


@dataclass
class _LP:
    value: float
    x: np.ndarray
    pi: np.ndarray  # dual per customer row
    lam: np.ndarray  # dual per coupling row (>= 0)


def _solve_lp(p: _Problem, cols: np.ndarray, customers: np.ndarray, rhs: np.ndarray) -> _LP:
    if len(cols) == 0:
        return _LP(0.0, np.zeros(0), np.zeros(len(customers)), np.zeros(p.m))
    a = _lp_matrix(p, cols, customers)
    b = np.r_[np.ones(len(customers)), rhs]
    res = optimize.linprog(-p.value[cols], A_ub=a, b_ub=b, bounds=(0, None), method="highs-ds")
    if res.status != 0:
        raise RuntimeError(f"the LP relaxation failed: {res.message}")
    duals = -np.asarray(res.ineqlin.marginals)
    nc = len(customers)
    return _LP(-float(res.fun), np.asarray(res.x), np.maximum(duals[:nc], 0), np.maximum(duals[nc:], 0))


@dataclass
class _Lagrange:
    lp: _LP
    value: float  # LP value of the joined solution (fixed customers + reduced LP)
    bound: float  # dual bound at lp.lam
    fixed: np.ndarray  # per customer: the fixed candidate, -1 nothing, -2 in the reduced LP
    cols: np.ndarray  # the reduced LP's columns
    col_mask: np.ndarray  # the same, as a mask over the candidates
    in_lp: np.ndarray  # customers in the reduced LP (bool per customer)
    converged: bool
    rounds: int


def _lagrangian_lp(
    p: _Problem,
    rhs: np.ndarray,
    lam0: np.ndarray,
    rel: float = 0.05,
    in_lp: np.ndarray | None = None,
    col_mask: np.ndarray | None = None,
) -> _Lagrange:
    """The LP optimum of the whole problem through a reduced LP over the customers whose choice
    may change around ``lam0`` (see the module docstring)."""
    scale = max(1.0, float(p.value.max())) if len(p.value) else 1.0
    tol = 1e-7 * scale
    in_lp = np.zeros(p.n, bool) if in_lp is None else in_lp.copy()
    col_mask = np.zeros(len(p.value), bool) if col_mask is None else col_mask.copy()
    center = np.maximum(np.asarray(lam0, dtype=float), 0)
    delta = rel * center
    lp = _LP(0.0, np.zeros(0), np.zeros(0), center)
    fixed = np.full(p.n, -1, dtype=np.int64)
    cols = np.zeros(0, dtype=np.int64)
    for rounds in range(1, _MAX_ROUNDS + 1):
        # classify at center: fixed to one option, fixed to nothing, or ambiguous in the box
        r = p.reduced(center)
        d_b, d_mu = p.mu(delta)
        s = d_mu[p.ch] + d_b * p.cost if (d_b or d_mu.any()) else None
        lo = r - s if s is not None else r
        hi = r + s if s is not None else r
        g_lo, best = p.group_argmax(lo)
        hi_other = hi.copy()
        hi_other[best] = -np.inf
        g_hi_other = p.group_max(hi_other)
        g_hi = np.maximum(g_hi_other, hi[best])
        to_best = (g_lo > 0) & (g_lo >= g_hi_other)
        to_none = g_hi <= 0
        ambiguous = ~(to_best | to_none)
        in_lp |= ambiguous
        col_mask |= ambiguous[p.cust] & (hi >= np.maximum(g_lo, 0)[p.cust])
        # customers kept in the LP from an earlier round keep their best option at the new center
        col_mask[best[in_lp & to_best]] = True
        fixed = np.where(to_best, best, -1)
        fixed[in_lp] = -2
        taken = fixed[fixed >= 0]
        residual = rhs - p.usage(taken)
        if (residual < -1e-9 * (1 + np.abs(rhs))).any():
            delta = 2 * delta + rel * center + 1e-3 * scale * (delta == 0)
            continue
        residual = np.maximum(residual, 0)
        customers = np.flatnonzero(in_lp)
        cols = np.flatnonzero(col_mask)
        t = time.perf_counter()
        lp = _solve_lp(p, cols, customers, residual)
        log.debug(
            "round %d of %d customers: reduced LP of %d customers, %d columns in %.2f s; %s -> %s",
            rounds, p.n, len(customers), len(cols), time.perf_counter() - t, center, lp.lam,
        )  # fmt: skip
        # check at the LP's multipliers: every candidate's reduced value
        r = p.reduced(lp.lam)
        g = np.maximum(p.group_max(r), 0)
        have = np.zeros(p.n)
        sel = fixed >= 0
        have[sel] = r[fixed[sel]]
        have[customers] = lp.pi
        bad = g - have > tol
        if not bad.any():
            value = float(p.value[taken].sum()) + lp.value
            bound = float(lp.lam @ rhs + g.sum())
            return _Lagrange(lp, value, bound, fixed, cols, col_mask, in_lp, True, rounds)
        # few failures join the LP with all their options; many mean the box missed the LP's
        # multipliers: it doubles around the same centre (the reduced LP's own multipliers are
        # no better a centre: with the box missed they swing far, the test's 0.2 -> 1.0 of the
        # budget's, and the next LP would hold every customer in between)
        if bad.sum() <= max(200, len(customers) // 2):
            in_lp |= bad
            col_mask |= bad[p.cust]
        else:
            delta = np.maximum(2 * delta, rel * lp.lam)
    value = float(p.value[fixed[fixed >= 0]].sum()) + lp.value
    return _Lagrange(lp, value, p.dual_bound(lp.lam, rhs), fixed, cols, col_mask, in_lp, False, _MAX_ROUNDS)


def _select(p: _Problem, cols: np.ndarray) -> _Problem:
    """The candidates ``cols`` (ascending) of ``p`` as a problem of their own."""
    keep = np.zeros(p.n, bool)
    keep[p.cust[cols]] = True
    group = (np.cumsum(keep) - 1)[p.cust[cols]].astype(np.int32)
    new = np.r_[True, group[1:] != group[:-1]] if len(cols) else np.zeros(0, bool)
    return _Problem(
        rows=p.rows[cols],
        cust=group,
        starts=np.r_[np.flatnonzero(new), len(cols)].astype(np.int64),
        value=p.value[cols],
        cost=p.cost[cols],
        resp=p.resp[cols],
        ch=p.ch[cols],
        channels=p.channels,
        has_budget=p.has_budget,
        cap_codes=p.cap_codes,
        rhs=p.rhs,
        n_input=p.n_input,
    )


def _subproblem(p: _Problem, customers: np.ndarray) -> _Problem:
    """The candidates of ``customers`` (sorted group numbers) as a problem of their own."""
    pick = np.zeros(p.n, bool)
    pick[customers] = True
    return _select(p, np.flatnonzero(pick[p.cust]))


def _estimate_lambda(p: _Problem, rhs: np.ndarray, seed: int) -> np.ndarray:
    """Multipliers near the LP's: the LP over a random sample of ``_SAMPLE_CUSTOMERS`` customers
    (the resources scaled to it), refined on samples ten times larger (each a prefix of the same
    random order, solved by ``_lagrangian_lp`` from the previous estimate) up to a tenth of all.
    A direct LP grows superlinearly with its size (HiGHS: seconds at 2,000 customers x 11
    options, minutes at 14,000); the reduced LPs of the refinements stay small."""
    order = np.random.default_rng(seed).permutation(p.n)
    size = min(p.n, _SAMPLE_CUSTOMERS)
    sub = _subproblem(p, np.sort(order[:size]))
    lam = _solve_lp(sub, np.arange(len(sub.value)), np.arange(sub.n), rhs * (size / p.n)).lam
    size *= 10
    while size < p.n:
        sub = _subproblem(p, np.sort(order[:size]))
        lam = _lagrangian_lp(sub, rhs * (size / p.n), lam).lp.lam
        size *= 10
    return lam


# -- integer answers -----------------------------------------------------------------------------


def _fill(p: _Problem, chosen: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``chosen`` plus, in order of value, options of customers without one that still fit."""
    left = rhs - p.usage(chosen)
    eps = 1e-9 * (1 + np.abs(rhs))
    has = np.zeros(p.n, bool)
    has[p.cust[chosen]] = True
    budget_left = left[0] if p.has_budget else math.inf
    cap_left = np.full(len(p.channels), math.inf)
    cap_left[p.cap_codes] = left[1:] if p.has_budget else left
    ok = ~has[p.cust] & (cap_left[p.ch] >= 1 - 1e-9)
    if p.has_budget:
        ok &= p.cost <= budget_left + eps[0]
    cand = np.flatnonzero(ok)
    if not len(cand):
        return chosen
    order = cand[np.argsort(-p.value[cand], kind="stable")]
    return np.r_[chosen, _greedy_take(p, order, has, budget_left + (eps[0] if p.has_budget else 0), cap_left)]


def _greedy_take(
    p: _Problem, order: np.ndarray, has: np.ndarray, budget_left: float, cap_left: np.ndarray
) -> np.ndarray:
    """Walk ``order``; take a candidate when its customer has none yet and it fits. Stops as soon
    as nothing can fit any more (the budget below the cheapest, or every channel full)."""
    taken = []
    cost, ch, cust = p.cost[order].tolist(), p.ch[order].tolist(), p.cust[order].tolist()
    cap = cap_left.tolist()
    open_channels = sum(1 for k in set(ch) if cap[k] >= 1 - 1e-9)
    done = has.copy()
    min_cost = float(p.cost[order].min())
    for j, cj, hj, ij in zip(order.tolist(), cost, ch, cust, strict=True):
        if done[ij] or cj > budget_left or cap[hj] < 1 - 1e-9:
            continue
        taken.append(j)
        done[ij] = True
        budget_left -= cj
        cap[hj] -= 1
        if cap[hj] < 1 - 1e-9:
            open_channels -= 1
        if budget_left < min_cost or open_channels == 0:
            break
    return np.asarray(taken, dtype=np.int64)


def _round_lp(lp: _LP, cols: np.ndarray, p: _Problem) -> tuple[np.ndarray, int]:
    """The LP's whole choices, and how many customers it split (rounded down)."""
    if not len(cols):
        return cols, 0
    whole = lp.x > 1 - 1e-7
    part = (lp.x > 1e-7) & ~whole
    return cols[whole], int(len(np.unique(p.cust[cols[part]])))


def _repair(p: _Problem, chosen: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Drop the least valuable choices while a row is over its limit (solver tolerances only)."""
    chosen = chosen[np.argsort(-p.value[chosen], kind="stable")]
    while len(chosen) and (p.usage(chosen) > rhs * (1 + 1e-12) + 1e-12).any():
        chosen = chosen[:-1]
    return chosen


def _result(
    p: _Problem,
    candidates: Any,
    chosen: np.ndarray,
    *,
    lp_bound: float,
    lam: np.ndarray | None,
    gains: np.ndarray | None,
    method: str,
    status: str,
    optimal: bool,
    fractional: int,
    lp_candidates: int,
    rounds: int,
    t0: float,
) -> Assignment:
    rows = np.sort(p.rows[chosen])
    if isinstance(candidates, pd.DataFrame):
        frame = candidates.iloc[rows]
    else:
        frame = pd.DataFrame({k: np.asarray(v)[rows] for k, v in candidates.items()})
    value = float(p.value[chosen].sum())
    counts = np.bincount(p.ch[chosen], minlength=len(p.channels))
    labels = p.cap_codes.tolist()
    off = 1 if p.has_budget else 0

    def priced(vec: np.ndarray | None) -> tuple[float | None, dict[Hashable, float]]:
        if vec is None:
            return None, {}
        return (float(vec[0]) if p.has_budget else None), {
            p.channels[k]: float(vec[off + i]) for i, k in enumerate(labels)
        }

    b_price, c_prices = priced(lam)
    b_gain, c_gains = priced(gains)
    gap = max(lp_bound - value, 0.0) if math.isfinite(lp_bound) else math.nan
    return Assignment(
        rows=rows,
        chosen=frame,
        value=value,
        responders=float(p.resp[chosen].sum()),
        cost=float(p.cost[chosen].sum()),
        contacts={lab: int(counts[k]) for k, lab in enumerate(p.channels)},
        lp_bound=lp_bound,
        gap=gap,
        relative_gap=gap / lp_bound if lp_bound > 0 else 0.0,
        budget_price=b_price,
        capacity_prices=c_prices,
        budget_gain=b_gain,
        capacity_gains=c_gains,
        method=method,
        status=status,
        optimal=optimal,
        fractional=fractional,
        candidates=len(p.value),
        lp_candidates=lp_candidates,
        rounds=rounds,
        seconds=time.perf_counter() - t0,
        budget=float(p.rhs[0]) if p.has_budget else None,
        capacity={p.channels[k]: float(p.rhs[off + i]) for i, k in enumerate(labels)},
    )


# -- the solvers ---------------------------------------------------------------------------------


def _milp(p: _Problem, candidates: Any, gains: bool, t0: float) -> Assignment:
    cols, customers = np.arange(len(p.value)), np.arange(p.n)
    if not len(cols):
        lam = np.zeros(p.m)
        return _result(p, candidates, cols, lp_bound=0.0, lam=lam, gains=lam.copy() if gains else None,
                       method="milp", status="optimal (nothing worth taking)", optimal=True,
                       fractional=0, lp_candidates=0, rounds=0, t0=t0)  # fmt: skip
    lp = _solve_lp(p, cols, customers, p.rhs)
    a = _lp_matrix(p, cols, customers)
    b = np.r_[np.ones(p.n), p.rhs]
    res = optimize.milp(
        -p.value,
        integrality=np.ones(len(cols)),
        bounds=optimize.Bounds(0, 1),
        constraints=optimize.LinearConstraint(a, -np.inf, b),
        options={"mip_rel_gap": 1e-9},
    )
    if res.x is None:
        raise RuntimeError(f"the MILP failed: {res.message}")
    chosen = _repair(p, np.flatnonzero(res.x > 0.5), p.rhs)
    g = None
    if gains:
        g = np.zeros(p.m)
        for k in np.flatnonzero(lp.lam > 1e-12):
            up = p.rhs.copy()
            up[k] += 1
            g[k] = _solve_lp(p, cols, customers, up).value - lp.value
    return _result(
        p, candidates, chosen, lp_bound=lp.value, lam=lp.lam, gains=g, method="milp",
        status="optimal" if res.status == 0 else str(res.message), optimal=res.status == 0,
        fractional=int(len(np.unique(p.cust[(lp.x > 1e-7) & (lp.x < 1 - 1e-7)]))),
        lp_candidates=len(cols), rounds=1, t0=t0,
    )  # fmt: skip


def _lagrangian(p: _Problem, candidates: Any, gains: bool, seed: int, t0: float) -> Assignment:
    if p.n == 0 or p.m == 0:  # nothing to take, or nothing couples the customers: the best each
        chosen = p.group_argmax(p.value)[1] if p.n else np.zeros(0, np.int64)
        lam = np.zeros(p.m)
        return _result(p, candidates, chosen, lp_bound=float(p.value[chosen].sum()), lam=lam,
                       gains=lam.copy() if gains else None, method="lagrangian", status="optimal (unconstrained)",
                       optimal=True, fractional=0, lp_candidates=0, rounds=0, t0=t0)  # fmt: skip
    lam0 = _estimate_lambda(p, p.rhs, seed)
    sol = _lagrangian_lp(p, p.rhs, lam0)
    whole, fractional = _round_lp(sol.lp, sol.cols, p)
    chosen = np.r_[sol.fixed[sol.fixed >= 0], whole]
    chosen = _fill(p, _repair(p, chosen, p.rhs), p.rhs)
    g = None
    if gains:
        g = np.zeros(p.m)
        for k in np.flatnonzero(sol.lp.lam > 1e-12):
            up = p.rhs.copy()
            up[k] += 1
            more = _lagrangian_lp(p, up, sol.lp.lam, rel=1e-3)
            g[k] = more.value - sol.value if more.converged else math.nan
    status = "LP optimal, rounded" if sol.converged else f"LP not proven optimal after {sol.rounds} rounds"
    return _result(
        p, candidates, chosen, lp_bound=sol.bound, lam=sol.lp.lam, gains=g, method="lagrangian",
        status=status, optimal=False, fractional=fractional, lp_candidates=len(sol.cols),
        rounds=sol.rounds, t0=t0,
    )  # fmt: skip


def assign(
    candidates: pd.DataFrame | Mapping[str, ArrayLike],
    *,
    budget: float | None = None,
    capacity: Mapping[Hashable, float] | None = None,
    method: Literal["auto", "milp", "lagrangian"] = "auto",
    exact_limit: int = EXACT_LIMIT,
    gains: bool = True,
    seed: int = 0,
) -> Assignment:
    """The best set of options under a money budget, channel capacities and at most one option
    per customer (see the module docstring).

    ``candidates``: a DataFrame (or a mapping of equally long arrays) with the columns
    ``customer`` (any labels), ``value`` (the expected incremental value to maximise), ``cost``
    (money, >= 0), ``channel`` (any labels) and optionally ``responders`` (expected incremental
    responders, summed into the answer); further columns (action, option ids) come back in
    ``chosen``. ``budget``: the money limit (``None``: none). ``capacity``: contacts per channel
    label (channels not named are unlimited). ``method="auto"`` solves the MILP up to
    ``exact_limit`` candidates with a positive value and the lagrangian LP beyond; ``gains``
    re-solves the LP with each binding row raised by one unit. ``seed`` draws the sample of the
    lagrangian path's first estimate (the answer does not depend on it when the LP is proven).
    """
    t0 = time.perf_counter()
    if method not in ("auto", "milp", "lagrangian"):
        raise ValueError(f"method must be 'auto', 'milp' or 'lagrangian', not {method!r}")
    p = _prepare(candidates, budget, capacity)
    if method == "auto":
        method = "milp" if len(p.value) <= exact_limit else "lagrangian"
    if method == "milp":
        return _milp(_drop_dominated(p), candidates, gains, t0)
    return _lagrangian(p, candidates, gains, seed, t0)


def greedy(
    candidates: pd.DataFrame | Mapping[str, ArrayLike],
    *,
    budget: float | None = None,
    capacity: Mapping[Hashable, float] | None = None,
) -> Assignment:
    """The reference: each customer's best option by value, customers taken in order of that
    value while it fits what is left of the budget and its channel's capacity (a customer whose
    best option does not fit is skipped, the next is tried). No LP: ``lp_bound`` is NaN."""
    t0 = time.perf_counter()
    p = _prepare(candidates, budget, capacity)
    best = p.group_argmax(p.value)[1] if p.n else np.zeros(0, np.int64)
    order = best[np.argsort(-p.value[best], kind="stable")]
    cap_left = np.full(len(p.channels), math.inf)
    off = 1 if p.has_budget else 0
    cap_left[p.cap_codes] = p.rhs[off:]
    budget_left = p.rhs[0] * (1 + 1e-12) if p.has_budget else math.inf
    chosen = _greedy_take(p, order, np.zeros(p.n, bool), budget_left, cap_left) if len(order) else order
    return _result(p, candidates, chosen, lp_bound=math.nan, lam=None, gains=None, method="greedy",
                   status="greedy by value", optimal=False, fractional=0, lp_candidates=0, rounds=0,
                   t0=t0)  # fmt: skip
