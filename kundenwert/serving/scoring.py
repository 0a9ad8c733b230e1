"""Model scores of every customer from a snapshot: what arbitration, the sales view, target lists
and campaign scoring read.

Customers who object (``*`` record: no marketing and no profiling, GDPR Art. 21) are not scored at
all: no row of theirs is computed or stored. Churn risk is given for active customers and win-back
chances for lapsed ones (the populations the models learnt from); P(alive) comes from BG/NBD fitted
on the same snapshot (it needs no labels).

A run scores with the models that have a champion (a CRM without purchases trains the response
model only): it stores what they give and records their versions; the scores of the others are
absent, and the catalog actions needing them are not suggested (``Catalog.unavailable``). The
response model is the one a run cannot do without: every suggestion needs its per-action
propensities.
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
    p_alive_model: object | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scores, propensity) of the customers of snapshot ``X`` (indexed by ``customer_id``).

    ``scores``: one row per customer: ``status``, profile, ``open_complaint``, facts, ``p_alive``
    and what each model's spec stores (``ModelSpec.stores``: e.g. ``clv``, ``churn`` for active
    customers only, ``winback`` for lapsed ones, ``affinity_<category>``).
    ``propensity``: from the one spec storing per-action propensities, per (customer_id,
    action_id, channel) the customer is eligible for (the catalog's status, type, complaint and
    score rules): ``response`` if contacted, and ``uplift`` where the model learnt it (the actions
    its training rows held control rows for; a second pass over those pairs).
    ``reasons``: also each spec's ``reasons_<name>`` for its population (e.g. ``reasons_churn``,
    ``reasons_value``: what drives bringing any value in the CLV horizon): each customer's top
    three SHAP factors as JSON sentences.
    ``models``: a fitted estimator by spec name: every spec's, or some of them (the specs without
    one store nothing; the one storing per-action propensities is required).
    ``fit_p_alive``: fit BG/NBD on these customers for P(alive) (needs many; else unknown).
    ``p_alive_model``: a BG/NBD fitted beforehand (``BTYDModel``) to predict P(alive) with instead:
    a distributed run fits it once over all customers and scores its parts with it.
    """
    if objecting is not None and len(objecting):
        X = X[~X.index.isin(objecting)]
    scores = pd.DataFrame(index=X.index)
    scores["status"] = status.reindex(X.index).fillna("new").astype(str).to_numpy()
    for c in PROFILE:
        scores[c] = X[c].astype(str).to_numpy() if c in X.columns else "unknown"
    scores["open_complaint"] = X["open_complaints"].fillna(0).to_numpy() > 0
    for c in FACTS:
        scores[c] = X[c].to_numpy(dtype="float64", na_value=np.nan)
    acting = per_action_spec()
    if acting.name not in models:
        raise ConfigurationError(
            f"scoring needs the {acting.name} model (every suggestion needs its per-action "
            f"propensities); models given: {', '.join(models) or 'none'}"
        )
    specs = [s for s in SPECS.values() if s.name in models]  # the others store nothing
    populations = {
        "all": np.ones(len(X), dtype=bool),
        "active": (scores["status"] == "active").to_numpy(),
        "lapsed": (scores["status"] == "lapsed").to_numpy(),
    }
    for spec in specs:  # each model for its population only
        _store_scores(scores, spec, models[spec.name], X, populations[spec.stores.population])
    scores["p_alive"] = np.nan  # unknown: too few repeat buyers, or too few customers to fit
    if p_alive_model is not None:
        scores["p_alive"] = p_alive_model.predict(X)["p_alive"].to_numpy(dtype="float64")  # type: ignore[attr-defined]
    elif fit_p_alive:
        with contextlib.suppress(ModelFitError):
            scores["p_alive"] = fit_p_alive_model(X).predict(X)["p_alive"].to_numpy(dtype="float64")
    if reasons:
        for spec in (s for s in specs if s.stores.reasons):
            explained = (spec.stores.explained or (lambda m: m))(models[spec.name])
            scores[f"reasons_{spec.stores.reasons}"] = _reasons(
                explained, X, populations[spec.stores.population]
            )
    # the uplift (response with the contact minus without) of every action the model learnt it
    # for: formulas may rank by it, and target lists keep it, so that their results can say
    # whether the model's ranking helped (the Qini of what was predicted when the list was made)
    uses_uplift = True
    # the propensity model only for the pairs each customer is eligible for: eligibility comes
    # first in the funnel, so the other pairs never need a propensity (measured: 44% of the
    # customer-pairs of the sample world are eligible)
    from kundenwert.serving.arbitration import eligibility

    # (and not for actions needing a score no model of the run gives: they are never suggested)
    eligible, _ = eligibility(catalog.actions, scores, unavailable=catalog.unavailable(models))
    position = {a.id: i for i, a in enumerate(catalog.actions)}
    pairs = pairs_of(catalog)
    rows = {(a, ch): eligible[:, position[a]] == 0 for a, ch in pairs}
    predict_actions = acting.stores.per_action
    assert predict_actions is not None  # as selected by per_action_spec
    propensity = predict_actions(models[acting.name], X, pairs, uplift=uses_uplift, rows=rows)
    return scores, propensity


def fit_p_alive_model(X: pd.DataFrame, sample_weight: np.ndarray | None = None):
    """The BG/NBD behind a run's P(alive), fitted on the snapshot ``X`` (or on its distinct rows
    with their counts as ``sample_weight``: the same parameters); raises ``ModelFitError`` when
    the data cannot support one."""
    from kundenwert.models.btyd import BTYDModel

    return BTYDModel().fit(X, sample_weight=sample_weight)


def per_action_spec() -> ModelSpec:
    """The one spec storing per-action propensities (``Stored.per_action``: the response model)."""
    found = [s for s in SPECS.values() if s.stores.per_action is not None]
    if len(found) != 1:
        raise ConfigurationError(
            "exactly one model spec must store per-action propensities (Stored.per_action); "
            f"found: {', '.join(s.name for s in found) or 'none'}"
        )
    return found[0]


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
    """The champion of every model that has one (a model is a spec): (estimators, versions). A
    model without a champion is left out (training skips the models the data does not support);
    ``missing_models`` names them."""
    from kundenwert.experiments.registry import alias_version, load_version

    models, versions = {}, {}
    for name in SPECS:
        version = alias_version(name, alias)
        if version is None:  # no version has the alias (a champion that fails to load raises)
            continue
        models[name], versions[name] = load_version(name, version), version
    return models, versions


def missing_models(used) -> list[str]:
    """The registered models a scoring run had none of, in spec order."""
    return [name for name in SPECS if name not in used]


def as_of(frames: dict[str, pd.DataFrame], now=None) -> pd.Timestamp:
    """The scoring date: ``now`` when given, else the day after the latest purchase or contact
    (today on live data; the end of a sample world, whose clock stopped; today when the store
    holds neither)."""
    today = pd.Timestamp.now(tz="UTC")
    if now is not None:
        t = pd.Timestamp(now)
        return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
    seen = [frames["purchases"]["purchased_at"].max(), frames["contacts"]["contacted_at"].max()]
    seen = [t for t in seen if pd.notna(t)]  # an empty table has no latest row
    if not seen:
        return today.normalize()
    return min(today, (max(seen) + pd.Timedelta(days=1)).normalize())


def objecting_then_or_now(consents: pd.DataFrame, at) -> pd.Index:
    """The customers who object at ``at`` (the scores' date) or at this moment: an objection
    recorded after a scoring date still forbids profiling today (an earlier ``--at``, or a sample
    world whose clock stopped)."""
    from kundenwert.serving.live import consent_now

    then = consent_now(consents, at)
    now = consent_now(consents, max(pd.Timestamp(at), pd.Timestamp.now(tz="UTC")))
    return then.index[then["objection"].to_numpy()].union(now.index[now["objection"].to_numpy()])


def run_scoring(store, catalog: Catalog, at=None, progress=None) -> dict:
    """``kundenwert score``: snapshot at ``at``, champions from the registry, scores into the store."""
    from kundenwert.features.snapshot import load_frames, snapshot
    from kundenwert.serving.scores_store import write_scores

    say = progress or (lambda _m: None)
    say("reading the store")
    frames = load_frames(store)
    t = as_of(frames, at)
    margins = category_margins(frames["purchases"])
    catalog.check_names(sorted(margins))
    say("loading the champion models")
    models, versions = load_champions()
    missing = missing_models(models)
    if not models:
        raise ConfigurationError(
            f"no champion for any model ({', '.join(missing)}): run `kundenwert train` first"
        )
    needed = per_action_spec().name
    if needed not in models:  # refused before the snapshot, not after
        raise ConfigurationError(
            f"no champion for {needed}: every suggestion needs its per-action propensities "
            f"(champions: {', '.join(models)}); run `kundenwert train` on data with contacts"
        )
    if missing:
        say(f"no champion for {', '.join(missing)}: their scores are not stored")
    say(f"snapshot at {t:%Y-%m-%d}")
    X = snapshot(frames, t)
    objecting = objecting_then_or_now(frames["consents"], t)
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
        "missing_models": missing,
        "unavailable_actions": catalog.unavailable(versions, margins),
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

    tables = ("customers", "purchases", "contacts", "consents", "complaints", "offers")
    frames = store.read_tables_for_customers(tables, customer_ids, FEATURE_COLUMNS)
    t = pd.Timestamp(at)
    X = snapshot_shard(frames, t, spec)
    objecting = objecting_then_or_now(frames["consents"], t)
    X = X[~X.index.isin(objecting)]
    if X.empty:  # nobody to score: not registered before ``at``, or objecting
        return pd.DataFrame(index=X.index), pd.DataFrame(
            columns=["response"],
            index=pd.MultiIndex.from_tuples([], names=["customer_id", "action_id", "channel"]),
        )
    return score_snapshot(X, status_at(frames, t), models, catalog, reasons=reasons, fit_p_alive=False)
