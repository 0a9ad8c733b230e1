"""Machine-learned CLV against BTYD, a naive baseline and the truth; its behaviour and errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kundenwert.datasets import design as D
from kundenwert.datasets.truth import load_truth, values_at
from kundenwert.errors import ModelFitError
from kundenwert.features.labels import LabelConfig
from kundenwert.features.training_set import build_training_set
from kundenwert.models.btyd import BTYDModel
from kundenwert.models.clv import CLVModel, compare_clv

TEST_CUTOFF = pd.Timestamp("2024-12-01", tz="UTC")  # its 365-day label window ends before the data
TRAIN_CUTOFFS = [pd.Timestamp(t, tz="UTC") for t in ("2023-08-01", "2023-10-01", "2023-12-01")]


@pytest.fixture(scope="module")
def world(imported_world):
    frames, folder = imported_world(20_000, 9)
    labels = LabelConfig(clv_horizon=365, clv_value="revenue", discount_rate=0.1)
    ts = build_training_set(frames, [*TRAIN_CUTOFFS, TEST_CUTOFF], label_config=labels)
    features = [c for c in ts.columns if not c.startswith("label_")]
    cut = ts.index.get_level_values("cutoff")
    train, test = ts[cut != TEST_CUTOFF], ts[cut == TEST_CUTOFF].droplevel("cutoff")
    model = CLVModel().fit(train[features], train["label_clv"])
    return {"model": model, "X": test[features], "y": test["label_clv"], "folder": folder}


def test_side_by_side_with_btyd_baseline_and_truth(world) -> None:
    """All customers known at the test cutoff, 365 days of discounted net revenue: the boosted
    model beats last year's value carried forward on every metric and BTYD on MAE and on the
    share of the true top 20% it finds. The truth's expected spend is printed for scale."""
    X, y = world["X"], world["y"]
    truth = load_truth(str(world["folder"]))
    params = truth.set_index("customer_id").loc[X.index]
    returned = sum(params[f"category_share_{c}"] * rate for c, rate in D.CATEGORY_RETURN_RATE.items())
    table = compare_clv(
        y,
        {
            "last year carried forward": X["revenue_365d"],
            "BTYD (BG/NBD + Gamma-Gamma)": BTYDModel(horizon_days=365, discount_rate=0.1)
            .fit(X)
            .predict(X)["clv"],
            "gradient boosting": world["model"].predict_frame(X)["clv"],
            "truth: expected spend less returns": values_at(truth, TEST_CUTOFF, (365,)).loc[
                X.index, "expected_spend_365d"
            ]
            * (1 - returned),
        },
    )
    print("\n" + table.round(3).to_string())
    ml, btyd, naive = (
        table.loc[k]
        for k in ("gradient boosting", "BTYD (BG/NBD + Gamma-Gamma)", "last year carried forward")
    )
    assert (
        ml["mae"] < naive["mae"]
        and ml["spearman"] > naive["spearman"]
        and ml["top20_captured"] > naive["top20_captured"]
    )
    assert ml["mae"] < btyd["mae"] and ml["top20_captured"] > btyd["top20_captured"]


def test_prediction_is_probability_times_value(world) -> None:
    out = world["model"].predict_frame(world["X"])
    np.testing.assert_allclose(out["clv"], out["p_value"] * out["value_if_any"])
    assert out["p_value"].between(0, 1).all() and (out["value_if_any"] > 0).all()
    # On the right scale: the mean prediction within 10% of the mean actual value (189 vs 203).
    assert out["clv"].mean() == pytest.approx(world["y"].mean(), rel=0.1)


def test_more_purchases_never_lower_the_value(world) -> None:
    X = world["X"].iloc[:3_000]
    base = world["model"].predict(X)
    windows = [c for c in X.columns if c.startswith("purchase_days_")]
    more = X.assign(frequency=X["frequency"] + 1, **{c: X[c] + 1 for c in windows})
    assert (world["model"].predict(more) >= base - 1e-9).all()


def test_too_few_buyers_is_a_clear_error(world) -> None:
    X = world["X"].iloc[:100]
    with pytest.raises(ModelFitError, match="at least 20"):
        CLVModel().fit(X, np.r_[np.ones(5), np.zeros(95)])
    with pytest.raises(ValueError, match="missing values"):
        CLVModel().fit(X, np.r_[np.ones(99), np.nan])


def test_the_value_through_bins_equals_the_regressors_own(world) -> None:
    from kundenwert.models.tabular import predict_binned

    m = world["model"]
    Z = m.encoder_.transform(world["X"])
    np.testing.assert_allclose(predict_binned(m.value_, Z), m.value_.predict(Z), rtol=1e-12, atol=0)
