"""A model is one spec: a sixth model, defined and registered in this file alone, trains, is
tracked and registered in MLflow, becomes champion and appears in a scoring run."""

from __future__ import annotations

import dataclasses
import shutil
from numbers import Real

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from kundenwert.errors import ConfigurationError
from kundenwert.models.specs import (
    CLASSIFICATION,
    CLASSIFICATION_LOWER,
    SPECS,
    LabelSpec,
    ModelSpec,
    Stored,
    classifier_metrics,
    get_spec,
    probability,
    register_spec,
    registered,
)


class ConstantRateClassifier(ClassifierMixin, BaseEstimator):
    """A baseline: everyone gets the training rate of the positive class, shrunk towards 1/2 by
    ``prior_weight`` pseudo-rows."""

    _parameter_constraints: dict = {"prior_weight": [Interval(Real, 0, None, closed="left")]}

    def __init__(self, *, prior_weight: float = 0.0) -> None:
        self.prior_weight = prior_weight

    def fit(self, X: pd.DataFrame, y) -> ConstantRateClassifier:
        self._validate_params()
        y = np.asarray(y, dtype="float64")
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.classes_ = np.array([0.0, 1.0])
        self.rate_ = float((y.sum() + 0.5 * self.prior_weight) / (len(y) + self.prior_weight))
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self)
        p = np.full(len(X), self.rate_)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype("float64")


def _baseline_plots(kit, model, X, y) -> list:
    return kit.curves("baseline", {"baseline": (np.asarray(y), probability(model, X))})


BASELINE = ModelSpec(
    name="baseline",
    estimator=ConstantRateClassifier,  # a type of this module: trusted as the spec's estimator
    label=LabelSpec("churn", population="active"),
    metrics=CLASSIFICATION,
    score=classifier_metrics,
    primary_metric="roc_auc",
    lower_is_better=CLASSIFICATION_LOWER,
    gates={"max_brier": 0.3},  # no section in the experiment: these gates apply
    pyfunc_method="predict_proba",
    plots=_baseline_plots,
    stores=Stored(predict=probability, column="baseline_churn", population="active"),
)


@pytest.fixture(scope="module")
def sixth(imported_world, tmp_path_factory):
    """The sample world trained with the sixth spec registered, then scored."""
    from kundenwert.db.store import Store
    from kundenwert.experiments.registry import describe_versions, load_version, tracking_uri
    from kundenwert.serving.catalog import load_catalog
    from kundenwert.serving.scores_store import read_scores
    from kundenwert.serving.scoring import run_scoring
    from kundenwert.training.config import ExperimentConfig
    from kundenwert.training.run import run_training

    _, folder = imported_world(3_000, 5)
    home = tmp_path_factory.mktemp("kw-sixth")
    shutil.copy(folder / "kw.db", home / "kw.db")
    mp = pytest.MonkeyPatch()
    mp.setenv("KUNDENWERT_HOME", str(home))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    with registered(BASELINE):
        fast = {m: {"params": {"max_iter": 30}} for m in SPECS if m != "baseline"}
        cfg = ExperimentConfig.model_validate({"models": fast, "data": {"max_train_cutoffs": 2}})
        store = Store(f"sqlite:///{home / 'kw.db'}")
        results, decisions = run_training(cfg, store=store)
        done = run_scoring(store, load_catalog())
        scores, _, run = read_scores(store.engine)
        yield {
            "config": cfg,
            "results": results,
            "decisions": decisions,
            "done": done,
            "scores": scores,
            "run": run,
            "versions": describe_versions("baseline"),
            "loaded": load_version("baseline", "1"),
            "uri": tracking_uri(),
        }
        store.dispose()
    mp.undo()


def test_the_sixth_model_trains_with_its_spec_gates(sixth) -> None:
    cfg, results = sixth["config"], sixth["results"]
    assert cfg.enabled()[-1] == "baseline" and cfg.model("baseline").gates == {"max_brier": 0.3}
    r = results["baseline"]
    assert r.metrics["roc_auc"] == pytest.approx(0.5) and set(CLASSIFICATION) <= set(r.metrics)
    assert r.passed and r.gates["max_brier"]["value"] == r.metrics["brier"]
    churn_rate = results["churn"].data["label_rate"]  # the same label and population as churn
    assert (
        r.data["label_rate"] == pytest.approx(churn_rate) and r.data["rows"] == results["churn"].data["rows"]
    )


def test_the_sixth_model_is_tracked_registered_and_champion(sixth) -> None:
    import mlflow

    (v,) = sixth["versions"]
    assert set(v["aliases"]) == {"challenger", "champion"} and v["gates_passed"] == "True"
    assert v["metrics"]["roc_auc"] == pytest.approx(0.5)
    assert sixth["decisions"]["baseline"]["promoted"]
    client = mlflow.MlflowClient(sixth["uri"])
    (run,) = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
              if r.data.tags.get("model") == "baseline"]  # fmt: skip
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/roc.png" in plots and "plots/gains_lift.json" in plots
    rate = sixth["results"]["baseline"].model.rate_
    assert isinstance(sixth["loaded"], ConstantRateClassifier) and sixth["loaded"].rate_ == rate


def test_the_sixth_model_appears_in_the_scoring_run(sixth) -> None:
    scores, run = sixth["scores"], sixth["run"]
    assert sixth["done"]["models"]["baseline"] == "1" and run["models"]["baseline"] == "1"
    active = (scores["status"] == "active").to_numpy()
    rate = sixth["results"]["baseline"].model.rate_
    assert active.any() and np.allclose(scores.loc[active, "baseline_churn"], rate)
    assert scores.loc[~active, "baseline_churn"].isna().all()
    assert scores["churn"].notna().sum() == active.sum()  # the five models score as before


def test_the_registry_of_specs_names_what_is_known() -> None:
    with pytest.raises(ConfigurationError, match="unknown model 'nba'; models are: clv, churn"):
        get_spec("nba")
    with pytest.raises(ConfigurationError, match="registered already"):
        register_spec(get_spec("churn"))
    with pytest.raises(ConfigurationError, match="gates.min_mae"):
        ModelSpec(
            name="bad",
            estimator=ConstantRateClassifier,
            label=LabelSpec("churn"),
            metrics=CLASSIFICATION,
            score=classifier_metrics,
            primary_metric="roc_auc",
            gates={"min_mae": 1.0},
        )
    other = dataclasses.replace(BASELINE, name="baseline_two")
    with registered(other):
        assert list(SPECS)[-1] == "baseline_two" and get_spec("baseline_two") is other
        assert f"{ConstantRateClassifier.__module__}.ConstantRateClassifier" in other.all_trusted_types
    assert "baseline_two" not in SPECS


def test_a_catalog_formula_may_use_a_new_models_score_once_its_spec_is_registered(tmp_path) -> None:
    from kundenwert.datasets.design import CATEGORIES
    from kundenwert.serving.catalog import DEFAULT_CATALOG, load_catalog

    # a spec of its own (the module's ``sixth`` fixture may hold BASELINE registered meanwhile)
    other = dataclasses.replace(
        BASELINE, name="baseline_three", stores=dataclasses.replace(BASELINE.stores, column="rate_three")
    )
    text = DEFAULT_CATALOG.read_text(encoding="utf-8")
    assert "clv * churn * save_rate" in text
    path = tmp_path / "actions.toml"
    path.write_text(text.replace("clv * churn * save_rate", "clv * rate_three * save_rate"))
    catalog = load_catalog(path)
    with pytest.raises(ConfigurationError, match="unknown name.*rate_three"):
        catalog.check_names(list(CATEGORIES))
    with registered(other):
        catalog.check_names(list(CATEGORIES))  # the spec's stored column is a model output now
