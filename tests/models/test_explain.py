"""Reasons: exact SHAP values on the booster's scale, ordered, in sentences, the same in processes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kundenwert.features.labels import labels_at
from kundenwert.features.snapshot import snapshot
from kundenwert.models import explain as E
from kundenwert.models.affinity import AffinityModel
from kundenwert.models.tabular import ChurnModel

CUTOFF = pd.Timestamp("2025-03-01", tz="UTC")


@pytest.fixture(scope="module")
def fitted(imported_world):
    frames, _ = imported_world(3_000, 5)
    X, y = snapshot(frames, CUTOFF), labels_at(frames, CUTOFF)
    active = y.index[y["status"] == "active"]
    churn = ChurnModel(calibration="none", max_iter=60).fit(X.loc[active], y.loc[active, "churn"])
    aff = AffinityModel(max_iter=30).fit(X, y[["affinity_electronics", "affinity_fashion"]])
    return X.loc[active], churn, aff


def test_shap_values_add_up_to_the_score(fitted) -> None:
    X, churn, _ = fitted
    sv = E.shap_values(churn, X, jobs=1)
    np.testing.assert_allclose(sv.sum(axis=1) + sv.attrs["base_value"], churn.decision_function(X), atol=1e-6)


def test_top_reasons_are_ordered_sentences(fitted) -> None:
    X, churn, _ = fitted
    reasons = E.explain(churn, X, top_k=3, jobs=1)
    assert len(reasons) == 3 * len(X) and list(reasons["rank"][:3]) == [1, 2, 3]
    size = reasons["contribution"].abs().to_numpy().reshape(-1, 3)
    assert (np.diff(size, axis=1) <= 1e-12).all()
    assert not reasons["reason"].str.contains("nan|None|\\{", regex=True).any()
    assert set(reasons["direction"]) <= {"raises", "lowers"}
    # The recency feature leads for many customers, with the catalogue's sentence and its value.
    lead = reasons[(reasons["rank"] == 1) & (reasons["feature"] == "days_since_last_purchase")]
    assert len(lead) > len(X) / 10
    row = lead.iloc[0]
    assert row["reason"] == f"no purchase for {row['value']:.0f} days"
    assert row["value"] == X.loc[row["customer_id"], "days_since_last_purchase"]


def test_processes_give_the_same_values(fitted, monkeypatch) -> None:
    X, churn, _ = fitted
    monkeypatch.setattr(E, "PARALLEL_FROM", 10)
    pd.testing.assert_frame_equal(E.shap_values(churn, X, jobs=2), E.shap_values(churn, X, jobs=1))


def test_affinity_needs_a_category(fitted) -> None:
    X, _, aff = fitted
    with pytest.raises(ValueError, match="electronics"):
        E.explain(aff, X)
    assert len(E.explain(aff, X.iloc[:5], top_k=2, target="fashion")) == 10
    with pytest.raises(TypeError, match="not a fitted"):
        E.explain(object(), X)
