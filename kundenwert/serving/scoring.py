"""Model scores of every customer from a snapshot: what arbitration, the sales view, target lists
and campaign scoring read.

Customers who object (``*`` record: no marketing and no profiling, GDPR Art. 21) are not scored at
all: no row of theirs is computed or stored. Churn risk is given for active customers and win-back
chances for lapsed ones (the populations the models learnt from); P(alive) comes from BG/NBD fitted
on the same snapshot (it needs no labels).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kundenwert.errors import ModelFitError
from kundenwert.features.labels import customer_status
from kundenwert.serving.catalog import Catalog

PROFILE = ("customer_type", "age_group", "region")
FACTS = ("monetary_value", "frequency", "days_since_last_purchase")


def pairs_of(catalog: Catalog) -> list[tuple[str, str]]:
    """Every (action_id, channel) the catalog can suggest."""
    return [(a.id, ch) for a in catalog.actions for ch in a.channels]


def score_snapshot(
    X: pd.DataFrame,
    status: pd.Series,
    models: dict[str, object],
    catalog: Catalog,
    objecting: pd.Index | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scores, propensity) of the customers of snapshot ``X`` (indexed by ``customer_id``).

    ``scores``: one row per customer: ``status``, profile, ``open_complaint``, facts, ``clv``,
    ``p_alive``, ``churn`` (active only), ``winback`` (lapsed only), ``affinity_<category>``.
    ``propensity``: per (customer_id, action_id, channel): ``response`` if contacted and ``uplift``.
    ``models``: fitted ``clv``, ``churn``, ``winback``, ``affinity``, ``response`` estimators.
    """
    from kundenwert.models.btyd import BTYDModel

    if objecting is not None and len(objecting):
        X = X[~X.index.isin(objecting)]
    scores = pd.DataFrame(index=X.index)
    scores["status"] = status.reindex(X.index).fillna("new").astype(str).to_numpy()
    for c in PROFILE:
        scores[c] = X[c].astype(str).to_numpy() if c in X.columns else "unknown"
    scores["open_complaint"] = X["open_complaints"].fillna(0).to_numpy() > 0
    for c in FACTS:
        scores[c] = X[c].to_numpy(dtype="float64", na_value=np.nan)
    scores["clv"] = models["clv"].predict(X)
    try:
        scores["p_alive"] = BTYDModel().fit(X).predict(X)["p_alive"].to_numpy(dtype="float64")
    except ModelFitError:
        scores["p_alive"] = np.nan  # too few repeat buyers for BG/NBD: shown as unknown
    active = (scores["status"] == "active").to_numpy()
    lapsed = (scores["status"] == "lapsed").to_numpy()
    scores["churn"] = np.where(active, models["churn"].predict_proba(X)[:, 1], np.nan)
    scores["winback"] = np.where(lapsed, models["winback"].predict_proba(X)[:, 1], np.nan)
    affinity = models["affinity"].predict_frame(X)
    for c in affinity.columns:
        scores[c] = affinity[c].to_numpy()
    propensity = models["response"].predict_actions(X, pairs_of(catalog))
    return scores, propensity


def status_at(frames: dict[str, pd.DataFrame], at, activity_window: int = 180) -> pd.Series:
    return customer_status(frames["customers"], frames["purchases"], at, activity_window)


def category_margins(purchases: pd.DataFrame) -> dict[str, float]:
    """Margin rate per category (margin / amount over positive purchases with a margin)."""
    p = purchases[(purchases["amount"] > 0) & purchases["margin"].notna() & purchases["category"].notna()]
    sums = p.groupby("category", observed=True)[["margin", "amount"]].sum()
    return {str(k): float(v) for k, v in (sums["margin"] / sums["amount"]).items()}


def decision_inputs(
    scores: pd.DataFrame,
    propensity: pd.DataFrame,
    frames: dict[str, pd.DataFrame],
    now,
    response_window: int = 14,
):
    """Arbitration inputs: the precomputed scores with consent, pressure and ignored offers at ``now``."""
    from kundenwert.serving.arbitration import Inputs
    from kundenwert.serving.live import consent_now, contact_pressure, ignored_offers

    return Inputs(
        customers=scores,
        consent=consent_now(frames["consents"], now),
        pressure=contact_pressure(frames["contacts"], now),
        ignored=ignored_offers(frames["contacts"], now, response_window),
        propensity=propensity,
        margins=category_margins(frames["purchases"]),
    )
