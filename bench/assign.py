"""Benchmark: the budget- and capacity-constrained assignment (``kundenwert.models.assign``) at the
service's scale, 1,000,000 customers x 26 options (action x channel), with a binding money
budget and binding capacities on four of the five channels, against the reference measured in
the same run on the same rows: the greedy by value (each customer's best option, customers taken
by that value while it fits). Reports time, value, incremental responders, cost, the gap to the
LP bound (the most any assignment could reach), the shadow prices and what one more unit buys.

    OMP_NUM_THREADS=2 python bench/assign.py [--customers 1000000] [--options 26] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import peak_rss_gb, table  # noqa: E402

CHANNELS = ["email", "push", "sms", "letter", "call"]
CONTACT_COST = np.array([0.01, 0.005, 0.08, 0.90, 4.00])  # money per contact, by channel


def candidates(n: int, k: int, seed: int) -> dict[str, np.ndarray]:
    """``k`` options per customer: an action (incentive 0, 5 or 10 money units, redeemed by the
    responders) through a channel; uplift and margin vary by customer, action and channel."""
    rng = np.random.default_rng(seed)
    cust = np.repeat(np.arange(n, dtype=np.int64), k)
    ch = np.tile(np.arange(k) % len(CHANNELS), n).astype(np.int8)
    incentive = np.tile(np.array([0.0, 5.0, 10.0])[np.arange(k) % 3], n)
    margin = np.repeat(rng.lognormal(3.0, 0.8, n), k)  # money per incremental response
    base = np.repeat(rng.beta(1.2, 30, n), k)  # customer's responsiveness
    lift = (
        base * rng.lognormal(0, 0.5, n * k) * np.array([0.6, 0.5, 1.0, 1.6, 3.0])[ch] * (1 + incentive / 10)
    )
    uplift = np.minimum(lift, 0.9)
    cost = CONTACT_COST[ch] + incentive * np.minimum(4 * uplift, 1.0)
    value = uplift * margin - cost
    return {"customer": cust, "value": value, "cost": cost, "channel": ch, "responders": uplift}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--options", type=int, default=26)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-gains", action="store_true", help="skip the +1 re-solves")
    ap.add_argument("--log", action="store_true", help="debug log of the solver on stderr")
    args = ap.parse_args()
    if args.log:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(relativeCreated)9.0f ms %(message)s")
    from kundenwert.models.assign import assign, greedy

    t0 = time.perf_counter()
    d = candidates(args.customers, args.options, args.seed)
    t_gen = time.perf_counter() - t0
    n = args.customers
    # limits: the budget about a fifth of what every customer's best option would cost; the
    # paid channels capped below what the budget alone would send through them
    budget = 0.4 * n
    capacity = {0: 0.30 * n, 2: 0.04 * n, 3: 0.02 * n, 4: 0.003 * n}
    names = {k: CHANNELS[k] for k in range(len(CHANNELS))}
    print(
        f"{n:,} customers x {args.options} options = {len(d['value']):,} candidates "
        f"({np.mean(d['value'] > 0):.1%} with a positive value), generated in {t_gen:.1f} s; "
        f"budget {budget:,.0f}, capacity " + ", ".join(f"{names[k]} {v:,.0f}" for k, v in capacity.items()),
        flush=True,
    )
    g = greedy(d, budget=budget, capacity=capacity)
    print(f"greedy done in {g.seconds:.1f} s", flush=True)
    # one run; with gains the +1 re-solves are part of its time (the debug log splits it)
    a = assign(d, budget=budget, capacity=capacity, method="lagrangian", gains=not args.no_gains)
    print(f"lagrangian done in {a.seconds:.1f} s", flush=True)
    b = None if args.no_gains else a

    def row(name: str, r, secs: float) -> list[object]:
        gap = "n/a" if r.method == "greedy" else f"{r.gap:,.1f} ({r.relative_gap:.2e})"
        return [
            name,
            f"{secs:.1f}",
            f"{r.value:,.0f}",
            f"{r.responders:,.0f}",
            f"{r.cost:,.0f}",
            f"{r.customers:,}",
            ", ".join(f"{names[k]} {r.contacts.get(k, 0):,}" for k in capacity),
            gap,
            f"{(a.lp_bound - r.value) / a.lp_bound:.3%}",
        ]

    header = ["method", "seconds", "value", "responders", "cost", "customers", "capped contacts",
              "gap to own LP bound", "below LP bound"]  # fmt: skip
    rows = [row("greedy by value (reference)", g, g.seconds), row("lagrangian LP + rounding", a, a.seconds)]
    print()
    print(table(header, rows))
    print()
    print(
        f"LP bound {a.lp_bound:,.1f}; rounds {a.rounds}; reduced LP columns {a.lp_candidates:,} of "
        f"{a.candidates:,} candidates after pruning; fractional customers rounded down {a.fractional}; "
        f"status: {a.status}; optimised / greedy = {a.value / g.value:.4f}"
    )
    prices = [
        ["budget (per money unit)", f"{a.budget_price:.4f}", "" if b is None else f"{b.budget_gain:.4f}"]
    ]
    for k in capacity:
        gain = "" if b is None else f"{b.capacity_gains[k]:.4f}"
        prices.append([f"{names[k]} capacity (per contact)", f"{a.capacity_prices[k]:.4f}", gain])
    print()
    print(table(["constraint", "shadow price (LP dual)", "LP gain of +1 unit (re-solved)"], prices))
    print(f"peak RSS {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
