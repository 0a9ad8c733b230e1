"""Reasons: each customer's top SHAP contributions, in plain sentences from the feature catalogue.

SHAP values come from ``shap.TreeExplainer`` on the booster (exact TreeSHAP, path-dependent, in
log-odds for classifiers), for all customers at once. A reason names the feature, the customer's
value, the contribution and whether it raises or lowers the score: "no purchase for 212 days
(raises)". Large batches are split over processes (TreeSHAP holds the GIL).
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

from kundenwert.features.catalogue import describe, reason
from kundenwert.threads import budget

PARALLEL_FROM = 4_000  # rows from which explaining is split over processes


def _parts(model, target: str | None):
    """(booster, encoder) of a fitted kundenwert tree model; ``target`` picks an affinity category."""
    if hasattr(model, "models_"):  # AffinityModel
        if target is None:
            raise ValueError(f"name the category to explain: one of {', '.join(model.models_)}")
        if target not in model.models_:
            raise ValueError(f"unknown category {target!r}; the model has {', '.join(model.models_)}")
        model = model.models_[target]
    if not hasattr(model, "booster_"):
        raise TypeError(f"{type(model).__name__} is not a fitted kundenwert tree model")
    return model.booster_, model.encoder_


def _shap_values(booster, Z: np.ndarray) -> tuple[np.ndarray, float]:
    import shap

    explainer = shap.TreeExplainer(booster)
    values = np.asarray(explainer.shap_values(Z, check_additivity=False))
    base = np.atleast_1d(np.asarray(explainer.expected_value, dtype="float64"))[-1]
    return (values[..., 1] if values.ndim == 3 else values), float(base)


def shap_values(model, X: pd.DataFrame, target: str | None = None, jobs: int | None = None) -> pd.DataFrame:
    """SHAP values (customers x features, log-odds for classifiers), in processes for big batches.

    ``attrs["base_value"]`` is the expected score: base value + a row's sum = the booster's score.
    """
    booster, encoder = _parts(model, target)
    Z = encoder.transform(X)
    jobs = jobs or min(budget(), 4)  # processes within the thread budget (one thread each)
    if jobs > 1 and len(Z) >= PARALLEL_FROM:
        size = math.ceil(len(Z) / jobs)
        chunks = [Z[i : i + size] for i in range(0, len(Z), size)]
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            done = list(pool.map(_shap_values, [booster] * len(chunks), chunks))
        values, base = np.vstack([v for v, _ in done]), done[0][1]
    else:
        values, base = _shap_values(booster, Z)
    out = pd.DataFrame(values, index=X.index, columns=list(encoder.feature_names_in_))
    out.attrs["base_value"] = base
    return out


def _sentence(name: str, value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        if name.startswith("days_since_last_"):  # "no complaint so far"
            return f"no {name.removeprefix('days_since_last_').replace('_', ' ')} so far"
        return f"{describe(name).meaning}: none recorded"
    return reason(name, value)


def explain(
    model, X: pd.DataFrame, top_k: int = 3, target: str | None = None, jobs: int | None = None
) -> pd.DataFrame:
    """Each customer's ``top_k`` reasons, largest absolute contribution first.

    One row per (customer, rank): ``feature``, the customer's ``value``, ``contribution``
    (log-odds), ``direction`` (raises / lowers) and ``reason`` (a sentence).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, not {top_k}")
    sv = shap_values(model, X, target, jobs)
    names = np.asarray(sv.columns, dtype=object)
    values = sv.to_numpy()
    k = min(top_k, values.shape[1])
    top = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k]
    rows = np.repeat(np.arange(len(X)), k)
    cols = top.ravel()
    contribution = values[rows, cols]
    feature = names[cols]
    original = [X.iat[r, X.columns.get_loc(f)] for r, f in zip(rows, feature, strict=True)]
    return pd.DataFrame(
        {
            "customer_id": np.asarray(X.index.get_level_values(-1))[rows],
            "rank": np.tile(np.arange(1, k + 1), len(X)),
            "feature": feature,
            "value": original,
            "contribution": contribution,
            "direction": np.where(contribution >= 0, "raises", "lowers"),
            "reason": [_sentence(f, v) for f, v in zip(feature, original, strict=True)],
        }
    )
