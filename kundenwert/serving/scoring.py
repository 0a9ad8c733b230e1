"""Model scores of every customer from a snapshot: what arbitration, the sales view, target lists
and campaign scoring read.

Customers who object (``*`` record: no marketing and no profiling, GDPR Art. 21) are not scored at
all: no row of theirs is computed or stored. Churn risk is given for active customers and win-back
chances for lapsed ones (the populations the models learnt from); P(alive) comes from BG/NBD fitted
on the same snapshot (it needs no labels).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd

from kundenwert.errors import ConfigurationError, ModelFitError
from kundenwert.features.labels import customer_status
from kundenwert.models.specs import SPECS, ModelSpec
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
    reasons: bool = True,
    fit_p_alive: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scores, propensity) of the customers of snapshot ``X`` (indexed by ``customer_id``).

    ``scores``: one row per customer: ``status``, profile, ``open_complaint``, facts, ``p_alive``
    and what each model's spec stores (``ModelSpec.stores``: e.g. ``clv``, ``churn`` for active
    customers only, ``winback`` for lapsed ones, ``affinity_<category>``).
    ``propensity``: from the one spec storing per-action propensities, per (customer_id,
    action_id, channel) the customer is eligible for (the catalog's status, type, complaint and
    score rules): ``response`` if contacted, and ``uplift`` when a formula of the catalog uses it
    (it costs a second pass).
    ``reasons``: also each spec's ``reasons_<name>`` for its population (e.g. ``reasons_churn``,
    ``reasons_value``: what drives bringing any value in the CLV horizon): each customer's top
    three SHAP factors as JSON sentences.
    ``models``: a fitted estimator per registered spec, by name.
    ``fit_p_alive``: fit BG/NBD on these customers for P(alive) (needs many; else unknown).
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
    specs = list(SPECS.values())
    missing = [s.name for s in specs if s.name not in models]
    if missing:
        raise ConfigurationError(
            f"scoring needs a fitted model for every spec; missing: {', '.join(missing)} "
            "(train them, or load the champions)"
        )
    populations = {
        "all": np.ones(len(X), dtype=bool),
        "active": (scores["status"] == "active").to_numpy(),
        "lapsed": (scores["status"] == "lapsed").to_numpy(),
    }
    for spec in specs:  # each model for its population only
        _store_scores(scores, spec, models[spec.name], X, populations[spec.stores.population])
    scores["p_alive"] = np.nan  # unknown: too few repeat buyers, or too few customers to fit
    if fit_p_alive:
        with contextlib.suppress(ModelFitError):
            scores["p_alive"] = BTYDModel().fit(X).predict(X)["p_alive"].to_numpy(dtype="float64")
    if reasons:
        for spec in (s for s in specs if s.stores.reasons):
            explained = (spec.stores.explained or (lambda m: m))(models[spec.name])
            scores[f"reasons_{spec.stores.reasons}"] = _reasons(
                explained, X, populations[spec.stores.population]
            )
    per_action = [(s, s.stores.per_action) for s in specs if s.stores.per_action is not None]
    if len(per_action) != 1:
        raise ConfigurationError(
            "exactly one model spec must store per-action propensities (Stored.per_action); "
            f"found: {', '.join(s.name for s, _ in per_action) or 'none'}"
        )
    uses_uplift = any(
        "uplift" in a.formula(f).names for a in catalog.actions for f in ("value", "propensity")
    )
    # the propensity model only for the pairs each customer is eligible for: eligibility comes
    # first in the funnel, so the other pairs never need a propensity (measured: 44% of the
    # customer-pairs of the sample world are eligible)
    from kundenwert.serving.arbitration import eligibility

    eligible, _ = eligibility(catalog.actions, scores)
    position = {a.id: i for i, a in enumerate(catalog.actions)}
    pairs = pairs_of(catalog)
    rows = {(a, ch): eligible[:, position[a]] == 0 for a, ch in pairs}
    ((spec, predict_actions),) = per_action
    propensity = predict_actions(models[spec.name], X, pairs, uplift=uses_uplift, rows=rows)
    return scores, propensity


def _store_scores(scores: pd.DataFrame, spec: ModelSpec, model, X: pd.DataFrame, rows: np.ndarray) -> None:
    """The columns ``spec.stores`` says into ``scores``: the model's scores of ``rows``, missing
    for the other rows (a frame of scores is stored column by column)."""
    stored, predict = spec.stores, spec.stores.predict
    if predict is None:
        return
    out = predict(model, X if rows.all() else X[rows]) if rows.any() else None
    if isinstance(out, pd.DataFrame):
        for c in out.columns:
            values = np.full(len(X), np.nan)
            values[rows] = out[c].to_numpy(dtype="float64")
            scores[c] = values
        return
    values = np.full(len(X), np.nan)
    if out is not None:
        values[rows] = np.asarray(out, dtype="float64")
    scores[stored.column or spec.name] = values


def _reasons(model, X: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """Top three SHAP reasons of ``rows`` of ``X`` as JSON text (None for the other rows)."""
    import json

    from kundenwert.models.explain import explain

    out = np.full(len(X), None, dtype=object)
    if not rows.any():
        return out
    ex = explain(model, X[rows], top_k=3)
    texts = [
        json.dumps([{"reason": r, "direction": d} for r, d in zip(g["reason"], g["direction"], strict=True)])
        for _, g in ex.groupby("customer_id", sort=False)
    ]
    out[np.flatnonzero(rows)] = texts  # explain keeps the order of its rows
    return out


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


def load_champions(alias: str = "champion") -> tuple[dict[str, object], dict[str, str]]:
    """Every model's champion from the registry (a model is a spec): (estimators, versions)."""
    from kundenwert.experiments.registry import load_champion

    models, versions = {}, {}
    for name in SPECS:
        models[name], versions[name] = load_champion(name, alias)
    return models, versions


def as_of(frames: dict[str, pd.DataFrame], now=None) -> pd.Timestamp:
    """The scoring date: ``now`` when given, else the day after the latest purchase or contact
    (today on live data; the end of a sample world, whose clock stopped)."""
    if now is not None:
        t = pd.Timestamp(now)
        return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
    last = max(frames["purchases"]["purchased_at"].max(), frames["contacts"]["contacted_at"].max())
    return min(pd.Timestamp.now(tz="UTC"), (last + pd.Timedelta(days=1)).normalize())


def run_scoring(store, catalog: Catalog, at=None, progress=None) -> dict:
    """``kundenwert score``: snapshot at ``at``, champions from the registry, scores into the store."""
    from kundenwert.features.snapshot import load_frames, snapshot
    from kundenwert.serving.live import consent_now
    from kundenwert.serving.scores_store import write_scores

    say = progress or (lambda _m: None)
    say("reading the store")
    frames = load_frames(store)
    t = as_of(frames, at)
    catalog.check_names(sorted(category_margins(frames["purchases"])))
    say("loading the champion models")
    models, versions = load_champions()
    say(f"snapshot at {t:%Y-%m-%d}")
    X = snapshot(frames, t)
    consent = consent_now(frames["consents"], t)
    objecting = consent.index[consent["objection"].to_numpy()]
    say(f"scoring {len(X):,} customers")
    scores, propensity = score_snapshot(X, status_at(frames, t), models, catalog, objecting)
    say("writing the scores")
    run_id = write_scores(store.engine, scores, propensity, t, versions)
    return {
        "run_id": run_id,
        "at": t,
        "customers": len(scores),
        "not_profiled": int(X.index.isin(objecting).sum()),
        "pairs": len(pairs_of(catalog)),
        "models": versions,
    }


def score_customers(
    store,
    customer_ids: list[str],
    models: dict[str, object],
    catalog: Catalog,
    spec,
    at,
    reasons: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``score_snapshot`` for some customers only, read through the customer indexes: the
    online scoring of customers the current run does not hold (registered since). ``spec``: the
    column sets of the whole store (``spec_from_store``), so the models get their training
    columns. Objecting customers are not scored; P(alive) needs a BG/NBD fit over many customers
    and is left unknown here."""
    from kundenwert.features.snapshot import FEATURE_COLUMNS, snapshot_shard
    from kundenwert.serving.live import consent_now

    tables = ("customers", "purchases", "contacts", "consents", "complaints", "offers")
    frames = store.read_tables_for_customers(tables, customer_ids, FEATURE_COLUMNS)
    t = pd.Timestamp(at)
    X = snapshot_shard(frames, t, spec)
    consent = consent_now(frames["consents"], t)
    objecting = consent.index[consent["objection"].to_numpy()]
    X = X[~X.index.isin(objecting)]
    if X.empty:  # nobody to score: not registered before ``at``, or objecting
        return pd.DataFrame(index=X.index), pd.DataFrame(
            columns=["response"],
            index=pd.MultiIndex.from_tuples([], names=["customer_id", "action_id", "channel"]),
        )
    return score_snapshot(X, status_at(frames, t), models, catalog, reasons=reasons, fit_p_alive=False)
