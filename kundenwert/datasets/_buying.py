"""Steps 2-4 and 8 of the sample world: BG/NBD purchasing with silent dropout, complaints that
raise dropout, Gamma-Gamma spend split over purchase lines, and business offers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kundenwert.datasets import design as D
from kundenwert.datasets._common import (
    SALES_CHANNELS,
    _choice,
    _Clock,
    _group_starts,
    _ids,
    _index_of,
    _logit,
    _sigmoid,
)
from kundenwert.datasets._people import People


@dataclass(frozen=True)
class Orders:
    """Per customer: the true purchasing parameters and fate; per order (``o_*``): owner, time (days),
    whether it led to a complaint, and its value."""

    lam: np.ndarray
    p_drop: np.ndarray
    p_after: np.ndarray
    kappa: np.ndarray
    gg: dict[str, np.ndarray]
    nu: np.ndarray
    lines_mu: np.ndarray
    buyer: np.ndarray
    t0: np.ndarray
    n_rep: np.ndarray
    alive_end: np.ndarray
    death_at: np.ndarray
    complained_at: np.ndarray
    o_owner: np.ndarray
    o_time: np.ndarray
    o_complaint: np.ndarray
    o_value: np.ndarray


def draw_orders(rng: np.random.Generator, p: People, span: float) -> Orders:
    """Purchasing parameters, each buyer's first and repeat orders, dropout and the first complaint."""
    ctype_i, consumer, income, life_i, price_sens, created = (
        p.ctype_i,
        p.consumer,
        p.income,
        p.life_i,
        p.price_sens,
        p.created,
    )
    n = len(ctype_i)
    idx = np.arange(n)
    par = {k: np.array([D.BGNBD[t][k] for t in D.CUSTOMER_TYPES])[ctype_i] for k in ("r", "alpha", "a", "b")}
    inc_rate = np.array([D.INCOME_RATE_MULT.get(x, 1.0) for x in D.INCOME_BANDS] + [1.0])
    inc_code = np.where(consumer, _index_of(income, D.INCOME_BANDS), 4)
    life_mult = np.where(consumer, np.array([D.LIFESTYLE_RATE_MULT[x] for x in D.LIFESTYLES])[life_i], 1.0)
    lam = rng.gamma(par["r"], 1.0 / par["alpha"]) * inc_rate[inc_code] * life_mult
    p0 = rng.beta(par["a"], par["b"])
    p_drop = np.clip(
        _sigmoid(
            _logit(np.clip(p0, 1e-6, 1 - 1e-6)) + D.PRICE_SENSITIVITY_DROPOUT_LOGIT * (price_sens - 0.5)
        ),
        1e-4,
        0.995,
    )
    p_after = 1.0 - (1.0 - p_drop) * D.COMPLAINT_KEEP
    kappa = np.array([D.COMPLAINT_PROB_PER_ORDER[t] for t in D.CUSTOMER_TYPES])[ctype_i]
    gg = {k: np.array([D.GAMMA_GAMMA[t][k] for t in D.CUSTOMER_TYPES])[ctype_i] for k in ("p", "q", "gamma")}
    inc_spend = np.array([D.INCOME_SPEND_MULT.get(x, 1.0) for x in D.INCOME_BANDS] + [1.0])
    nu = rng.gamma(gg["q"], 1.0 / gg["gamma"]) / inc_spend[inc_code]
    lines_mu = np.array([D.LINES_EXTRA_MEAN[t] for t in D.CUSTOMER_TYPES])[ctype_i]

    buyer = rng.random(n) < np.array([D.BUYER_SHARE[t] for t in D.CUSTOMER_TYPES])[ctype_i]
    delay = np.where(rng.random(n) < 0.6, rng.exponential(1.0, n), rng.exponential(60.0, n))
    t0 = created + delay
    buyer &= t0 < span
    t0 = np.where(buyer, t0, np.nan)
    window = np.where(buyer, span - t0, 0.0)
    d1 = rng.geometric(p_drop)
    k1 = rng.geometric(kappa)
    d2 = rng.geometric(p_after)
    g_death = np.where(d1 < k1, d1, k1 - 1 + d2)  # repeat order after which the customer leaves
    m_arrivals = np.where(buyer, rng.poisson(lam * window), 0)
    n_rep = np.minimum(g_death, m_arrivals)
    alive_end = buyer & (g_death > m_arrivals)
    complaint_rank = np.where(buyer & (d1 >= k1) & (k1 <= n_rep), k1, 0)  # 0: no complaint

    # Repeat order times: the first n_rep of m_arrivals uniform order statistics on [t0, end].
    total = int(m_arrivals.sum())
    owner = np.repeat(idx, m_arrivals)
    u = rng.random(total)
    order = np.argsort(owner + u, kind="stable")
    owner, u = owner[order], u[order]
    rank = np.arange(total) - np.repeat(_group_starts(m_arrivals), m_arrivals) + 1
    keep = rank <= n_rep[owner]
    rep_owner, rep_rank = owner[keep], rank[keep]
    rep_time = t0[rep_owner] + u[keep] * window[rep_owner]
    del owner, u, order, rank, keep  # the largest temporaries of the simulation
    death_at = np.full(n, np.nan)
    last = (rep_rank == n_rep[rep_owner]) & ~alive_end[rep_owner]
    death_at[rep_owner[last]] = rep_time[last]
    complained_at = np.full(n, np.nan)
    first_c = (rep_rank == complaint_rank[rep_owner]) & (complaint_rank[rep_owner] > 0)
    complained_at[rep_owner[first_c]] = rep_time[first_c]
    # Further complaints after the first one (no further effect on dropout).
    later_c = (
        (rep_rank > complaint_rank[rep_owner])
        & (complaint_rank[rep_owner] > 0)
        & (rng.random(len(rep_rank)) < kappa[rep_owner])
    )

    # Orders: first orders plus repeats.
    buyers = idx[buyer]
    o_owner = np.concatenate([buyers, rep_owner])
    o_time = np.concatenate([t0[buyers], rep_time])
    o_complaint = np.concatenate([np.zeros(len(buyers), bool), first_c | later_c])
    o_value = rng.gamma(gg["p"][o_owner], 1.0 / nu[o_owner])
    return Orders(
        lam=lam,
        p_drop=p_drop,
        p_after=p_after,
        kappa=kappa,
        gg=gg,
        nu=nu,
        lines_mu=lines_mu,
        buyer=buyer,
        t0=t0,
        n_rep=n_rep,
        alive_end=alive_end,
        death_at=death_at,
        complained_at=complained_at,
        o_owner=o_owner,
        o_time=o_time,
        o_complaint=o_complaint,
        o_value=o_value,
    )


def _purchases(
    rng, clock, customer_ids, o_owner, o_time, o_value, lines_mu, pi, consumer, price_sens, ag
) -> pd.DataFrame:
    """Order lines (category from the customer's shares, value split over lines) plus returns."""
    n_orders = len(o_owner)
    n_lines = 1 + rng.poisson(lines_mu[o_owner])
    l_order = np.repeat(np.arange(n_orders), n_lines)
    l_owner = o_owner[l_order]
    w = rng.gamma(2.0, 1.0, size=len(l_order))
    w /= np.bincount(l_order, weights=w, minlength=n_orders)[l_order]
    amount = np.maximum(np.round(o_value[l_order] * w, 2), 0.5)
    cum = np.cumsum(pi[l_owner], axis=1)
    cat_i = (rng.random(len(l_order))[:, None] > cum).sum(axis=1).clip(0, len(D.CATEGORIES) - 1)
    del cum
    products_per_cat = 30
    prod_j = rng.integers(0, products_per_cat, len(l_order))
    product_ids = _product_ids()
    l_product = cat_i * products_per_cat + prod_j  # code into _product_ids()
    qty = 1 + rng.poisson(np.where(consumer[l_owner], 0.3, 2.0))
    disc_p = np.clip(0.10 + 0.4 * price_sens[l_owner], 0, 0.9)
    has_disc = rng.random(len(l_order)) < disc_p
    discount = np.where(has_disc, np.round(amount * rng.uniform(0.05, 0.25, len(l_order)), 2), np.nan)
    margin_rate = np.array([D.CATEGORY_MARGIN_RATE[c] for c in D.CATEGORIES])[cat_i]
    margin = np.round(amount * margin_rate * rng.uniform(0.8, 1.2, len(l_order)), 2)
    web_share = np.array([0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.4])[ag]
    o_channel = np.where(  # codes into SALES_CHANNELS
        consumer[o_owner],
        np.where(rng.random(n_orders) < web_share[o_owner], 0, 1),
        np.asarray([2, 3, 0])[rng.choice(3, size=n_orders, p=(0.5, 0.2, 0.3))],
    )
    l_channel = o_channel[l_order]
    l_time = o_time[l_order]
    ret = rng.random(len(l_order)) < np.array([D.CATEGORY_RETURN_RATE[c] for c in D.CATEGORIES])[cat_i]
    r_time = l_time[ret] + rng.uniform(2.0, 20.0, int(ret.sum()))
    ok = r_time < clock.span
    r_sel = np.flatnonzero(ret)[ok]
    p_owner = np.concatenate([l_owner, l_owner[r_sel]])
    p_time = np.concatenate([l_time, r_time[ok]])
    purchases = pd.DataFrame(
        {
            "customer_id": customer_ids[p_owner],
            "purchased_at": clock.ts(p_time),
            "product_id": pd.Categorical.from_codes(
                np.concatenate([l_product, l_product[r_sel]]), product_ids
            ),
            "category": pd.Categorical.from_codes(np.concatenate([cat_i, cat_i[r_sel]]), D.CATEGORIES),
            "quantity": np.concatenate([qty, qty[r_sel]]),
            "amount": np.concatenate([amount, -amount[r_sel]]),
            "margin": np.concatenate([margin, -margin[r_sel]]),
            "discount": np.concatenate([discount, np.full(len(r_sel), np.nan)]),
            "sales_channel": pd.Categorical.from_codes(
                np.concatenate([l_channel, l_channel[r_sel]]), SALES_CHANNELS
            ),
        }
    )
    purchases = purchases.iloc[np.argsort(p_time, kind="stable")].reset_index(drop=True)
    purchases.insert(0, "purchase_id", _ids("P", len(purchases), 10))
    return purchases


def complaints_table(
    rng: np.random.Generator, clock: _Clock, customer_ids: np.ndarray, o: Orders
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Complaints opened after the orders that led to one: (table, owner, opening time in days)."""
    span = clock.span
    o_time, o_owner, o_complaint = o.o_time, o.o_owner, o.o_complaint
    c_orders = np.flatnonzero(o_complaint)
    c_open = o_time[c_orders] + rng.exponential(2.0, len(c_orders))
    ok = c_open < span
    c_orders, c_open = c_orders[ok], c_open[ok]
    c_close = c_open + rng.exponential(12.0, len(c_orders))
    c_close = np.where(c_close < span, c_close, np.nan)
    c_owner = o_owner[c_orders]
    table = pd.DataFrame(
        {
            "complaint_id": _ids("R", len(c_orders), 8),
            "customer_id": customer_ids[c_owner],
            "opened_at": clock.ts(c_open),
            "closed_at": clock.ts(c_close),
            "category": _choice(
                rng, ("delivery", "quality", "billing", "service"), (0.35, 0.3, 0.15, 0.2), len(c_orders)
            ),
            "severity": rng.choice(np.arange(1, 6), size=len(c_orders), p=(0.25, 0.3, 0.25, 0.15, 0.05)),
        }
    )
    return table, c_owner, c_open


def _offers(
    rng, clock, customer_ids, consumer, created, death_at, alive_end, o_owner, o_time, o_value, nu, gg
) -> pd.DataFrame:
    span = clock.span
    b2b = ~consumer
    # Won offers precede half of the business orders.
    won = b2b[o_owner] & (rng.random(len(o_owner)) < 0.5)
    w_owner = o_owner[won]
    w_close = o_time[won]
    w_created = np.maximum(created[w_owner], w_close - rng.exponential(10.0, len(w_owner)))
    w_amount = np.round(o_value[won] * rng.uniform(1.0, 1.15, len(w_owner)), 2)
    # Lost offers while the customer is around.
    until = np.where(np.isnan(death_at), span, death_at)
    n_lost = np.where(b2b, rng.poisson(np.maximum(until - created, 0) / 150.0), 0)
    l_owner = np.repeat(np.arange(len(created)), n_lost)
    l_created = created[l_owner] + rng.random(len(l_owner)) * (until[l_owner] - created[l_owner])
    l_close = l_created + rng.exponential(20.0, len(l_owner))
    l_status = np.where(l_close < span, "lost", "open")
    l_close = np.where(l_close < span, l_close, np.nan)
    l_amount = np.round(rng.gamma(gg["p"][l_owner], 1.0 / nu[l_owner]), 2)
    # Open offers at the end (pending revenue), mostly for customers still around.
    opens = b2b & alive_end & (rng.random(len(created)) < 0.35)
    op_owner = np.flatnonzero(opens)
    op_created = np.maximum(created[op_owner], span - rng.uniform(0, 45, len(op_owner)))
    op_amount = np.round(rng.gamma(gg["p"][op_owner], 1.0 / nu[op_owner]) * 1.5, 2)
    owner = np.concatenate([w_owner, l_owner, op_owner])
    t_created = np.concatenate([w_created, l_created, op_created])
    t_closed = np.concatenate([w_close, l_close, np.full(len(op_owner), np.nan)])
    status = np.concatenate(
        [
            np.full(len(w_owner), "won", dtype=object),
            l_status.astype(object),
            np.full(len(op_owner), "open", dtype=object),
        ]
    )
    amount = np.concatenate([w_amount, l_amount, op_amount])
    reason = np.where(
        status == "lost",
        _choice(
            rng,
            ("price", "competitor", "timing", "budget", "no_need"),
            (0.35, 0.25, 0.15, 0.15, 0.1),
            len(status),
        ),
        "",
    )
    order = np.argsort(t_created, kind="stable")
    return pd.DataFrame(
        {
            "offer_id": _ids("O", len(owner), 8),
            "customer_id": customer_ids[owner[order]],
            "created_at": clock.ts(t_created[order]),
            "amount": amount[order],
            "status": status[order],
            "closed_at": clock.ts(t_closed[order]),
            "lost_reason": reason[order],
        }
    )


def _product_ids() -> list[str]:
    return [f"SKU-{c[:4].upper()}-{j + 1:03d}" for c in D.CATEGORIES for j in range(30)]
