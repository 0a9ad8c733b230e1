"""A sample CRM world whose true parameters are known.

``kundenwert sample DIR --customers N --seed S`` writes the contract's tables plus ``truth/``.
Every model of kundenwert can be checked against the truth of this world.

The generative story
--------------------
Time runs from ``start`` to ``end`` (default 2023-01-01 to 2025-12-31), measured in days.

1. **Customers.** Each is a consumer (82%), business (13%) or retailer (5%) and registers at a
   uniform time (``created_at``). Consumers get a birth year (age roughly normal, 18-90; 3% unknown),
   gender, household size, income band, a lifestyle segment and a preferred channel that depends on
   age; business customers and retailers get a company size. Everyone gets a region with a German
   postal code (leading zeros kept) and a price sensitivity in [0, 1].
2. **Purchasing (BG/NBD).** A share of customers buys (85-95% by type); their first order follows
   registration after a short or a long delay. While alive, a customer orders as a Poisson process
   with rate ``lambda ~ Gamma(r, alpha)`` per day (by type) times multipliers for income band and
   lifestyle. After each repeat order the customer drops out with probability ``p``: ``p0 ~ Beta(a, b)``
   (by type), shifted on the logit scale by price sensitivity. Dropout is silent: nothing in the
   data says who has left.
3. **Complaints raise dropout.** A repeat order leads to a complaint with probability ``kappa``
   (by type). From the first complaint on, ``1 - p`` shrinks to ``(1 - p) * 0.6``. Complaints have
   a category, a severity 1-5 and are closed after a while (some are still open at the end).
4. **Spend (Gamma-Gamma).** An order's value is ``Gamma(p_gg, nu)`` with ``nu ~ Gamma(q, gamma)`` per
   customer (by type), scaled by income band. An order has ``1 + Poisson(mu)`` lines; the value is
   split over them at random. Discounts (more often for price-sensitive customers) are already
   deducted from the net ``amount``; margin is a category rate with noise. Some lines are returned
   a few days later (a purchase row with negative amount), fashion most often.
5. **Categories.** Each line's category is drawn from the customer's own category shares:
   ``softmax(age-group pattern + lifestyle pattern + individual taste)``. The age-group pattern is
   the designed one in ``design.AGE_CATEGORY_LOGWEIGHT``; ``truth/age_group_category.csv`` holds
   the resulting expected share of lines per age group and category.
6. **Consents.** Per marketing channel (email, sms, phone, mail) a customer grants consent with a
   probability that is higher for the preferred channel, some time after registering; email needs
   double opt-in (88% confirm). Some withdraw later; 1.5% object to all direct marketing (channel
   ``*``); an unsubscribe in a campaign is recorded as a withdrawal.
7. **Campaigns.** Every month each channel runs a campaign with one action (cross-sell of a
   category, retention or win-back voucher, newsletter, service call, upsell). It selects at random
   among the customers with valid consent at that moment; 15% of the selected are held out as a
   control group (``is_control``, not contacted). Response (``responded`` or ``converted``) of a
   contacted customer has logit ``base(channel) + action + 1.2 [preferred channel] + age x channel
   + individual responsiveness + voucher x price sensitivity + cross-sell x category share``;
   without contact (control) only a small organic response happens. A customer who has silently
   left rarely responds. So response and uplift (treated minus control) are learnable.
   Conversions are recorded in the contact history; the purchase process is the BG/NBD process
   alone, so the BTYD truth stays exact.
8. **Inbound contacts and offers.** Customers contact the company (information requests, service,
   order status; a complaint brings a follow-up contact). Business customers and retailers get
   offers: won offers precede some orders, others are lost (price, competitor, timing, ...), and some
   are still open at the end (pending revenue).

``truth/customers.parquet`` holds per customer the true parameters and the true values at the end
date (alive, expected purchases and spend over 90 and 365 days, churn probability over 90 days,
category affinities, response probability per channel with and without contact);
``kundenwert.datasets.truth`` computes the same quantities at any earlier cutoff.
Everything is vectorised with numpy and deterministic for a seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from kundenwert.datasets import design as D
from kundenwert.datasets.truth import age_group_index, truth_at_end
from kundenwert.errors import ConfigurationError
from kundenwert.features.contract import OUTCOMES

DEFAULT_START = "2023-01-01"
DEFAULT_END = "2025-12-31"
_SECONDS_PER_DAY = 86_400.0
SALES_CHANNELS = ("web", "store", "field_sales", "phone")
CONTACT_CHANNELS = ("email", "sms", "phone", "mail", "web", "store", "field_sales")
TOPICS = ("information request", "service", "order status", "complaint")

REGIONS = (
    # region, share, postal code prefixes (two digits)
    ("Sachsen", 0.05, ("01", "02", "04", "08", "09")),
    ("Berlin", 0.045, ("10", "12", "13")),
    ("Brandenburg", 0.03, ("14", "15", "16")),
    ("Mecklenburg-Vorpommern", 0.02, ("17", "18", "19")),
    ("Hamburg", 0.022, ("20", "21", "22")),
    ("Schleswig-Holstein", 0.035, ("23", "24", "25")),
    ("Niedersachsen", 0.096, ("26", "27", "29", "30", "31", "37", "38", "49")),
    ("Bremen", 0.008, ("28",)),
    (
        "Nordrhein-Westfalen",
        0.215,
        (
            "32",
            "33",
            "40",
            "41",
            "42",
            "44",
            "45",
            "46",
            "47",
            "48",
            "50",
            "51",
            "52",
            "53",
            "57",
            "58",
            "59",
        ),
    ),
    ("Hessen", 0.076, ("34", "35", "36", "60", "61", "63", "64", "65")),
    ("Thueringen", 0.025, ("07", "98", "99")),
    ("Sachsen-Anhalt", 0.026, ("06", "39")),
    ("Rheinland-Pfalz", 0.049, ("54", "55", "56", "67")),
    ("Saarland", 0.012, ("66",)),
    (
        "Baden-Wuerttemberg",
        0.134,
        ("68", "69", "70", "71", "72", "73", "74", "75", "76", "77", "78", "79", "88", "89"),
    ),
    (
        "Bayern",
        0.157,
        ("80", "81", "82", "83", "84", "85", "86", "87", "90", "91", "92", "93", "94", "95", "96", "97"),
    ),
)


@dataclass
class World:
    """The generated tables (contract format, text-ready) plus the truth."""

    tables: dict[str, pd.DataFrame]
    truth: pd.DataFrame
    age_group_category: pd.DataFrame
    design: dict


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _choice(rng: np.random.Generator, options: tuple | list, probs, size: int) -> np.ndarray:
    probs = np.asarray(probs, dtype=float)
    return np.asarray(options, dtype=object)[rng.choice(len(options), size=size, p=probs / probs.sum())]


def _group_starts(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]])


class _Clock:
    """Days since ``start`` to timestamps (whole seconds, UTC)."""

    def __init__(self, start: pd.Timestamp, end: pd.Timestamp) -> None:
        self.start = start
        self.span = (end - start) / pd.Timedelta(days=1)
        self._start_s = np.datetime64(start.tz_localize(None), "s")

    def ts(self, days: np.ndarray) -> np.ndarray:
        """datetime64[s]; NaN days become NaT."""
        days = np.asarray(days, dtype="float64")
        secs = np.round(np.nan_to_num(days, nan=0.0) * _SECONDS_PER_DAY).astype("int64")
        out = self._start_s + secs.astype("timedelta64[s]")
        out[np.isnan(days)] = np.datetime64("NaT")
        return out


def generate_world(
    n_customers: int,
    seed: int,
    start: str | pd.Timestamp = DEFAULT_START,
    end: str | pd.Timestamp = DEFAULT_END,
) -> World:
    """Simulate the world (see the module docstring for the story)."""
    if n_customers < 1:
        raise ConfigurationError(f"--customers must be at least 1, not {n_customers}")
    start_ts = (
        pd.Timestamp(start).tz_localize("UTC") if pd.Timestamp(start).tz is None else pd.Timestamp(start)
    )
    end_ts = pd.Timestamp(end).tz_localize("UTC") if pd.Timestamp(end).tz is None else pd.Timestamp(end)
    if (end_ts - start_ts) < pd.Timedelta(days=90):
        raise ConfigurationError(
            f"--end must be at least 90 days after --start (got {start_ts:%Y-%m-%d} to {end_ts:%Y-%m-%d})"
        )
    rng = np.random.default_rng(seed)
    clock = _Clock(start_ts, end_ts)
    span = clock.span
    n = n_customers
    idx = np.arange(n)

    # ------------------------------------------------------------------ 1. customers and attributes
    ctype_i = rng.choice(3, size=n, p=D.TYPE_SHARE)
    ctype = np.asarray(D.CUSTOMER_TYPES, dtype=object)[ctype_i]
    consumer = ctype_i == 0
    created = rng.uniform(0.0, span - 14.0, size=n)
    age_at_end = np.clip(np.round(rng.normal(46, 16, size=n)), 18, 90)
    birth_year = np.where(consumer, end_ts.year - age_at_end, np.nan)
    birth_year[consumer & (rng.random(n) < 0.03)] = np.nan
    ag = age_group_index(birth_year, end_ts.year)  # 0..6, 6 = unknown
    gender = np.where(consumer, _choice(rng, ("f", "m", "d", ""), (0.49, 0.48, 0.01, 0.02), n), "")
    reg_i = rng.choice(len(REGIONS), size=n, p=np.array([r[1] for r in REGIONS]) / sum(r[1] for r in REGIONS))
    region = np.asarray([r[0] for r in REGIONS], dtype=object)[reg_i]
    prefix_pick = rng.random(n)
    postal = np.empty(n, dtype=object)
    for k, (_, _, prefixes) in enumerate(REGIONS):
        m = reg_i == k
        pre = np.asarray(prefixes, dtype=object)[(prefix_pick[m] * len(prefixes)).astype(int)]
        postal[m] = pre + np.char.zfill(rng.integers(0, 1000, m.sum()).astype(str), 3).astype(object)
    household = np.where(
        consumer, rng.choice(np.arange(1, 7), size=n, p=(0.38, 0.33, 0.12, 0.11, 0.04, 0.02)), np.nan
    )
    income = np.where(consumer, _choice(rng, D.INCOME_BANDS, D.INCOME_SHARE, n), "")
    life_p = np.tile(np.array([0.18, 0.17, 0.17, 0.14, 0.14, 0.20]), (n, 1))
    life_p[(ag == 1) | (ag == 2), 1] += 0.25  # families are more common at 25-44
    life_p /= life_p.sum(axis=1, keepdims=True)
    life_i = (rng.random(n)[:, None] > np.cumsum(life_p, axis=1)).sum(axis=1)
    lifestyle = np.where(consumer, np.asarray(D.LIFESTYLES, dtype=object)[life_i], "")
    price_sens = np.round(np.where(consumer, rng.beta(2, 2, n), rng.beta(2, 3, n)), 2)
    pref_p = np.array(
        [  # email, sms, phone, mail by age group
            [0.55, 0.35, 0.05, 0.05],
            [0.60, 0.25, 0.07, 0.08],
            [0.55, 0.15, 0.12, 0.18],
            [0.45, 0.10, 0.18, 0.27],
            [0.35, 0.05, 0.25, 0.35],
            [0.20, 0.03, 0.32, 0.45],
            [0.55, 0.05, 0.30, 0.10],
        ]
    )[ag]
    pref_i = (rng.random(n)[:, None] > np.cumsum(pref_p, axis=1)).sum(axis=1).clip(0, 3)
    preferred = np.asarray(D.CHANNELS, dtype=object)[pref_i]
    company_size = np.where(
        consumer, "", _choice(rng, ("1-9", "10-49", "50-249", "250+"), (0.5, 0.3, 0.15, 0.05), n)
    )

    # Category shares: softmax(age pattern + lifestyle pattern + individual taste).
    cat_logit = D.AGE_CATEGORY_LOGWEIGHT[ag].copy()
    cat_logit[consumer] += D.LIFESTYLE_CATEGORY_LOGWEIGHT[life_i[consumer]]
    cat_logit += rng.normal(0, D.CATEGORY_NOISE_SD, size=cat_logit.shape)
    pi = np.exp(cat_logit - cat_logit.max(axis=1, keepdims=True))
    pi /= pi.sum(axis=1, keepdims=True)

    # ------------------------------------------------------------------ 2-4. purchasing parameters
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

    tables: dict[str, pd.DataFrame] = {}
    customer_ids = _customer_ids(ctype_i)
    tables["customers"] = pd.DataFrame(
        {
            "customer_id": customer_ids,
            "created_at": clock.ts(created),
            "customer_type": ctype,
            "birth_year": pd.array(birth_year, dtype="Int64"),
            "gender": gender,
            "postal_code": postal,
            "region": region,
            "household_size": pd.array(household, dtype="Int64"),
            "income_band": income,
            "lifestyle_segment": lifestyle,
            "price_sensitivity": price_sens,
            "preferred_channel": preferred,
            "company_size": company_size,
        }
    )

    # ------------------------------------------------------------------ lines, products, returns
    tables["purchases"] = _purchases(
        rng, clock, customer_ids, o_owner, o_time, o_value, lines_mu, pi, consumer, price_sens, ag
    )

    # ------------------------------------------------------------------ 3. complaints
    c_orders = np.flatnonzero(o_complaint)
    c_open = o_time[c_orders] + rng.exponential(2.0, len(c_orders))
    ok = c_open < span
    c_orders, c_open = c_orders[ok], c_open[ok]
    c_close = c_open + rng.exponential(12.0, len(c_orders))
    c_close = np.where(c_close < span, c_close, np.nan)
    c_owner = o_owner[c_orders]
    tables["complaints"] = pd.DataFrame(
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

    # ------------------------------------------------------------------ 6. consents
    grant = np.full((4, n), np.inf)
    withdraw = np.full((4, n), np.inf)
    consent_rows = []
    for k, ch in enumerate(D.CHANNELS):
        prob = D.CONSENT_BASE[ch] + D.CONSENT_PREFERRED_BONUS * (pref_i == k)
        has = rng.random(n) < prob
        g_t = created + rng.exponential(10.0, n)
        has &= g_t < span
        doi = rng.random(n) < D.EMAIL_DOUBLE_OPT_IN
        valid_grant = has & (doi if ch == "email" else True)
        grant[k, valid_grant] = g_t[valid_grant]
        wd = has & (rng.random(n) < D.CONSENT_WITHDRAW)
        w_t = g_t + rng.exponential(400.0, n)
        wd &= w_t < span
        withdraw[k, wd] = w_t[wd]
        consent_rows.append(
            pd.DataFrame(
                {
                    "owner": idx[has],
                    "channel": ch,
                    "granted": True,
                    "t": g_t[has],
                    "double_opt_in": pd.array(doi[has], dtype="boolean")
                    if ch == "email"
                    else pd.array([pd.NA] * int(has.sum()), dtype="boolean"),
                    "source": _choice(
                        rng, ("web form", "contract", "call", "store"), (0.5, 0.25, 0.15, 0.1), int(has.sum())
                    ),
                }
            )
        )
        consent_rows.append(
            pd.DataFrame(
                {
                    "owner": idx[wd],
                    "channel": ch,
                    "granted": False,
                    "t": w_t[wd],
                    "source": "customer request",
                }
            )
        )
    objects = rng.random(n) < D.OBJECTION_SHARE
    obj_t = np.where(objects, created + rng.uniform(0, 1, n) * (span - created), np.inf)
    consent_rows.append(
        pd.DataFrame(
            {"owner": idx[objects], "channel": "*", "granted": False, "t": obj_t[objects], "source": "letter"}
        )
    )

    # ------------------------------------------------------------------ 7. campaigns and responses
    u_resp = rng.normal(0, D.RESPONSE_INDIVIDUAL_SD, n)
    months = pd.date_range(start_ts.normalize(), end_ts, freq="MS")
    if len(months) == 0 or months[0] > start_ts:
        months = months.insert(0, start_ts.normalize())
    contact_parts: list[dict[str, np.ndarray]] = []  # coded columns; strings only at the end
    campaigns: list[str] = []
    actions = list(D.ACTIONS)
    unsub_rows = []
    age_eff = {ch: np.asarray(D.RESPONSE_AGE[ch])[ag] for ch in D.CHANNELS}
    for month in months:
        m0 = (month - start_ts) / pd.Timedelta(days=1)
        for k, ch in enumerate(D.CHANNELS):
            t = m0 + rng.uniform(0, 25)
            if t >= span - 3:
                continue
            action = _pick_action(rng, ch)
            kind, _, a_eff, a_cat = D.ACTIONS[action]
            eligible = (created < t) & (grant[k] <= t) & (t < withdraw[k]) & ~(obj_t <= t)
            selected = eligible & (rng.random(n) < D.CAMPAIGN_REACH[ch])
            sel = idx[selected]
            if len(sel) == 0:
                continue
            control = rng.random(len(sel)) < D.CONTROL_SHARE
            spread = 10.0 if ch == "phone" else 2.0
            ct = t + rng.uniform(0, spread, len(sel))
            dead = ~np.isnan(death_at[sel]) & (death_at[sel] < ct)
            extra = np.zeros(len(sel))
            if kind in ("retention", "win_back"):
                extra += D.RESPONSE_VOUCHER_PRICE_SENSITIVITY * (price_sens[sel] - 0.5)
            if a_cat is not None:
                extra += D.RESPONSE_AFFINITY * np.log(len(D.CATEGORIES) * pi[sel, D.CATEGORIES.index(a_cat)])
            logit_t = (
                D.RESPONSE_BASE[ch]
                + a_eff
                + D.RESPONSE_PREFERRED_CHANNEL * (pref_i[sel] == k)
                + age_eff[ch][sel]
                + u_resp[sel]
                + extra
            )
            logit_c = D.ORGANIC_BASE + D.RESPONSE_ORGANIC_INDIVIDUAL * u_resp[sel]
            logit_t = logit_t + D.RESPONSE_DEAD * dead
            logit_c = logit_c + D.RESPONSE_DEAD * dead
            prob = np.where(control, _sigmoid(logit_c), _sigmoid(logit_t))
            responded = rng.random(len(sel)) < prob
            converted = responded & (rng.random(len(sel)) < D.CONVERT_GIVEN_RESPONSE)
            r = rng.random(len(sel))
            oc = OUTCOMES.index
            outcome = np.full(len(sel), oc("none"), dtype=np.int8)
            treated_quiet = ~control & ~responded
            if ch == "email":
                outcome[treated_quiet & (r < 0.015)] = oc("bounced")
                outcome[treated_quiet & (r >= 0.015) & (r < 0.021)] = oc("unsubscribed")
                outcome[treated_quiet & (r >= 0.021) & (r < 0.221)] = oc("opened")
                outcome[treated_quiet & (r >= 0.221) & (r < 0.261)] = oc("clicked")
            elif ch == "sms":
                outcome[treated_quiet & (r < 0.005)] = oc("unsubscribed")
                outcome[treated_quiet & (r >= 0.005) & (r < 0.035)] = oc("clicked")
            outcome[responded] = oc("responded")
            outcome[converted] = oc("converted")
            unsub = outcome == oc("unsubscribed")
            if unsub.any():
                who = sel[unsub]
                when = ct[unsub] + 60.0 / _SECONDS_PER_DAY
                withdraw[k, who] = np.minimum(withdraw[k, who], when)
                unsub_rows.append(
                    pd.DataFrame(
                        {
                            "owner": who,
                            "channel": ch,
                            "granted": False,
                            "t": when,
                            "source": "unsubscribe link",
                        }
                    )
                )
            campaigns.append(f"CMP-{month:%Y-%m}-{ch}")
            contact_parts.append(
                _contact_part(
                    sel,
                    ct,
                    CONTACT_CHANNELS.index(ch),
                    0,
                    len(campaigns) - 1,
                    actions.index(action),
                    control.astype(np.int8),
                    outcome,
                    -1,
                )
            )

    # ------------------------------------------------------------------ 8. inbound contacts, offers
    in_rate = np.array([1 / 250, 1 / 60, 1 / 45])[ctype_i]
    active_until = np.where(
        np.isnan(death_at), span, np.minimum(span, np.nan_to_num(death_at, nan=span) + 30.0)
    )
    active_len = np.maximum(active_until - created, 0.0)
    n_in = rng.poisson(in_rate * active_len)
    in_owner = np.repeat(idx, n_in)
    in_t = created[in_owner] + rng.random(len(in_owner)) * active_len[in_owner]
    cc = CONTACT_CHANNELS.index
    in_channel = np.where(
        consumer[in_owner],
        np.asarray([cc("phone"), cc("email"), cc("web"), cc("store")])[
            rng.choice(4, size=len(in_owner), p=(0.4, 0.35, 0.15, 0.1))
        ],
        np.asarray([cc("phone"), cc("email"), cc("field_sales")])[
            rng.choice(3, size=len(in_owner), p=(0.4, 0.35, 0.25))
        ],
    )
    n_in_total = len(in_owner)
    contact_parts.append(
        _contact_part(
            in_owner, in_t, in_channel, 1, -1, -1, -1, -1, rng.choice(3, size=n_in_total, p=(0.45, 0.35, 0.2))
        )
    )
    complaint_channel = np.where(
        rng.random(len(c_owner)) < 0.6, CONTACT_CHANNELS.index("phone"), CONTACT_CHANNELS.index("email")
    )
    contact_parts.append(
        _contact_part(c_owner, c_open, complaint_channel, 1, -1, -1, -1, -1, TOPICS.index("complaint"))
    )
    tables["contacts"] = _contacts_frame(contact_parts, clock, customer_ids, campaigns, actions)
    del contact_parts

    consents = pd.concat(consent_rows + unsub_rows, ignore_index=True)
    consents["recorded_at"] = clock.ts(consents["t"].to_numpy())
    consents = consents.sort_values(["recorded_at", "owner"], kind="stable")
    consents["customer_id"] = customer_ids[consents["owner"].to_numpy()]
    consents = consents.drop_duplicates(["customer_id", "channel", "recorded_at"], keep="last")
    consents["double_opt_in"] = consents["double_opt_in"].astype("boolean")
    tables["consents"] = consents[
        ["customer_id", "channel", "granted", "recorded_at", "double_opt_in", "source"]
    ].reset_index(drop=True)

    tables["offers"] = _offers(
        rng, clock, customer_ids, consumer, created, death_at, alive_end, o_owner, o_time, o_value, nu, gg
    )
    tables["products"] = pd.DataFrame(
        {
            "product_id": _product_ids(),
            "category": np.repeat(np.asarray(D.CATEGORIES, dtype=object), 30),
            "name": [f"{c.replace('_', ' ').title()} item {j + 1}" for c in D.CATEGORIES for j in range(30)],
        }
    )

    # ------------------------------------------------------------------ truth
    params = pd.DataFrame(
        {
            "customer_id": customer_ids,
            "customer_type": ctype,
            "age_group": np.asarray(D.AGE_BANDS, dtype=object)[ag],
            "is_buyer": buyer,
            "lambda_per_day": lam,
            "p_dropout": p_drop,
            "p_dropout_after_complaint": p_after,
            "complaint_prob_per_order": kappa,
            "gg_p": gg["p"],
            "gg_nu": nu,
            "mean_spend_per_order": gg["p"] / nu,
            "lines_extra_mean": lines_mu,
            "response_individual": u_resp,
            "preferred_channel": preferred,
            "price_sensitivity": price_sens,
            "first_purchase_at": clock.ts(t0),
            "death_at": clock.ts(death_at),
            "complained_at": clock.ts(complained_at),
            "repeat_orders": n_rep,
            "alive_at_end": alive_end,
        }
    )
    for j, c in enumerate(D.CATEGORIES):
        params[f"category_share_{c}"] = pi[:, j]
    for col in ("first_purchase_at", "death_at", "complained_at"):
        params[col] = pd.to_datetime(params[col]).dt.tz_localize("UTC")
    truth = truth_at_end(params, end_ts)
    agc = _age_group_category(pi, ag, buyer)
    design = _design_dict(n, seed, start_ts, end_ts)
    return World(tables=tables, truth=truth, age_group_category=agc, design=design)


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


def _contact_part(
    owner, t, channel, direction, campaign, action, control, outcome, topic
) -> dict[str, np.ndarray]:
    """One block of contacts as integer codes (-1 = empty); scalars are broadcast."""
    n = len(owner)

    def col(v, dtype):
        return np.broadcast_to(np.asarray(v, dtype=dtype), (n,))

    return {
        "owner": np.asarray(owner, dtype=np.int64),
        "t": np.asarray(t, dtype=np.float64),
        "channel": col(channel, np.int8),
        "direction": col(direction, np.int8),
        "campaign": col(campaign, np.int32),
        "action": col(action, np.int16),
        "control": col(control, np.int8),
        "outcome": col(outcome, np.int8),
        "topic": col(topic, np.int8),
    }


def _contacts_frame(parts, clock, customer_ids, campaigns, actions) -> pd.DataFrame:
    """All contacts in time order, with text columns as categoricals (memory: codes, not strings)."""
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(cols["t"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    control = pd.array(cols["control"] == 1, dtype="boolean")
    control[cols["control"] < 0] = pd.NA
    return pd.DataFrame(
        {
            "contact_id": _ids("K", len(order), 10),
            "customer_id": customer_ids[cols["owner"]],
            "contacted_at": clock.ts(cols["t"]),
            "channel": pd.Categorical.from_codes(cols["channel"], CONTACT_CHANNELS),
            "direction": pd.Categorical.from_codes(cols["direction"], ("outbound", "inbound")),
            "campaign_id": pd.Categorical.from_codes(cols["campaign"], campaigns),
            "action_id": pd.Categorical.from_codes(cols["action"], actions),
            "is_control": control,
            "outcome": pd.Categorical.from_codes(cols["outcome"], OUTCOMES),
            "topic": pd.Categorical.from_codes(cols["topic"], TOPICS),
        }
    )


def _index_of(values: np.ndarray, options: tuple[str, ...]) -> np.ndarray:
    lookup = {v: i for i, v in enumerate(options)}
    return np.array([lookup.get(v, len(options)) for v in values])


def _pick_action(rng: np.random.Generator, channel: str) -> str:
    kinds = sorted({kind for kind, chans, _, _ in D.ACTIONS.values() if channel in chans})
    kind = kinds[rng.integers(len(kinds))]
    options = sorted(a for a, (k, chans, _, _) in D.ACTIONS.items() if k == kind and channel in chans)
    return options[rng.integers(len(options))]


def _ids(prefix: str, n: int, width: int) -> np.ndarray:
    nums = pc.utf8_lpad(pc.cast(pa.array(np.arange(1, n + 1)), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, nums, "").to_numpy(zero_copy_only=False).astype(object)


def _customer_ids(ctype_i: np.ndarray) -> np.ndarray:
    """Identifiers in three styles: numbers with leading zeros (consumers), 'B-...' and 'H-...'."""
    n = len(ctype_i)
    nums = pc.cast(pa.array(np.arange(1, n + 1)), pa.string())
    padded = pc.utf8_lpad(nums, 8, "0").to_numpy(zero_copy_only=False).astype(object)
    plain = nums.to_numpy(zero_copy_only=False).astype(object)
    out = padded.copy()
    out[ctype_i == 1] = "B-" + plain[ctype_i == 1]
    out[ctype_i == 2] = "H-" + plain[ctype_i == 2]
    return out


def _product_ids() -> list[str]:
    return [f"SKU-{c[:4].upper()}-{j + 1:03d}" for c in D.CATEGORIES for j in range(30)]


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


def _age_group_category(pi: np.ndarray, ag: np.ndarray, buyer: np.ndarray) -> pd.DataFrame:
    """Designed expected share of purchase lines per age group and category (buyers' mean shares)."""
    rows = []
    for g, band in enumerate(D.AGE_BANDS):
        m = (ag == g) & buyer
        if not m.any():
            continue
        share = pi[m].mean(axis=0)
        for j, c in enumerate(D.CATEGORIES):
            rows.append(
                {"age_group": band, "category": c, "expected_line_share": share[j], "customers": int(m.sum())}
            )
    return pd.DataFrame(rows)


def _design_dict(n: int, seed: int, start: pd.Timestamp, end: pd.Timestamp) -> dict:
    return {
        "customers": n,
        "seed": seed,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "categories": list(D.CATEGORIES),
        "age_groups": list(D.AGE_BANDS),
        "age_category_logweight": D.AGE_CATEGORY_LOGWEIGHT.tolist(),
        "lifestyles": list(D.LIFESTYLES),
        "lifestyle_category_logweight": D.LIFESTYLE_CATEGORY_LOGWEIGHT.tolist(),
        "bgnbd": D.BGNBD,
        "gamma_gamma": D.GAMMA_GAMMA,
        "complaint_prob_per_order": D.COMPLAINT_PROB_PER_ORDER,
        "complaint_keep": D.COMPLAINT_KEEP,
        "channels": list(D.CHANNELS),
        "campaign_reach": D.CAMPAIGN_REACH,
        "control_share": D.CONTROL_SHARE,
        "response_base": D.RESPONSE_BASE,
        "organic_base": D.ORGANIC_BASE,
        "actions": {
            a: {"kind": k, "channels": list(ch), "logit_effect": e, "category": c}
            for a, (k, ch, e, c) in D.ACTIONS.items()
        },
        "response_preferred_channel": D.RESPONSE_PREFERRED_CHANNEL,
        "response_voucher_price_sensitivity": D.RESPONSE_VOUCHER_PRICE_SENSITIVITY,
        "response_affinity": D.RESPONSE_AFFINITY,
        "response_organic_individual": D.RESPONSE_ORGANIC_INDIVIDUAL,
        "response_dead": D.RESPONSE_DEAD,
        "response_age": D.RESPONSE_AGE,
        "convert_given_response": D.CONVERT_GIVEN_RESPONSE,
    }


# ---------------------------------------------------------------------------------------------- output


def _to_arrow(df: pd.DataFrame) -> pa.Table:
    """Text-ready columns: ISO timestamps (seconds), true/false, empty text as missing."""
    cols = {}
    for c in df.columns:
        s = df[c]
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            ts = pa.array(s.to_numpy().astype("datetime64[s]"), type=pa.timestamp("s"), from_pandas=True)
            cols[c] = pc.replace_substring(ts.cast(pa.string()), " ", "T")
        elif isinstance(s.dtype, pd.BooleanDtype) or s.dtype == bool:
            cols[c] = pa.array(s.astype("boolean"), type=pa.bool_(), from_pandas=True).cast(pa.string())
        elif isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(s.dtype):
            arr = pa.array(s, from_pandas=True)
            arr = arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr.cast(pa.string())
            cols[c] = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)
        else:
            cols[c] = pa.array(s, from_pandas=True)
    return pa.table(cols)


def write_world(world: World, out: Path | str, fmt: str = "csv") -> dict[str, int]:
    """Write the contract tables (CSV or Parquet) and ``truth/``; returns rows per table."""
    if fmt not in ("csv", "parquet"):
        raise ConfigurationError(f"--format must be csv or parquet, not {fmt!r}")
    out = Path(out)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, df in world.tables.items():
        table = _to_arrow(df)
        for other in ("csv", "parquet"):  # never leave a stale file of the other format behind
            stale = out / f"{name}.{other}"
            if other != fmt and stale.exists():
                stale.unlink()
        if fmt == "csv":
            pacsv.write_csv(table, out / f"{name}.csv")
        else:
            pq.write_table(table, out / f"{name}.parquet")
        rows[name] = len(df)
    pq.write_table(
        pa.Table.from_pandas(world.truth, preserve_index=False), out / "truth" / "customers.parquet"
    )
    world.age_group_category.to_csv(out / "truth" / "age_group_category.csv", index=False)
    (out / "truth" / "design.json").write_text(json.dumps(world.design, indent=2, default=float))
    (out / "truth" / "README.md").write_text(
        "# Truth of this sample world\n\n"
        "Generated by `kundenwert sample`; the generative story is the docstring of "
        "`kundenwert.datasets.sample`.\n\n"
        "- `customers.parquet`: per customer the true parameters and the true values at the end date.\n"
        "- `age_group_category.csv`: designed expected share of purchase lines per age group and category.\n"
        "- `design.json`: every designed parameter of the world.\n"
        "\n`kundenwert.datasets.truth` computes the true values at any cutoff.\n"
    )
    return rows
