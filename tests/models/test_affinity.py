"""Product affinity: per-category quality, the designed age-group pattern, no use of consent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from kundenwert.datasets.truth import load_truth, values_at
from kundenwert.features.training_set import SplitConfig, build_training_set, rolling_cutoffs, time_split
from kundenwert.models.affinity import AffinityModel, affinity_by_age_group

HORIZON = 90
KNOWN_AGES = ["<25", "25-34", "35-44", "45-54", "55-64", "65+"]


@pytest.fixture(scope="module")
def fitted(imported_world):
    frames, folder = imported_world(20_000, 9)
    p = frames["purchases"]
    cfg = SplitConfig(step_days=60)
    split = time_split(
        rolling_cutoffs(p["purchased_at"].min(), p["purchased_at"].max(), HORIZON, cfg), HORIZON, cfg
    )
    ts = build_training_set(frames, split["train"][-6:] + split["test"])
    cut = ts.index.get_level_values("cutoff")
    features = [c for c in ts.columns if not c.startswith("label_")]
    labels = [c for c in ts.columns if c.startswith("label_affinity_")]
    train, test = ts[cut.isin(split["train"])], ts[cut == split["test"][0]]
    model = AffinityModel().fit(train[features], train[labels])
    return {
        "model": model,
        "test": test,
        "features": features,
        "labels": labels,
        "t": split["test"][0],
        "folder": folder,
    }


def test_each_category_reaches_097_of_the_truths_auc(fitted) -> None:
    """ROC-AUC per category on the test cutoff at least 0.97 times the AUC of the truth's
    probability on the same customers and labels; mean prediction within 0.01 of the rate."""
    test, model = fitted["test"], fitted["model"]
    pred = model.predict_frame(test[fitted["features"]])
    truth = values_at(load_truth(str(fitted["folder"])), fitted["t"], (HORIZON,))
    ids = test.index.get_level_values("customer_id")
    for c in model.categories_:
        y = test[f"label_affinity_{c}"].to_numpy()
        auc = roc_auc_score(y, pred[f"affinity_{c}"])
        oracle = roc_auc_score(y, truth.loc[ids, f"affinity_{c}_{HORIZON}d"])
        print(
            f"{c}: rate {y.mean():.4f}, mean predicted {pred[f'affinity_{c}'].mean():.4f}, AUC {auc:.4f}, truth's AUC {oracle:.4f} ({auc / oracle:.3f})"
        )
        assert auc >= 0.97 * oracle and abs(pred[f"affinity_{c}"].mean() - y.mean()) < 0.01


def test_recovered_age_pattern_matches_the_design(fitted) -> None:
    """Per category, the category's share of the predicted affinity within each known age group
    ranks the age groups as the designed share of purchase lines does (Spearman >= 0.9)."""
    test, model = fitted["test"], fitted["model"]
    X = test[fitted["features"]]
    table = affinity_by_age_group(X, labels=test[fitted["labels"]], predicted=model.predict_frame(X))
    design = pd.read_csv(fitted["folder"] / "truth" / "age_group_category.csv")
    design = design.pivot(index="age_group", columns="category", values="expected_line_share").loc[KNOWN_AGES]
    recovered = table["mean_predicted"].unstack("category").loc[KNOWN_AGES]
    share = recovered.div(recovered.sum(axis=1), axis=0)
    rhos = {c: spearmanr(share[c], design[c]).statistic for c in design.columns}
    print({c: round(r, 3) for c, r in rhos.items()})
    assert min(rhos.values()) >= 0.9, rhos


def test_by_age_group_is_one_call_with_counts_rates_and_lifts(fitted) -> None:
    test = fitted["test"]
    X = test[fitted["features"]]
    table = affinity_by_age_group(
        X, labels=test[fitted["labels"]], predicted=fitted["model"].predict_frame(X)
    )
    assert set(table.columns) == {
        "customers",
        "observed_rate",
        "observed_lift",
        "mean_predicted",
        "predicted_lift",
    }
    one = table.xs("electronics")
    assert one["customers"].sum() == len(X)
    y = test["label_affinity_electronics"]
    young = (X["age_group"] == "<25").to_numpy()
    assert one.loc["<25", "observed_rate"] == pytest.approx(y[young].mean())
    assert one.loc["<25", "observed_lift"] == pytest.approx(y[young].mean() / y.mean())
    with pytest.raises(ValueError, match="labels"):
        affinity_by_age_group(X)


def test_consent_has_no_effect_on_affinity(fitted) -> None:
    X = fitted["test"][fitted["features"]].iloc[:2_000]
    flipped = X.copy()
    for c in [c for c in X.columns if c.startswith("consent_")] + ["objection"]:
        flipped[c] = ~X[c].astype(bool)
    pd.testing.assert_frame_equal(fitted["model"].predict_frame(flipped), fitted["model"].predict_frame(X))
    assert not np.any([str(c).startswith("consent_") for c in fitted["model"].feature_names_in_])
