"""True values of the sample world, at its end date or any earlier cutoff.

The purchase process is BG/NBD with one twist (a complaint raises the dropout probability), so the
true quantities have closed forms given each customer's parameters and state:

- Alive at ``t``: has bought before ``t`` and the order after which they leave is not before ``t``.
- P(no purchase in ``[t, t + h)``) for an alive customer is ``exp(-lambda h)`` (one leaves only right
  after an order); for a customer who has left it is 1. This is the churn probability.
- Expected orders in ``h``: a two-state chain (A: no complaint yet, B: complained) whose states are
  left at rate ``lambda * rho_A`` and ``lambda * p_B``; see ``expected_orders``.
- P(at least one order containing category c in ``h``): orders contain c with probability
  ``q = 1 - (1 - share) exp(-mu share)`` (``1 + Poisson(mu)`` lines), which gives
  ``(1 - A)(1 - exp(-k h))`` with ``k = lambda (q + p - q p)``, ``A = lambda (1 - q) p / k``
  (future complaints are not anticipated here; their effect on 90-day affinities is small).

In a variant world (``design.json``'s ``variants``, see ``kundenwert.datasets.sample``) these stay
the truth of what they describe: without a purchases table (``--no-purchases``) the purchase
quantities describe purchases no table shows, and the posteriors below, which read purchases, do not
apply; ``response_*`` is a first contact of a monthly campaign (not a repeated call of
``--max-calls``; not observed in the ``--experiment`` world, whose truth has ``experiment_*``
columns instead); ``response_*_control`` is unobserved with ``--no-control``. With ``--no-effect``
the world's ``response_*_treated`` equals ``response_*_control`` (``values_at`` does not know the
variant: at other cutoffs it gives the default world's treated response). The per-contact truth
(``load_contact_truth``) gives the exact probabilities of each campaign contact.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kundenwert.datasets import design as D

_AGE_EDGES = np.array([25, 35, 45, 55, 65], dtype="float64")


def age_group_index(birth_year: np.ndarray, year: int) -> np.ndarray:
    """Index into ``design.AGE_BANDS`` (6 = unknown) of the age reached in ``year``."""
    age = year - np.asarray(birth_year, dtype="float64")
    idx = np.searchsorted(_AGE_EDGES, age, side="right")
    return np.where(np.isnan(age), 6, idx)


def expected_orders(
    lam: np.ndarray, p: np.ndarray, p_after: np.ndarray, kappa: np.ndarray, complained: np.ndarray, h: float
) -> np.ndarray:
    """Expected orders in the next ``h`` days of an alive customer."""
    lam, p, p_after, kappa = (np.asarray(x, dtype="float64") for x in (lam, p, p_after, kappa))
    e_b = -np.expm1(-lam * p_after * h) / p_after
    rho_a = 1.0 - (1.0 - kappa) * (1.0 - p)
    diff = rho_a - p_after
    diff = np.where(np.abs(diff) < 1e-9, 1e-9, diff)
    k = kappa * (1.0 - p_after) / diff
    int_a = -np.expm1(-lam * rho_a * h) / rho_a
    e_a = int_a + k * (e_b - int_a)
    return np.where(complained, e_b, e_a)


def category_probability(
    lam: np.ndarray, p: np.ndarray, share: np.ndarray, lines_mu: np.ndarray, h: float
) -> np.ndarray:
    """P(at least one order with the category in ``h`` days) for an alive customer."""
    q = 1.0 - (1.0 - share) * np.exp(-lines_mu * share)
    k = lam * (q + p - q * p)
    a = lam * (1.0 - q) * p / k
    return (1.0 - a) * -np.expm1(-k * h)


def values_at(
    params: pd.DataFrame, cutoff: pd.Timestamp | str, horizons: tuple[int, ...] = (90, 365)
) -> pd.DataFrame:
    """True state and values of every customer at ``cutoff`` (indexed by ``customer_id``).

    Columns: ``alive``, ``p_dropout_now``, ``churn_probability_{h}d``, ``expected_purchases_{h}d``,
    ``expected_spend_{h}d``, ``affinity_{category}_{h}d`` (first horizon only), and per channel
    ``response_{channel}_treated`` / ``_control`` for a neutral action.
    """
    t = pd.Timestamp(cutoff)
    t = t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
    first = params["first_purchase_at"]
    death = params["death_at"]
    has_bought = (params["is_buyer"] & (first < t)).to_numpy()
    alive = has_bought & (death.isna() | (death >= t)).to_numpy()
    complained = (params["complained_at"] < t).fillna(False).to_numpy()
    lam = params["lambda_per_day"].to_numpy()
    p = params["p_dropout"].to_numpy()
    pa_ = params["p_dropout_after_complaint"].to_numpy()
    kappa = params["complaint_prob_per_order"].to_numpy()
    p_now = np.where(complained, pa_, p)
    out = pd.DataFrame(index=pd.Index(params["customer_id"].to_numpy(), name="customer_id"))
    out["has_bought"] = has_bought
    out["alive"] = alive
    out["p_dropout_now"] = p_now
    spend = params["mean_spend_per_order"].to_numpy()
    for h in horizons:
        out[f"churn_probability_{h}d"] = np.where(has_bought, np.where(alive, np.exp(-lam * h), 1.0), np.nan)
        e = np.where(alive, expected_orders(lam, p, pa_, kappa, complained, h), 0.0)
        out[f"expected_purchases_{h}d"] = e
        out[f"expected_spend_{h}d"] = e * spend
    h0 = horizons[0]
    mu = params["lines_extra_mean"].to_numpy()
    for c in D.CATEGORIES:
        share = params[f"category_share_{c}"].to_numpy()
        out[f"affinity_{c}_{h0}d"] = np.where(alive, category_probability(lam, p_now, share, mu, h0), 0.0)
    ag = pd.Categorical(params["age_group"], categories=list(D.AGE_BANDS)).codes
    left = has_bought & ~alive
    pref = params["preferred_channel"].to_numpy()
    u = params["response_individual"].to_numpy()
    # --sure-things: they respond without a contact (while alive), and a contact adds nothing
    sure = params["sure_thing"].to_numpy(dtype=bool) if "sure_thing" in params else np.zeros(len(u), bool)
    for ch in D.CHANNELS:
        logit_t = (
            D.RESPONSE_BASE[ch]
            + D.RESPONSE_PREFERRED_CHANNEL * (pref == ch)
            + np.asarray(D.RESPONSE_AGE[ch])[ag]
            + u
        )
        logit_c = D.ORGANIC_BASE + D.RESPONSE_ORGANIC_INDIVIDUAL * u + D.SURE_THING_ORGANIC * (sure & ~left)
        treated = 1.0 / (1.0 + np.exp(-(logit_t + D.RESPONSE_DEAD * left)))
        control = 1.0 / (1.0 + np.exp(-(logit_c + D.RESPONSE_DEAD * left)))
        out[f"response_{ch}_treated"] = np.where(sure, np.maximum(treated, control), treated)
        out[f"response_{ch}_control"] = control
    return out


def truth_at_end(params: pd.DataFrame, end: pd.Timestamp) -> pd.DataFrame:
    """The parameters plus the true values at the end date, one row per customer."""
    vals = values_at(params, end).reset_index(drop=True)
    vals = vals.drop(columns=["has_bought"]).rename(columns={"alive": "alive_at_end_check"})
    out = pd.concat([params.reset_index(drop=True), vals], axis=1)
    if not (out["alive_at_end_check"] == out["alive_at_end"]).all():  # the two derivations must agree
        raise AssertionError("sample world: alive-at-end derived two ways disagrees")
    return out.drop(columns=["alive_at_end_check"])


def load_truth(folder: str) -> pd.DataFrame:
    """``truth/customers.parquet`` of a sample world folder (the folder or its ``truth/``)."""
    from pathlib import Path

    base = Path(folder)
    path = base / "customers.parquet" if base.name == "truth" else base / "truth" / "customers.parquet"
    return pd.read_parquet(path)


def load_contact_truth(folder: str) -> pd.DataFrame:
    """``truth/contacts.parquet`` of a sample world folder (the folder or its ``truth/``): per
    campaign contact the true probability of a response (outcome ``responded`` or ``converted``)
    with and without the contact.

    Columns: ``contact_id`` (the contacts table's), ``customer_id``, ``campaign_id``, ``action_id``,
    ``channel``, ``is_control``, ``p_response_treated`` (P(response | contacted)),
    ``p_response_control`` (P(response | not contacted), the organic response), both knowing whether
    the customer had left at the contact's time, and ``p_click_treated`` / ``p_click_control``
    (``--experiment`` only: P(click); NaN in the monthly campaigns). One row per campaign and
    selected customer, treated or control; with ``--max-calls`` on the customer's first call, with the
    first call's probabilities (the campaign's outcome is on the last call; later calls have no row).
    The true expected lift of a campaign is the mean of ``p_response_treated - p_response_control``
    over its rows. ``--no-effect``: the two are equal.
    """
    from pathlib import Path

    base = Path(folder)
    path = base / "contacts.parquet" if base.name == "truth" else base / "truth" / "contacts.parquet"
    return pd.read_parquet(path)


def posterior_churn_probability(
    frames: dict[str, pd.DataFrame], cutoff: pd.Timestamp | str, horizon: float = 90.0, grid: int = 400
) -> pd.Series:
    """P(no purchase in the horizon) from ``posterior_state`` (see there)."""
    return posterior_state(frames, cutoff, horizon, grid)[f"churn_probability_{horizon:g}d"]


def posterior_state(
    frames: dict[str, pd.DataFrame], cutoff: pd.Timestamp | str, horizon: float = 90.0, grid: int = 400
) -> pd.DataFrame:
    """The best churn probability any model can give from the data: P(no purchase in the horizon)
    under the world's true priors, given what the data shows before ``cutoff``.

    ``values_at`` knows who has silently left; no data does. This is the Bayes posterior of the
    generative story given each customer's observable attributes (type, income band, lifestyle,
    price sensitivity), first and last purchase, repeat purchase days and the order after which a
    complaint was opened: the purchase rate is Gamma (conjugate, times the attribute multipliers),
    the dropout probability Beta shifted by price sensitivity (integrated on ``grid`` quantiles).
    Customers without a purchase before the cutoff are left out.
    """
    from scipy.special import gammaln
    from scipy.stats import beta as beta_dist

    t = pd.Timestamp(cutoff)
    t = t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
    day = pd.Timedelta(days=1)
    p = frames["purchases"]
    p = p[(p["amount"] > 0) & (p["purchased_at"] < t)]
    g = p.groupby("customer_id")["purchased_at"]
    first, last = g.min(), g.max()
    days = p.assign(day=p["purchased_at"].dt.floor("D"))[["customer_id", "day"]].drop_duplicates()
    x = (days.groupby("customer_id").size() - 1).astype("float64")
    ids = first.index
    cust = frames["customers"].set_index("customer_id").reindex(ids)
    # Repeat orders from the complained order on (the complaint is opened a little after its order).
    c = frames["complaints"]
    opened = c[c["opened_at"] < t].groupby("customer_id")["opened_at"].min()
    after = pd.Series(0.0, index=ids)
    if len(opened):
        d = days[days["customer_id"].isin(opened.index)].copy()
        d["opened"] = opened.reindex(d["customer_id"]).to_numpy()
        order_day = d[d["day"] <= d["opened"]].groupby("customer_id")["day"].max()
        d["order_day"] = order_day.reindex(d["customer_id"]).to_numpy()
        after = after.add(d[d["day"] >= d["order_day"]].groupby("customer_id").size(), fill_value=0.0)
        after = after.reindex(ids).fillna(0.0)
    ctype = cust["customer_type"].astype("str").to_numpy()
    pr = {
        k: np.array([D.BGNBD.get(ct, D.BGNBD["consumer"])[k] for ct in ctype])
        for k in ("r", "alpha", "a", "b")
    }
    inc = cust.get("income_band", pd.Series(index=ids, dtype="str")).astype("str")
    life = cust.get("lifestyle_segment", pd.Series(index=ids, dtype="str")).astype("str")
    mult = (
        inc.map(D.INCOME_RATE_MULT).fillna(1.0).to_numpy()
        * life.map(D.LIFESTYLE_RATE_MULT).fillna(1.0).to_numpy()
    )
    consumer = ctype == "consumer"
    mult = np.where(consumer, mult, 1.0)
    ps = cust.get("price_sensitivity", pd.Series(0.5, index=ids)).astype("float64").fillna(0.5).to_numpy()
    r, alpha = pr["r"], pr["alpha"] / mult
    X, n_after = x.reindex(ids).to_numpy(), after.to_numpy()
    T = ((t - first) / day).to_numpy()
    tx = ((last - first) / day).to_numpy()
    # Dropout p on a grid of Beta quantiles per customer (equal weights).
    q = (np.arange(grid) + 0.5) / grid
    kinds, kind = np.unique(np.column_stack([pr["a"], pr["b"]]), axis=0, return_inverse=True)
    p0 = np.stack([beta_dist.ppf(q, a_, b_) for a_, b_ in kinds])[kind.ravel()]
    logit = np.log(np.clip(p0, 1e-6, 1 - 1e-6) / np.clip(1 - p0, 1e-6, 1))
    pd_ = np.clip(
        1 / (1 + np.exp(-(logit + D.PRICE_SENSITIVITY_DROPOUT_LOGIT * (ps[:, None] - 0.5)))), 1e-4, 0.995
    )
    keep = np.log1p(-pd_)  # log(1 - p)
    log_alive_p = X[:, None] * keep + n_after[:, None] * np.log(D.COMPLAINT_KEEP)
    p_last = np.where(n_after[:, None] > 0, 1 - (1 - pd_) * D.COMPLAINT_KEEP, pd_)
    log_dead_p = log_alive_p - np.log1p(-p_last) + np.log(p_last)
    with np.errstate(divide="ignore", invalid="ignore"):

        def log_mean_exp(a: np.ndarray) -> np.ndarray:
            m = a.max(axis=1)
            return m + np.log(np.exp(a - m[:, None]).mean(axis=1))

        def log_gamma_part(span: np.ndarray) -> np.ndarray:
            return gammaln(r + X) - gammaln(r) + r * np.log(alpha) - (r + X) * np.log(alpha + span)

        log_a = log_mean_exp(log_alive_p) + log_gamma_part(T)
        log_b = np.where(X > 0, log_mean_exp(log_dead_p) + log_gamma_part(tx), -np.inf)
        alive = 1 / (1 + np.exp(log_b - log_a))
        stay_quiet = ((alpha + T) / (alpha + T + horizon)) ** (r + X)
    return pd.DataFrame(
        {"p_alive": alive, f"churn_probability_{horizon:g}d": 1 - alive * (1 - stay_quiet)}, index=ids
    )


def posterior_response_probability(
    frames: dict[str, pd.DataFrame],
    cutoff: pd.Timestamp | str,
    contacts: pd.DataFrame,
    end_year: int,
    response_window: float = 14.0,
    grid: int = 41,
) -> np.ndarray:
    """The best response probability the data allows for ``contacts`` (customer_id, channel,
    action_id, treated; made at or after ``cutoff``), under the world's true response model.

    ``values_at``'s response probability knows each customer's responsiveness ``u`` and whether
    they have left. Here ``u`` has its posterior given the customer's earlier outcomes (outbound
    contacts whose response window closed before the cutoff; cross-sell actions left out, their
    effect depends on latent tastes) and being alive has its purchase posterior (certain for
    contacts before the last purchase). Observable: channel, action, preferred channel, age group
    in ``end_year`` (as the world assigns it), price sensitivity. Cross-sell contacts to predict
    are treated without their taste effect.
    """
    t = pd.Timestamp(cutoff)
    t = t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
    cust = frames["customers"].set_index("customer_id")
    ids = cust.index
    ag = pd.Series(age_group_index(cust["birth_year"].astype("float64").to_numpy(), end_year), index=ids)
    pref = (
        cust["preferred_channel"].astype("str") if "preferred_channel" in cust else pd.Series("", index=ids)
    )
    ps = (
        cust["price_sensitivity"].astype("float64").fillna(0.5)
        if "price_sensitivity" in cust
        else pd.Series(0.5, index=ids)
    )
    alive_now = (
        posterior_state(frames, t)["p_alive"].reindex(ids).fillna(1.0)
    )  # never bought: cannot have left
    p = frames["purchases"]
    last_buy = p[(p["amount"] > 0) & (p["purchased_at"] < t)].groupby("customer_id")["purchased_at"].max()

    def offset(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        who = rows["customer_id"].to_numpy()
        ch = rows["channel"].astype("str").to_numpy()
        action = rows["action_id"].astype("str").to_numpy()
        treated = rows["treated"].to_numpy(dtype=bool)
        base = np.array([D.RESPONSE_BASE.get(c, np.nan) for c in ch])
        eff = np.array([D.ACTIONS[a][2] if a in D.ACTIONS else 0.0 for a in action])
        kind = np.array([D.ACTIONS[a][0] if a in D.ACTIONS else "" for a in action])
        g = ag.reindex(who).fillna(6).astype(int).to_numpy()
        age = np.array([D.RESPONSE_AGE.get(c, (0.0,) * 7)[i] for c, i in zip(ch, g, strict=True)])
        voucher = np.isin(kind, ("retention", "win_back")) * D.RESPONSE_VOUCHER_PRICE_SENSITIVITY
        voucher = voucher * (ps.reindex(who).fillna(0.5).to_numpy() - 0.5)
        treated_logit = (
            base + eff + D.RESPONSE_PREFERRED_CHANNEL * (pref.reindex(who).to_numpy() == ch) + age + voucher
        )
        return np.where(treated, treated_logit, D.ORGANIC_BASE), np.where(
            treated, 1.0, D.RESPONSE_ORGANIC_INDIVIDUAL
        )

    u = np.linspace(-4, 4, grid) * D.RESPONSE_INDIVIDUAL_SD
    log_post = np.tile(-0.5 * (u / D.RESPONSE_INDIVIDUAL_SD) ** 2, (len(ids), 1))
    k = frames["contacts"]
    closed = t - pd.Timedelta(days=response_window)
    hist = k[(k["direction"] == "outbound") & (k["contacted_at"] <= closed) & k["customer_id"].isin(ids)]
    hist = hist[~hist["action_id"].astype("str").str.startswith("xsell_")]
    if len(hist):
        hist = hist.assign(treated=~hist["is_control"].astype("boolean").fillna(False).to_numpy(dtype=bool))
        off, slope = offset(hist)
        y = hist["outcome"].isin(["responded", "converted"]).to_numpy()
        before_last = (hist["contacted_at"] <= last_buy.reindex(hist["customer_id"]).to_numpy()).to_numpy(
            dtype=bool
        )
        a = np.where(before_last, 1.0, alive_now.reindex(hist["customer_id"]).to_numpy())
        z = off[:, None] + slope[:, None] * u[None, :]
        p_resp = a[:, None] / (1 + np.exp(-z)) + (1 - a[:, None]) / (1 + np.exp(-(z + D.RESPONSE_DEAD)))
        ll = np.log(np.where(y[:, None], p_resp, 1 - p_resp))
        np.add.at(log_post, ids.get_indexer(hist["customer_id"]), ll)
    w = np.exp(log_post - log_post.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    at = ids.get_indexer(contacts["customer_id"])
    off, slope = offset(contacts)
    z = off[:, None] + slope[:, None] * u[None, :]
    a = alive_now.to_numpy()[at][:, None]
    p_resp = a / (1 + np.exp(-z)) + (1 - a) / (1 + np.exp(-(z + D.RESPONSE_DEAD)))
    return (w[at] * p_resp).sum(axis=1)


def contact_probabilities(
    params: pd.DataFrame,
    customer_ids: np.ndarray,
    action_ids: np.ndarray,
    channels: np.ndarray,
    at: pd.Timestamp | str | np.ndarray | pd.Series,
    effect: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The true probability of a response (``responded`` or ``converted``) to a first contact of
    ``action_ids[i]`` on ``channels[i]`` made to ``customer_ids[i]`` at ``at`` (one instant, or
    one per row), with the contact and without it: ``(p_treated, p_control)``.

    The formula of the monthly campaigns (``_marketing.run_campaigns``), for any action of
    ``design.ACTIONS`` on any of the world's channels and any moment: logit ``RESPONSE_BASE[channel]
    + the action's effect + RESPONSE_PREFERRED_CHANNEL [preferred channel] + RESPONSE_AGE[channel]
    [age group] + responsiveness + voucher x (price sensitivity - 0.5) + cross-sell x log(8 share
    of the category)`` treated, ``ORGANIC_BASE + RESPONSE_ORGANIC_INDIVIDUAL responsiveness``
    (+ ``SURE_THING_ORGANIC`` for a sure thing who has not left) without the contact; both
    ``+ RESPONSE_DEAD`` once the customer has left (``death_at`` before the contact). A sure thing
    contacted responds with the larger of the two chances. ``effect`` False (``--no-effect``):
    the treated respond as the control. For the world's own campaign contacts this gives
    ``load_contact_truth``'s probabilities. An action or channel the world does not know gives NaN.
    ``params``: ``load_truth``'s frame (or its parameter columns), one row per customer.
    """
    ids = np.asarray(customer_ids, dtype=object)
    action = np.asarray(action_ids, dtype=object)
    channel = np.asarray(channels, dtype=object)
    index = pd.Index(params["customer_id"].to_numpy())
    row = index.get_indexer(ids)
    if (row < 0).any():
        raise KeyError(f"{int((row < 0).sum())} customers are not in the truth (first: {ids[row < 0][0]!r})")
    when = pd.DatetimeIndex(
        pd.to_datetime(np.asarray(at).reshape(-1) if np.ndim(at) else [at] * len(ids), utc=True)
    )
    death = pd.DatetimeIndex(pd.to_datetime(params["death_at"], utc=True))[row]
    dead = np.asarray(death < when, dtype=bool)  # never left (NaT): False
    u = params["response_individual"].to_numpy(dtype="float64")[row]
    ps = params["price_sensitivity"].to_numpy(dtype="float64")[row]
    pref = params["preferred_channel"].to_numpy(dtype=object)[row]
    ag = pd.Categorical(params["age_group"], categories=list(D.AGE_BANDS)).codes[row]
    sure = (
        params["sure_thing"].to_numpy(dtype=bool)[row] if "sure_thing" in params else np.zeros(len(ids), bool)
    )
    shares = {c: params[f"category_share_{c}"].to_numpy(dtype="float64")[row] for c in D.CATEGORIES}
    logit_t = np.full(len(ids), np.nan)
    for a, (kind, _chans, a_eff, a_cat) in D.ACTIONS.items():
        for ch in D.CHANNELS:
            m = (action == a) & (channel == ch)
            if not m.any():
                continue
            extra = np.zeros(int(m.sum()))
            if kind in ("retention", "win_back"):
                extra += D.RESPONSE_VOUCHER_PRICE_SENSITIVITY * (ps[m] - 0.5)
            if a_cat is not None:
                extra += D.RESPONSE_AFFINITY * np.log(len(D.CATEGORIES) * shares[a_cat][m])
            logit_t[m] = (
                D.RESPONSE_BASE[ch]
                + a_eff
                + D.RESPONSE_PREFERRED_CHANNEL * (pref[m] == ch)
                + np.asarray(D.RESPONSE_AGE[ch])[ag[m]]
                + u[m]
                + extra
            )
    logit_c = D.ORGANIC_BASE + D.RESPONSE_ORGANIC_INDIVIDUAL * u + D.SURE_THING_ORGANIC * (sure & ~dead)
    known = np.isfinite(logit_t)
    p_control = 1.0 / (1.0 + np.exp(-(logit_c + D.RESPONSE_DEAD * dead)))
    p_treated = 1.0 / (1.0 + np.exp(-(logit_t + D.RESPONSE_DEAD * dead))) if effect else p_control.copy()
    p_treated = np.where(sure, np.maximum(p_treated, p_control), p_treated)
    return np.where(known, p_treated, np.nan), np.where(known, p_control, np.nan)
