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

Variants
--------
Options of ``kundenwert sample`` (``Variants``; recorded in ``design.json`` under ``variants``)
turn the world into one like the campaign data sets users bring. Without them the world is the one
above, byte for byte. Their random draws come from a second generator seeded from the seed, so the
tables drawn before the campaigns (customers, purchases, complaints, consent grants) stay those of
the default world of the same seed. They combine, except ``--experiment`` with ``--no-control`` (the
experiment needs its control group) or with ``--max-calls`` above 1 (it has no phone campaign); a
bank-like world is ``--max-calls 3 --no-purchases --no-control``.

- ``--max-calls N`` (default 1), like a bank's phone campaigns (UCI "Bank Marketing"): in phone
  campaigns a treated customer who has not responded is called again ``CALL_GAP_DAYS`` (2-7) days
  later, while the world lasts and the phone consent holds, up to N calls in all. Call k responds
  with the first call's logit plus ``CALL_LOGIT_DECAY * (k - 1)`` (-0.4), so knowing the position
  of a call in its campaign helps. All calls share campaign_id and action_id; the campaign's
  outcome (``responded``, ``converted`` or ``none``) is on the customer's last call, earlier calls
  are ``none``; control rows stay one row. Other channels and every other table are unchanged
  (phone campaigns have no unsubscribes). The truth's ``response_phone_treated`` is the first call's.
- ``--no-purchases``: products are sold in another system. The world is simulated as usual, but
  purchases, products and offers (quotes precede orders and reveal them) are not written; customers,
  contacts, consents and complaints are. The truth's purchase quantities (alive, expected purchases
  and spend, churn, affinities) describe purchases no table shows; ``truth.posterior_state`` and
  ``posterior_response_probability`` need a purchases table and do not apply.
- ``--no-control``: nobody is held out; the 15% who would have been are contacted and respond as
  treated. The truth's ``response_*_control`` is the organic response no row observes. Their
  unsubscribes change later consents, so later campaigns, inbound contacts and offers are drawn anew.
- ``--experiment``, like the MineThatData (Hillstrom) e-mail test: instead of the monthly campaigns,
  one e-mail campaign ``EXP-<date>-email`` (action ``retention_voucher``) on one day 30 days before
  the end (sent 09:00-17:00) to every customer with valid e-mail consent then; a third is held out
  at random. Outcome ``clicked`` (a visit), ``converted`` (a visit and a purchase) or ``none``, on
  treated and control rows alike (control: organic visits). The treated click logit depends on
  preferred channel, age group, price sensitivity (the voucher) and responsiveness; a treated click
  converts more often, the more so for the price sensitive (``design.EXPERIMENT``): the uplift
  differs by customer and can be learnt. As in the default world a conversion is recorded on the
  contact only; the purchase process stays BG/NBD. There are no unsubscribes; inbound contacts and
  offers are drawn anew. The truth adds ``experiment_eligible`` and ``experiment_click_{treated,
  control}`` / ``experiment_conversion_{treated,control}``: P(click) and P(click and conversion) on
  that day for every customer (knowing who has left); its ``response_*`` columns describe the
  monthly campaigns, which do not run in this world.
- ``--no-effect``: a null world for lift estimates. A contact does nothing: a treated customer
  responds with the control's (organic) probability; unsubscribes, bounces, opens and clicks of
  treated customers who do not respond stay (they are no responses). Every draw is the default
  world's, only that probability changes (so fewer responses and more unsubscribes, and from them
  on other consents, later campaigns, inbound contacts and offers). With ``--experiment`` the treated
  click and convert with the control's probabilities; with ``--max-calls`` a later call never brings
  a response. The truth's ``response_*_treated`` (and ``experiment_*_treated``) equal the control's.

- ``--sure-things SHARE``: "sure things" for uplift modelling. The ``SHARE`` of customers with the
  highest purchase rate among the loyal (buyers who do not leave while the world lasts) respond to a campaign whether contacted or not: their organic
  logit gets ``design.SURE_THING_ORGANIC`` (+4.4: about 45% respond uncontacted) while they have not
  left, and contacted they respond with the larger of the two chances, so a contact adds almost
  nothing. Ranked by response they come first; ranked by uplift, last. No extra random draw: every
  draw is the default world's, only these probabilities change (and from the responses on, as with
  ``--no-effect``, later consents and what depends on them). The truth gains ``sure_thing`` per
  customer, and its ``response_*`` columns and ``truth/contacts.parquet`` include the effect;
  ``truth.posterior_response_probability`` does not know it and does not apply.

``truth/customers.parquet`` holds per customer the true parameters and the true values at the end
date (alive, expected purchases and spend over 90 and 365 days, churn probability over 90 days,
category affinities, response probability per channel with and without contact);
``kundenwert.datasets.truth`` computes the same quantities at any earlier cutoff.
``truth/contacts.parquet`` (``truth.load_contact_truth``) holds per campaign contact (its
``contact_id``; control rows too) the exact probabilities the world drew its response from, with and
without the contact (``p_response_treated``, ``p_response_control``; with ``--max-calls`` on the
first call of a campaign; with ``--experiment`` a response is a conversion, and ``p_click_*`` are
added): the true lift of a campaign is the mean of their difference over its rows. Computing them
draws no random numbers: the tables are those of a world without this file.
Everything is vectorised with numpy and deterministic for a seed.

The steps live beside this module, one file each: ``_people`` (1, 5), ``_buying`` (2-4, offers) and
``_marketing`` (6-8); ``generate_world`` runs them in story order on one random generator, so a
seed gives the same world whatever the module layout.
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
from kundenwert.datasets._buying import (
    Orders,
    _offers,
    _product_ids,
    _purchases,
    complaints_table,
    draw_orders,
)
from kundenwert.datasets._common import Variants, _Clock, variant_rng
from kundenwert.datasets._marketing import (
    consents_table,
    contacts_table,
    draw_consents,
    run_campaigns,
    run_experiment,
)
from kundenwert.datasets._people import People, _customer_ids, customers_table, draw_people
from kundenwert.datasets.truth import truth_at_end
from kundenwert.errors import ConfigurationError
from kundenwert.features.contract import TABLE_ORDER

__all__ = ["DEFAULT_END", "DEFAULT_START", "Variants", "World", "generate_world", "write_world"]

DEFAULT_START = "2023-01-01"
DEFAULT_END = "2025-12-31"


@dataclass
class World:
    """The generated tables (contract format, text-ready) plus the truth: per customer (``truth``)
    and per campaign contact (``contact_truth``, see ``truth.load_contact_truth``)."""

    tables: dict[str, pd.DataFrame]
    truth: pd.DataFrame
    age_group_category: pd.DataFrame
    design: dict
    contact_truth: pd.DataFrame


def generate_world(
    n_customers: int,
    seed: int,
    start: str | pd.Timestamp = DEFAULT_START,
    end: str | pd.Timestamp = DEFAULT_END,
    variants: Variants | None = None,
) -> World:
    """Simulate the world (see the module docstring for the story and the variants)."""
    variants = variants or Variants()
    variants.check()
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

    p = draw_people(rng, n, span, end_ts)
    o = draw_orders(rng, p, span)
    customer_ids = _customer_ids(p.ctype_i)
    tables: dict[str, pd.DataFrame] = {"customers": customers_table(p, clock, customer_ids)}
    tables["purchases"] = _purchases(
        rng,
        clock,
        customer_ids,
        o.o_owner,
        o.o_time,
        o.o_value,
        o.lines_mu,
        p.pi,
        p.consumer,
        p.price_sens,
        p.ag,
    )
    tables["complaints"], c_owner, c_open = complaints_table(rng, clock, customer_ids, o)
    consent = draw_consents(rng, p, span)
    vrng = variant_rng(seed)  # variants draw here only: the default stream stays as it was
    if variants.experiment:
        campaigns = run_experiment(rng, vrng, p, o, consent, start_ts, span, variants.effect)
    else:
        campaigns = run_campaigns(rng, p, o, consent, start_ts, end_ts, span, variants, vrng)
    tables["contacts"], contact_truth = contacts_table(
        rng, clock, customer_ids, p, o, campaigns, c_owner, c_open
    )
    tables["consents"] = consents_table(consent, campaigns, clock, customer_ids)
    tables["offers"] = _offers(
        rng,
        clock,
        customer_ids,
        p.consumer,
        p.created,
        o.death_at,
        o.alive_end,
        o.o_owner,
        o.o_time,
        o.o_value,
        o.nu,
        o.gg,
    )
    tables["products"] = pd.DataFrame(
        {
            "product_id": _product_ids(),
            "category": np.repeat(np.asarray(D.CATEGORIES, dtype=object), 30),
            "name": [f"{c.replace('_', ' ').title()} item {j + 1}" for c in D.CATEGORIES for j in range(30)],
        }
    )
    if not variants.purchases:  # sold in another system: the orders happen, the data does not show them
        for name in ("purchases", "products", "offers"):
            del tables[name]
    truth = _truth(p, o, campaigns.u_resp, customer_ids, clock, end_ts, campaigns.sure)
    for col, values in campaigns.truth.items():
        truth[col] = values
    if not variants.effect:  # a contact does nothing: with it, the organic response
        for ch in D.CHANNELS:
            truth[f"response_{ch}_treated"] = truth[f"response_{ch}_control"]
    return World(
        tables=tables,
        truth=truth,
        age_group_category=_age_group_category(p.pi, p.ag, o.buyer),
        design=_design_dict(n, seed, start_ts, end_ts, variants),
        contact_truth=contact_truth,
    )


def _truth(
    p: People,
    o: Orders,
    u_resp: np.ndarray,
    customer_ids: np.ndarray,
    clock: _Clock,
    end_ts: pd.Timestamp,
    sure: np.ndarray | None = None,
) -> pd.DataFrame:
    """Every customer's true parameters and their true values at the end date."""
    params = pd.DataFrame(
        {
            "customer_id": customer_ids,
            "customer_type": p.ctype,
            "age_group": np.asarray(D.AGE_BANDS, dtype=object)[p.ag],
            "is_buyer": o.buyer,
            "lambda_per_day": o.lam,
            "p_dropout": o.p_drop,
            "p_dropout_after_complaint": o.p_after,
            "complaint_prob_per_order": o.kappa,
            "gg_p": o.gg["p"],
            "gg_nu": o.nu,
            "mean_spend_per_order": o.gg["p"] / o.nu,
            "lines_extra_mean": o.lines_mu,
            "response_individual": u_resp,
            "preferred_channel": p.preferred,
            "price_sensitivity": p.price_sens,
            "first_purchase_at": clock.ts(o.t0),
            "death_at": clock.ts(o.death_at),
            "complained_at": clock.ts(o.complained_at),
            "repeat_orders": o.n_rep,
            "alive_at_end": o.alive_end,
        }
    )
    if sure is not None and sure.any():  # --sure-things: only then, so other worlds keep their columns
        params["sure_thing"] = sure
    for j, c in enumerate(D.CATEGORIES):
        params[f"category_share_{c}"] = p.pi[:, j]
    for col in ("first_purchase_at", "death_at", "complained_at"):
        params[col] = pd.to_datetime(params[col]).dt.tz_localize("UTC")
    return truth_at_end(params, end_ts)


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


def _design_dict(n: int, seed: int, start: pd.Timestamp, end: pd.Timestamp, variants: Variants) -> dict:
    return {
        "customers": n,
        "seed": seed,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "variants": variants.as_dict(),
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
        "call_gap_days": list(D.CALL_GAP_DAYS),
        "call_logit_decay": D.CALL_LOGIT_DECAY,
        "experiment": {"channel": D.EXPERIMENT_CHANNEL, "action": D.EXPERIMENT_ACTION, **D.EXPERIMENT},
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
    for name in TABLE_ORDER:  # a contract table this world has not (--no-purchases): no stale file
        for other in ("csv", "parquet"):
            stale = out / f"{name}.{other}"
            if name not in world.tables and stale.exists():
                stale.unlink()
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
    pq.write_table(
        pa.Table.from_pandas(world.contact_truth, preserve_index=False), out / "truth" / "contacts.parquet"
    )
    world.age_group_category.to_csv(out / "truth" / "age_group_category.csv", index=False)
    (out / "truth" / "design.json").write_text(json.dumps(world.design, indent=2, default=float))
    (out / "truth" / "README.md").write_text(
        "# Truth of this sample world\n\n"
        "Generated by `kundenwert sample`; the generative story is the docstring of "
        "`kundenwert.datasets.sample`.\n\n"
        "- `customers.parquet`: per customer the true parameters and the true values at the end date.\n"
        "- `contacts.parquet`: per campaign contact (`contact_id`) the true probability of a response\n"
        "  (`responded` or `converted`) with and without the contact.\n"
        "- `age_group_category.csv`: designed expected share of purchase lines per age group and category.\n"
        "- `design.json`: every designed parameter of the world; `variants` holds the options of\n"
        "  `kundenwert sample` it was generated with (see the module docstring for what each changes).\n"
        "\n`kundenwert.datasets.truth` computes the true values at any cutoff.\n"
    )
    return rows
