"""The budget- and capacity-constrained assignment: equal to a brute-force optimum on small cases,
the large-scale (lagrangian) path within its reported gap of the exact MILP and its LP bound equal
to an independently built LP, shadow prices equal to the LP's finite differences, no limit ever
broken, never below the greedy, and the edges and input errors."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

import kundenwert.models.assign as assign_module
from kundenwert.models.assign import assign, greedy


def _case(n: int, k: int, seed: int, channels: int = 3, cost=(1.0, 10.0)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "customer": np.repeat(np.arange(n), k),
        "value": rng.normal(3, 3, n * k).round(3),
        "cost": rng.uniform(*cost, n * k).round(2),
        "channel": rng.integers(0, channels, n * k),
        "responders": rng.uniform(0, 0.2, n * k),
    }


def _brute(d: dict, budget: float | None, capacity: dict, n: int, k: int) -> float:
    v, c, ch = d["value"], d["cost"], d["channel"]
    best = 0.0
    for pick in itertools.product(range(k + 1), repeat=n):
        idx = [i * k + j - 1 for i, j in enumerate(pick) if j]
        if budget is not None and c[idx].sum() > budget + 1e-9:
            continue
        if any(np.sum(ch[idx] == lab) > cap for lab, cap in capacity.items()):
            continue
        best = max(best, float(v[idx].sum()))
    return best


def _reference_lp(d: dict, budget: float | None, capacity: dict) -> tuple[float, np.ndarray]:
    """The LP relaxation built densely from the raw rows (no pruning): (value, duals of the
    budget row, if any, then the capacity rows in ``capacity`` order)."""
    cust, v, c, ch = (np.asarray(d[x]) for x in ("customer", "value", "cost", "channel"))
    ids = np.unique(cust)
    rows = [(cust == i).astype(float) for i in ids]
    rhs = [1.0] * len(ids)
    if budget is not None:
        rows.append(c.astype(float))
        rhs.append(budget)
    for lab, cap in capacity.items():
        rows.append((ch == lab).astype(float))
        rhs.append(cap)
    res = optimize.linprog(-v, A_ub=np.array(rows), b_ub=np.array(rhs), bounds=(0, 1), method="highs")
    assert res.status == 0
    return -res.fun, -res.ineqlin.marginals[len(ids) :]


def _assert_feasible(a, d: dict, budget: float | None, capacity: dict) -> None:
    cust, c, ch, v = (np.asarray(d[x]) for x in ("customer", "cost", "channel", "value"))
    rows = a.rows
    assert len(np.unique(cust[rows])) == len(rows), "two options for one customer"
    assert (v[rows] > 0).all()
    if budget is not None:
        assert c[rows].sum() <= budget * (1 + 1e-12) + 1e-9
    for lab, cap in capacity.items():
        assert np.sum(ch[rows] == lab) <= cap
        assert a.contacts.get(lab, 0) == np.sum(ch[rows] == lab)
    assert a.value == pytest.approx(v[rows].sum())
    assert a.cost == pytest.approx(c[rows].sum())
    assert a.responders == pytest.approx(np.asarray(d["responders"])[rows].sum())


@pytest.fixture
def tiny_samples(monkeypatch):
    """The lagrangian path with a first sample of 15 customers, so that even a test-sized problem
    goes through the sample LP, its refinements and the check-and-resolve loop."""
    monkeypatch.setattr(assign_module, "_SAMPLE_CUSTOMERS", 15)


# -- optimality ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_milp_equals_brute_force(seed):
    d = _case(6, 3, seed)
    budget, capacity = 14.0, {0: 1, 1: 2}
    a = assign(d, budget=budget, capacity=capacity)
    assert a.method == "milp" and a.optimal
    assert a.value == pytest.approx(_brute(d, budget, capacity, 6, 3), abs=1e-9)
    assert a.lp_bound >= a.value - 1e-9
    assert a.gap == pytest.approx(a.lp_bound - a.value, abs=1e-9)
    _assert_feasible(a, d, budget, capacity)


@pytest.mark.parametrize("seed", range(4))
def test_lagrangian_on_tiny_cases_within_its_gap_of_brute_force(seed, tiny_samples):
    d = _case(6, 3, seed)
    budget, capacity = 14.0, {0: 1, 1: 2}
    best = _brute(d, budget, capacity, 6, 3)
    a = assign(d, budget=budget, capacity=capacity, method="lagrangian")
    _assert_feasible(a, d, budget, capacity)
    assert a.value <= best + 1e-9
    assert a.lp_bound >= best - 1e-9
    assert a.lp_bound == pytest.approx(_reference_lp(d, budget, capacity)[0], rel=1e-7)


@pytest.mark.parametrize("seed", range(3))
def test_lagrangian_equals_milp_within_reported_gap(seed, tiny_samples):
    d = _case(400, 6, seed, channels=4)
    budget, capacity = 500.0, {0: 40, 1: 30, 3: 60}
    exact = assign(d, budget=budget, capacity=capacity, method="milp")
    large = assign(d, budget=budget, capacity=capacity, method="lagrangian")
    assert large.status == "LP optimal, rounded"
    lp_value, duals = _reference_lp(d, budget, capacity)
    assert exact.lp_bound == pytest.approx(lp_value, rel=1e-8)
    assert large.lp_bound == pytest.approx(lp_value, rel=1e-7)
    assert large.value <= exact.value + 1e-9
    assert exact.value <= large.value + large.gap + 1e-6
    assert large.fractional <= 1 + len(capacity)
    # the gap is what rounding at most m customers can cost: small against the total
    assert large.relative_gap < 0.01
    _assert_feasible(large, d, budget, capacity)
    _assert_feasible(exact, d, budget, capacity)


def test_lagrangian_path_converges_from_a_poor_first_estimate(monkeypatch):
    """A first sample of 3 customers misjudges the prices; the check against every candidate
    still ends at the LP optimum."""
    monkeypatch.setattr(assign_module, "_SAMPLE_CUSTOMERS", 3)
    d = _case(300, 5, 7, channels=3)
    budget, capacity = 300.0, {0: 25, 2: 40}
    a = assign(d, budget=budget, capacity=capacity, method="lagrangian")
    assert a.status == "LP optimal, rounded"
    assert a.lp_bound == pytest.approx(_reference_lp(d, budget, capacity)[0], rel=1e-7)
    _assert_feasible(a, d, budget, capacity)


# -- shadow prices -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["milp", "lagrangian"])
@pytest.mark.parametrize("seed", [0, 1])
def test_shadow_prices_are_the_lp_finite_differences(method, seed, tiny_samples):
    # many customers with costs large against one money unit: the +1 steps stay in the basis
    d = _case(300, 4, seed, channels=3, cost=(20.0, 100.0))
    budget, capacity = 2500.0, {0: 8, 1: 12}
    a = assign(d, budget=budget, capacity=capacity, method=method)
    base, duals = _reference_lp(d, budget, capacity)
    assert a.budget_price > 0 and all(p > 0 for p in a.capacity_prices.values())
    # the budget: the LP value rises by the price for a small step either way (a unique dual),
    # and by the price for one more money unit
    h = 1e-3
    up = _reference_lp(d, budget + h, capacity)[0]
    down = _reference_lp(d, budget - h, capacity)[0]
    assert (up - base) / h == pytest.approx(a.budget_price, rel=1e-4)
    assert (base - down) / h == pytest.approx(a.budget_price, rel=1e-4)
    plus_one = _reference_lp(d, budget + 1, capacity)[0] - base
    assert plus_one == pytest.approx(a.budget_price, rel=1e-6)
    assert a.budget_gain == pytest.approx(plus_one, rel=1e-6, abs=1e-7)
    # a capacity: one more contact gains exactly the reported gain, and the price is a
    # supergradient of the concave LP value (gain of +1 <= price <= loss of -1)
    for lab, cap in capacity.items():
        more = _reference_lp(d, budget, {**capacity, lab: cap + 1})[0] - base
        less = base - _reference_lp(d, budget, {**capacity, lab: cap - 1})[0]
        assert a.capacity_gains[lab] == pytest.approx(more, rel=1e-6, abs=1e-7)
        assert more - 1e-7 <= a.capacity_prices[lab] <= less + 1e-7


def test_slack_constraints_have_price_zero():
    d = _case(40, 3, 3)
    a = assign(d, budget=1e6, capacity={0: 10_000, "fax": 5})
    assert a.budget_price == 0 and a.budget_gain == 0
    assert a.capacity_prices == {0: 0.0, "fax": 0.0}
    # nothing binds: every customer takes its best positive option
    v = d["value"].reshape(40, 3)
    assert a.value == pytest.approx(np.maximum(v.max(axis=1), 0).sum())


# -- feasibility and the greedy reference --------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_never_below_greedy_and_never_over_a_limit(seed, tiny_samples):
    d = _case(120, 5, seed, channels=3)
    budget, capacity = 150.0, {0: 12, 2: 20}
    g = greedy(d, budget=budget, capacity=capacity)
    _assert_feasible(g, d, budget, capacity)
    for method in ("milp", "lagrangian"):
        a = assign(d, budget=budget, capacity=capacity, method=method)
        _assert_feasible(a, d, budget, capacity)
        assert a.value >= g.value - 1e-9


def test_greedy_takes_customers_by_their_best_value():
    d = {
        "customer": [1, 1, 2, 3],
        "value": [5.0, 9.0, 7.0, 1.0],
        "cost": [1.0, 6.0, 5.0, 1.0],
        "channel": ["email", "call", "email", "email"],
    }
    g = greedy(d, budget=6.0)
    assert g.rows.tolist() == [1]  # customer 1's best (9, cost 6) fills the budget
    a = assign(d, budget=6.0)
    assert a.rows.tolist() == [0, 2]  # 5 + 7 = 12 > 9
    assert a.value == 12.0 and a.optimal


# -- edges ---------------------------------------------------------------------------------------


def test_no_budget_only_capacities():
    d = _case(50, 3, 4)
    a = assign(d, capacity={0: 5, 1: 5, 2: 5})
    assert a.budget_price is None and a.budget is None
    assert sum(a.contacts.values()) <= 15
    _assert_feasible(a, d, None, {0: 5, 1: 5, 2: 5})


def test_budget_zero_takes_only_free_options():
    d = {
        "customer": [0, 0, 1, 2],
        "value": [4.0, 2.0, 3.0, 1.0],
        "cost": [2.0, 0.0, 1.0, 0.0],
        "channel": ["sms", "email", "sms", "email"],
    }
    for method in ("milp", "lagrangian"):
        a = assign(d, budget=0.0, method=method)
        assert a.rows.tolist() == [1, 3] and a.cost == 0
        # one money unit buys customer 1's option (value 3); the dual at a budget of 0 is any
        # price >= 3 (degenerate), the gain says what +1 buys
        assert a.budget_gain == pytest.approx(3.0)
        assert a.budget_price >= 3.0 - 1e-9


def test_nothing_positive_takes_nothing():
    d = {"customer": [0, 1], "value": [-1.0, 0.0], "cost": [1.0, 1.0], "channel": ["a", "b"]}
    for method in ("milp", "lagrangian"):
        a = assign(d, budget=10.0, capacity={"a": 1}, method=method)
        assert a.customers == 0 and a.value == 0 and a.lp_bound == 0
        assert a.contacts == {"a": 0, "b": 0} and a.chosen.empty
    assert greedy(d, budget=10.0).customers == 0


def test_channel_with_capacity_zero_is_not_used(tiny_samples):
    d = _case(60, 4, 5)
    for method in ("milp", "lagrangian"):
        a = assign(d, budget=100.0, capacity={1: 0}, method=method)
        assert a.contacts[1] == 0
        assert a.capacity_prices[1] >= 0
        _assert_feasible(a, d, 100.0, {1: 0})


def test_dataframe_with_labels_comes_back_with_its_columns():
    df = pd.DataFrame(
        {
            "customer": ["c2", "c1", "c2", "c3", "c1"],
            "action": ["coupon", "news", "news", "coupon", "coupon"],
            "channel": ["letter", "email", "email", "letter", "letter"],
            "value": [6.0, 1.0, 2.0, 5.0, 4.0],
            "cost": [3.0, 0.1, 0.1, 3.0, 3.0],
            "responders": [0.1, 0.01, 0.02, 0.09, 0.07],
        },
        index=[10, 11, 12, 13, 14],
    )
    a = assign(df, budget=6.5, capacity={"letter": 1})
    # one letter: c3's coupon (5) with both e-mails (2 + 1) beats c2's coupon (6) with c1's e-mail
    assert a.rows.tolist() == [1, 2, 3]
    assert a.chosen.index.tolist() == [11, 12, 13]
    assert a.chosen["action"].tolist() == ["news", "news", "coupon"]
    assert a.contacts == {"letter": 1, "email": 2}
    assert a.value == 8.0 and a.cost == pytest.approx(3.2) and a.responders == pytest.approx(0.12)


def test_auto_switches_to_the_lagrangian_path_beyond_the_limit(tiny_samples):
    d = _case(100, 4, 2)
    a = assign(d, budget=80.0, capacity={0: 10}, exact_limit=50)
    assert a.method == "lagrangian" and not a.optimal
    b = assign(d, budget=80.0, capacity={0: 10})
    assert b.method == "milp" and b.optimal
    assert a.value <= b.value + 1e-9 <= a.lp_bound + 1e-6


# -- errors --------------------------------------------------------------------------------------


def _good() -> dict[str, list]:
    return {"customer": [0, 1], "value": [1.0, 2.0], "cost": [1.0, 1.0], "channel": ["a", "b"]}


@pytest.mark.parametrize(
    ("change", "kwargs", "message"),
    [
        ({"cost": [1.0, -2.0]}, {}, r"'cost' is negative at row 1 \(-2\)"),
        (
            {"value": [float("nan"), 2.0]},
            {},
            r"'value' has 1 missing or infinite value\(s\), the first at row 0",
        ),
        ({"value": [1.0, float("inf")]}, {}, r"'value' has 1 missing or infinite"),
        ({"cost": [1.0]}, {}, r"differ in length \(customer: 2, value: 2, cost: 1, channel: 2\)"),
        ({"channel": ["a", None]}, {}, r"'channel' is missing at row 1"),
        ({"customer": [None, 1]}, {}, r"'customer' is missing at row 0"),
        ({"value": ["x", "y"]}, {}, r"'value' must be numeric"),
        ({}, {"budget": -1.0}, r"budget must be a finite number >= 0"),
        ({}, {"budget": float("nan")}, r"budget must be a finite number >= 0"),
        ({}, {"capacity": {"a": -1}}, r"capacity of channel 'a' must be a finite number >= 0"),
        ({}, {"method": "simplex"}, r"method must be 'auto', 'milp' or 'lagrangian'"),
    ],
)
def test_bad_input_is_named(change, kwargs, message):
    with pytest.raises(ValueError, match=message):
        assign({**_good(), **change}, **kwargs)


def test_missing_column_is_named():
    d = _good()
    del d["cost"]
    with pytest.raises(ValueError, match="lack column.s. cost"):
        assign(d)
    with pytest.raises(TypeError, match="DataFrame or a mapping"):
        assign([1, 2, 3])  # type: ignore[arg-type]
