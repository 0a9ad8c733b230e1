"""Training and backtesting every model from frames: determinism, gates, sampling, the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kundenwert.errors import ConfigurationError
from kundenwert.training.backtest import TrainingData, report, train_models
from kundenwert.training.config import MODELS, ExperimentConfig
from kundenwert.training.promotion import better_or_equal, check_gates

FAST = {"max_iter": 40}  # small boosters: these tests check the plumbing, tests/models the quality


def _config(**data) -> ExperimentConfig:
    models = {m: {"params": dict(FAST)} for m in MODELS}
    models["churn"]["gates"] = {"min_roc_auc": 0.55, "max_ece": 0.2}
    models["winback"]["gates"] = {"min_roc_auc": 0.99}  # cannot pass: shows a failing gate
    return ExperimentConfig.model_validate({"data": {"max_train_cutoffs": 3, **data}, "models": models})


@pytest.fixture(scope="module")
def frames(imported_world):
    return imported_world(3_000, 5)[0]


@pytest.fixture(scope="module")
def results(frames):
    return train_models(frames, _config())


def test_every_model_is_trained_and_scored_on_the_test_cutoffs(results) -> None:
    assert list(results) == list(MODELS)
    for name, r in results.items():
        assert r.metrics and all(np.isfinite(v) for v in r.metrics.values()), name
        test, train = r.data["cutoffs"]["test"], r.data["cutoffs"]["train"]
        assert max(train) < min(test) and r.data["rows"] > 0 and r.data["data_fingerprint"]
    assert results["churn"].metrics["roc_auc"] > 0.6 and results["affinity"].metrics["roc_auc_mean"] > 0.6
    assert results["churn"].passed and not results["winback"].passed
    assert results["winback"].gates["min_roc_auc"]["value"] == results["winback"].metrics["roc_auc"]


def test_same_data_and_seed_give_the_same_metrics(frames, results) -> None:
    again = train_models(frames, _config())
    for name in MODELS:
        assert again[name].metrics == results[name].metrics, name


def test_the_report_holds_every_metric_and_gate(results) -> None:
    parsed = json.loads(report(results))
    assert set(parsed) == set(MODELS)
    assert parsed["churn"]["gates"]["max_ece"]["passed"] is True and parsed["winback"]["passed"] is False
    assert parsed["clv"]["metrics"]["spearman"] == results["clv"].metrics["spearman"]


def test_sampling_bounds_customers_per_cutoff_stably(frames) -> None:
    data = TrainingData(frames, _config(max_customers_per_cutoff=500, seed=3))
    cfg = data.config
    ts, _ = data.table(cfg.labels.horizon, cfg.labels)
    per_cutoff = ts.groupby(level="cutoff").size()
    assert (per_cutoff <= 500).all() and per_cutoff.max() == 500
    again, _ = TrainingData(frames, _config(max_customers_per_cutoff=500, seed=3)).table(
        cfg.labels.horizon, cfg.labels
    )
    assert ts.index.equals(again.index)
    # built from the sampled customers only, the rows equal those of every customer, sampled
    from kundenwert.features.training_set import build_training_set
    from kundenwert.training.backtest import _sample

    split = data.cutoffs(cfg.labels.horizon)
    wanted = split["train"] + split["validation"] + split["test"]
    assert len(data._customers_of(wanted)["customers"]) < len(frames["customers"])
    full = build_training_set(frames, wanted, cfg.snapshot, cfg.labels)
    pd.testing.assert_frame_equal(ts, _sample(full, 500, 3))
    # the response rows of a cutoff come from the same sampled customers
    from kundenwert.models.specs import get_spec

    in_time = cfg.model_copy(update={"split": cfg.split.model_copy(update={"method": "time"})})
    data = TrainingData(frames, in_time)
    X, _y, (Xt, _yt), split, _what = data.examples(get_spec("response"))
    assert split["method"] == "time" and split["warnings"]  # 500 customers: a small test set
    (test_cutoff,) = split["test"]
    chosen = set(ts.xs(test_cutoff, level="cutoff").index)
    assert set(Xt.index.get_level_values("customer_id")) <= chosen
    assert len(set(Xt.index.get_level_values("customer_id"))) > 50


def test_gates_and_comparisons() -> None:
    gates = check_gates(
        {"roc_auc": 0.8, "ece": 0.03, "mae": np.nan}, {"min_roc_auc": 0.7, "max_ece": 0.02, "max_mae": 5}
    )
    assert (
        gates["min_roc_auc"]["passed"] and not gates["max_ece"]["passed"] and not gates["max_mae"]["passed"]
    )
    assert (
        better_or_equal("roc_auc", 0.8, 0.7)
        and better_or_equal("ece", 0.01, 0.02)
        and not better_or_equal("mae", 3, 2)
    )


def test_unknown_models_and_empty_stores_are_clear_errors(frames) -> None:
    with pytest.raises(ConfigurationError, match="unknown model"):
        train_models(frames, _config(), models=["churn", "nba"])
    nothing = {**frames, "purchases": frames["purchases"].iloc[:0], "contacts": frames["contacts"].iloc[:0]}
    with pytest.raises(ConfigurationError, match="no purchases and no contacts"):
        train_models(nothing, _config())
    no_contacts = {**frames, "contacts": frames["contacts"].iloc[:0]}
    with pytest.raises(
        ConfigurationError, match="can train none of the models.*response: the store has no contacts"
    ):
        train_models(no_contacts, _config(), models=["response"])


def test_the_champion_comparison_takes_the_direction_of_the_models_own_spec() -> None:
    from kundenwert.models.specs import get_spec

    clv, churn = get_spec("clv"), get_spec("churn")
    assert "mae" in clv.lower_is_better and "mae" not in churn.lower_is_better
    assert not better_or_equal("mae", 3, 2, clv) and better_or_equal("mae", 3, 2, churn)


def test_the_champion_is_compared_only_on_rows_it_never_trained_on() -> None:
    """A champion split by customer trained on the other customers: only its own test customers
    judge it; a challenger split by customer cannot be compared with a champion split in time."""
    from types import SimpleNamespace

    from kundenwert.features.training_set import customer_test_rows
    from kundenwert.training.promotion import unseen_by_champion

    index = pd.MultiIndex.from_arrays(
        [[pd.Timestamp("2025-01-01", tz="UTC")] * 400, [f"c{i}" for i in range(400)]],
        names=["cutoff", "customer_id"],
    )
    X = pd.DataFrame({"x": np.arange(400)}, index=index)
    in_time = SimpleNamespace(data={"split_key": {"method": "time"}}, test=(X, None))
    by_customer = SimpleNamespace(
        data={"split_key": {"method": "customer", "seed": 0, "test_share": 0.25}}, test=(X, None)
    )
    assert unseen_by_champion(in_time, None).all()  # versions from before splits were recorded
    assert unseen_by_champion(in_time, {"method": "time"}).all()
    assert unseen_by_champion(by_customer, {"method": "time"}) is None
    champion = {"method": "customer", "seed": 3, "test_share": 0.25}
    unseen = unseen_by_champion(in_time, champion)
    np.testing.assert_array_equal(unseen, customer_test_rows(index, 0.25, 3))
    assert 0.15 < unseen.mean() < 0.35
