"""Churn and win-back classifiers on a sample world: quality against baselines and the truth,
calibration, the behaviour marketing relies on, and the estimator contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from kundenwert.datasets.truth import load_truth, posterior_churn_probability, values_at
from kundenwert.errors import ModelFitError
from kundenwert.features.training_set import SplitConfig, build_training_set, rolling_cutoffs, time_split
from kundenwert.models.affinity import AffinityModel
from kundenwert.models.btyd import BTYDModel
from kundenwert.models.clv import CLVModel
from kundenwert.models.metrics import classification_metrics
from kundenwert.models.tabular import CalibratedGBMClassifier, ChurnModel, FeatureEncoder, WinbackModel

HORIZON = 90


@pytest.fixture(scope="module")
def world(imported_world):
    frames, folder = imported_world(20_000, 9)
    p = frames["purchases"]
    cfg = SplitConfig(step_days=60)
    split = time_split(
        rolling_cutoffs(p["purchased_at"].min(), p["purchased_at"].max(), HORIZON, cfg), HORIZON, cfg
    )
    ts = build_training_set(frames, split["train"] + split["validation"] + split["test"])
    cut = ts.index.get_level_values("cutoff")
    features = [c for c in ts.columns if not c.startswith("label_")]
    train = ts[cut.isin(split["train"] + split["validation"])]
    test = ts[cut == split["test"][0]]
    return {
        "train": train,
        "test": test,
        "features": features,
        "t": split["test"][0],
        "truth": load_truth(str(folder)),
        "frames": frames,
    }


@pytest.fixture(scope="module")
def fitted(world):
    out = {}
    for name, model in (("churn", ChurnModel()), ("winback", WinbackModel())):
        tr = world["train"][world["train"][f"label_{name}"].notna()]
        out[name] = model.fit(tr[world["features"]], tr[f"label_{name}"])
    return out


def _oracles(world, name: str, ids: pd.Index, test: pd.DataFrame) -> dict[str, np.ndarray]:
    """Scores that know more than the data: the truth's probability (it knows who has silently
    left) and the posterior given the observed history with each customer's true purchase rate
    and dropout; plus the BG/NBD posterior fitted on the data (no attributes)."""
    t, truth = world["t"], world["truth"]
    v = values_at(truth, t, (HORIZON,)).loc[ids]
    tr = truth.set_index("customer_id").loc[ids]
    lam = tr["lambda_per_day"].to_numpy()
    p_now = np.where(
        (tr["complained_at"] < t).fillna(False), tr["p_dropout_after_complaint"], tr["p_dropout"]
    )
    stay = (1 - p_now) * np.exp(-lam * test["days_since_last_purchase"].to_numpy())
    alive = np.where(test["frequency"].to_numpy() > 0, stay / (stay + p_now), 1.0)
    observable = 1 - alive * (1 - np.exp(-lam * HORIZON))  # P(no purchase in the horizon)
    snap_t = world["test"][world["features"]]
    btyd = BTYDModel(horizon_days=HORIZON).fit(snap_t.droplevel("cutoff"))
    r, a = btyd.params_["r"], btyd.params_["alpha"]
    x, T = test["frequency"].to_numpy(), test["T"].to_numpy()
    p_alive = btyd.bgf_.conditional_probability_alive(x, test["recency"].to_numpy(), T)
    bgnbd = 1 - p_alive * (1 - ((a + T) / (a + T + HORIZON)) ** (r + x))
    posterior = posterior_churn_probability(world["frames"], t, HORIZON).reindex(ids).to_numpy()
    churn = {
        "latent": v["churn_probability_90d"].to_numpy(),
        "observable": observable,
        "posterior": posterior,
        "bgnbd": bgnbd,
    }
    return churn if name == "churn" else {k: 1 - s for k, s in churn.items()}


@pytest.mark.parametrize("name", ["churn", "winback"])
def test_quality_against_baselines_and_truth(world, fitted, name) -> None:
    """On the test cutoff: at least 0.97 of the AUC of the Bayes posterior under the world's true
    priors given purchase history and attributes (the issue's acceptance point, with this oracle in
    place of the truth's probability: that one knows who has silently left, which no data shows,
    and even each customer's true rates reach only 0.91 / 0.96 of it); better than the fitted
    BG/NBD posterior and recency alone; calibrated (ECE < 0.03). All oracles' AUCs are printed."""
    test = world["test"][world["test"][f"label_{name}"].notna()]
    y = test[f"label_{name}"].to_numpy()
    p = fitted[name].predict_proba(test[world["features"]])[:, 1]
    m = classification_metrics(y, p)
    oracles = _oracles(world, name, test.index.get_level_values("customer_id"), test)
    auc = {k: roc_auc_score(y, s) for k, s in oracles.items()}
    recency = roc_auc_score(y, test["days_since_last_purchase"] * (1 if name == "churn" else -1))
    print(
        f"\n{name}: {len(y):,} customers, AUC {m['roc_auc']:.4f}, PR-AUC {m['pr_auc']:.4f}, Brier {m['brier']:.4f}, "
        f"lift top decile {m['lift_top_decile']:.2f}, ECE {m['ece']:.4f}; BG/NBD posterior {auc['bgnbd']:.4f}, "
        f"recency {recency:.4f}; Bayes posterior {auc['posterior']:.4f} (ratio {m['roc_auc'] / auc['posterior']:.3f}); "
        f"oracle with true rates {auc['observable']:.4f} "
        f"(ratio {m['roc_auc'] / auc['observable']:.3f}), truth's probability {auc['latent']:.4f} "
        f"(ratio {m['roc_auc'] / auc['latent']:.3f})"
    )
    assert m["roc_auc"] >= 0.97 * auc["posterior"]
    assert m["roc_auc"] > auc["bgnbd"] + 0.005 and m["roc_auc"] > recency + 0.02
    assert m["roc_auc"] < auc["observable"]  # nothing beats knowing each customer's true rates
    assert m["ece"] < 0.03 and abs(m["mean_probability"] - m["positive_rate"]) < 0.02


def test_a_more_recent_purchase_never_raises_churn_risk(world, fitted) -> None:
    """Ceteris paribus: the same customers with the last purchase 1 to 60 days more recent."""
    X = world["test"][world["features"]].dropna(subset=["days_since_last_purchase"]).iloc[:3_000]
    base = fitted["churn"].predict_proba(X)[:, 1]
    for days in (1, 7, 30, 60):
        closer = X.assign(days_since_last_purchase=(X["days_since_last_purchase"] - days).clip(lower=0))
        assert (fitted["churn"].predict_proba(closer)[:, 1] <= base + 1e-12).all(), days
        later = fitted["winback"].predict_proba(closer)[:, 1]
        assert (later >= fitted["winback"].predict_proba(X)[:, 1] - 1e-12).all(), days


def test_an_open_complaint_never_lowers_churn_risk(world, fitted) -> None:
    X = world["test"][world["features"]].iloc[:3_000]
    base = fitted["churn"].predict_proba(X)[:, 1]
    for more in (1, 2, 5):
        worse = fitted["churn"].predict_proba(X.assign(open_complaints=X["open_complaints"] + more))[:, 1]
        assert (worse >= base - 1e-12).all(), more
    # Guaranteed by construction, not only on these customers: the booster carries the constraint.
    model = fitted["churn"]
    at = list(model.feature_names_in_).index("open_complaints")
    assert model.booster_.monotonic_cst[at] == 1 and model.monotonic_["days_since_last_purchase"] == 1


def test_consent_never_enters_a_model(world, fitted) -> None:
    X = world["test"][world["features"]].iloc[:2_000]
    flipped = X.copy()
    for c in [c for c in X.columns if c.startswith("consent_")] + ["objection"]:
        flipped[c] = ~X[c].astype(bool)
    for model in fitted.values():
        assert not any(str(c).startswith(("consent_", "objection")) for c in model.feature_names_in_)
        np.testing.assert_array_equal(model.predict_proba(flipped), model.predict_proba(X))


def test_encoder_keeps_no_rare_text_values() -> None:
    """A value held by fewer than min_category_count customers is not stored with the model."""
    ids = pd.Index([f"c{i}" for i in range(30)] * 2, name="customer_id")  # each customer twice
    X = pd.DataFrame({"city": ["Berlin"] * 55 + ["Kleinkleckersdorf"] * 5}, index=ids)
    enc = FeatureEncoder(min_category_count=6).fit(X)
    assert list(enc.categories_["city"]) == ["Berlin"]  # 5 customers hold the rare value
    assert np.isnan(enc.transform(pd.DataFrame({"city": ["Kleinkleckersdorf"]}))[0, 0])


def test_encoder_handles_unknown_categories_and_names_missing_columns() -> None:
    train = pd.DataFrame({"kind": ["a", "b", None], "n": [1.0, 2.0, 3.0], "empty": [np.nan] * 3})
    enc = FeatureEncoder(min_category_count=1).fit(train)
    assert list(enc.feature_names_in_) == ["kind", "n"]  # a column without values is dropped
    Z = enc.transform(pd.DataFrame({"kind": ["b", "zzz", None], "n": [1.0, np.nan, 2.0]}))
    np.testing.assert_array_equal(Z[:, 0], [1.0, np.nan, np.nan])
    with pytest.raises(ValueError, match="lacks feature column.*n"):
        enc.transform(pd.DataFrame({"kind": ["a"]}))


def test_bad_labels_are_clear_errors() -> None:
    X = pd.DataFrame({"a": np.arange(10.0)}, index=pd.Index([f"c{i}" for i in range(10)], name="customer_id"))
    with pytest.raises(ModelFitError, match="both outcomes"):
        CalibratedGBMClassifier().fit(X, np.zeros(10))
    with pytest.raises(ValueError, match="missing labels"):
        CalibratedGBMClassifier().fit(X, np.r_[np.zeros(5), np.ones(4), np.nan])
    with pytest.raises(ValueError, match="unknown feature"):
        CalibratedGBMClassifier(monotonic={"b": 1}).fit(X, np.r_[np.zeros(5), np.ones(5)])


@pytest.mark.parametrize(
    "Model", [CalibratedGBMClassifier, ChurnModel, WinbackModel, BTYDModel, CLVModel, AffinityModel]
)
def test_estimator_contract(Model) -> None:
    """The parts of scikit-learn's estimator checks that hold for frame-only estimators (the full
    check_estimator feeds NumPy arrays without column names, which a snapshot model cannot use)."""
    name = Model.__name__
    check_parameters_default_constructible(name, Model())
    check_no_attributes_set_in_init(name, Model())
    check_get_params_invariance(name, Model())
    check_set_params(name, Model())
    assert clone(Model()).get_params() == Model().get_params()
    with pytest.raises(NotFittedError):
        Model().predict(
            pd.DataFrame({"frequency": [1.0], "recency": [1.0], "T": [2.0], "monetary_value": [1.0]})
        )


@pytest.mark.parametrize("name", ["churn", "winback"])
def test_predictions_through_bins_equal_the_boosters_own(world, fitted, name) -> None:
    """proba_encoded goes through the booster's bins (faster): the numbers of the booster's own
    predict_proba on raw values, missing values and all, calibrated the same way."""
    m = fitted[name]
    Z = m.encoder_.transform(world["test"][world["features"]])
    assert np.isnan(Z).any()  # missing values are part of the comparison
    own = m._calibrated(m.booster_.decision_function(Z))
    np.testing.assert_allclose(m.proba_encoded(Z), own, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["churn", "winback"])
def test_smooth_calibration_keeps_every_distinction_and_is_as_calibrated(world, fitted, name) -> None:
    """The default calibration (``auto``) on the test cutoff: no probability of exactly 0 or 1,
    customers with different booster scores get different probabilities in the same order, and
    the ECE is at most 0.005 above the earlier isotonic calibration's, the same booster."""
    m = fitted[name]
    test = world["test"][world["test"][f"label_{name}"].notna()]
    X, y = test[world["features"]], test[f"label_{name}"].to_numpy()
    raw, p = m.decision_function(X), m.predict_proba(X)[:, 1]
    assert m.calibration == "auto" and m.calibrator_.method_ in m.calibrator_.holdout_log_loss_
    assert ((p > 0) & (p < 1)).all()
    order = np.argsort(raw, kind="stable")
    step_raw, step_p = np.diff(raw[order]), np.diff(p[order])
    assert (step_p[step_raw > 0] > 0).all() and (step_p[step_raw == 0] == 0).all()
    tr = world["train"][world["train"][f"label_{name}"].notna()]
    iso = clone(m).set_params(calibration="isotonic").fit(tr[world["features"]], tr[f"label_{name}"])
    p_iso = iso.predict_proba(X)[:, 1]
    np.testing.assert_array_equal(iso.decision_function(X), raw)  # the same booster
    ece, ece_iso = classification_metrics(y, p)["ece"], classification_metrics(y, p_iso)["ece"]
    print(
        f"\n{name}: {m.calibrator_.method_} (held-out log-loss {m.calibrator_.holdout_log_loss_}); "
        f"distinct {len(np.unique(p)):,} vs isotonic {len(np.unique(p_iso)):,} of {len(p):,}; "
        f"ECE {ece:.4f} vs isotonic {ece_iso:.4f}"
    )
    assert ece <= ece_iso + 0.005
