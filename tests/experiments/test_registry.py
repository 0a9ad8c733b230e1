"""Models in MLflow: registered as challengers, loaded back in a fresh process with the same
predictions, saved only with trusted types, and with no customer's data in anything logged."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kundenwert.errors import ModelFitError
from kundenwert.experiments import registry as R
from kundenwert.models.specs import get_spec
from kundenwert.training.backtest import TrainingData
from kundenwert.training.config import MODELS, ExperimentConfig
from kundenwert.training.promotion import promote


@pytest.fixture(scope="module")
def logged(imported_world, trained_small, small_config, tmp_path_factory):
    frames, _ = imported_world(3_000, 5)
    home = tmp_path_factory.mktemp("kw-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("KUNDENWERT_HOME", str(home))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = small_config
    results = trained_small
    data = TrainingData(frames, cfg)
    ts, _ = data.table(cfg.labels.horizon, cfg.labels)
    X = ts[[c for c in ts.columns if not c.startswith("label_")]]
    R_X = data.examples(get_spec("response"))[0]
    versions = {n: R.log_and_register(r, R_X if n == "response" else X, "test") for n, r in results.items()}
    yield {"results": results, "X": X, "RX": R_X, "versions": versions, "home": home, "frames": frames}
    mp.undo()


def test_every_model_is_a_registered_challenger(logged) -> None:
    import os

    import mlflow

    # MLflow writes MLFLOW_TRACKING_URI into the environment; left there it would redirect every
    # later run. Artifacts stay under KUNDENWERT_HOME.
    assert "MLFLOW_TRACKING_URI" not in os.environ
    exp = mlflow.MlflowClient(R.tracking_uri()).get_experiment_by_name("test")
    assert exp.artifact_location == (logged["home"].resolve() / "mlartifacts").as_uri()
    assert {m: str(v) for m, v in logged["versions"].items()} == {m: "1" for m in MODELS}
    for m in MODELS:
        (row,) = R.describe_versions(m)
        assert "challenger" in row["aliases"] and row["metrics"]


PLOTS = {
    "clv": {"clv_by_frequency", "gains_lift", "shap_summary"},
    "affinity": {
        "roc",
        "precision_recall",
        "calibration",
        "gains_lift",
        "shap_summary",
        "affinity_by_age_group",
    },
    "response": {"roc", "precision_recall", "calibration", "gains_lift", "shap_summary", "qini"},
}
CURVES = {"roc", "precision_recall", "calibration", "gains_lift", "shap_summary"}


def test_every_run_logs_its_plots_and_its_data_sets(logged) -> None:
    """Each run has its diagnostic plots (PNG and the JSON they draw) and the training and test
    sets as MLflow dataset inputs (digest = data fingerprint, rows and cutoffs as tags)."""
    import mlflow

    client = mlflow.MlflowClient(R.tracking_uri())
    exp = client.get_experiment_by_name("test")
    runs = {r.data.tags["model"]: r for r in client.search_runs([exp.experiment_id])}
    for m, result in logged["results"].items():
        run = runs[m]
        files = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        want = PLOTS.get(m, CURVES)
        assert files == {f"plots/{p}.{ext}" for p in want for ext in ("png", "json")}, m
        png = Path(
            mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="plots/gains_lift.png")
        )
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
        assert set(inputs) == {f"{m}-training", f"{m}-test"}, m
        train, test = inputs[f"{m}-training"], inputs[f"{m}-test"]
        assert train.dataset.digest.startswith(result.data["data_fingerprint"])
        tags = {t.key: t.value for t in train.tags}
        assert tags["rows"] == str(result.data["rows"]) and tags["mlflow.data.context"] == "training"
        assert int({t.key: t.value for t in test.tags}["rows"]) == len(result.test[0])
        assert "days_since_last_purchase" in train.dataset.schema


def test_a_fresh_process_loads_the_same_predictions(logged, tmp_path: Path) -> None:
    """models:/kundenwert-<model>@champion through mlflow.pyfunc in a new interpreter equals the
    in-memory model (probabilities for the classifiers)."""
    for m, r in logged["results"].items():
        assert promote(r, logged["versions"][m])["promoted"], m  # first versions: gates pass
    code = (
        "import sys, json, pandas as pd, mlflow\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "out = {}\n"
        "for m, path in json.loads(sys.argv[2]).items():\n"
        "    X = pd.read_parquet(path)\n"
        "    p = mlflow.pyfunc.load_model(f'models:/kundenwert-{m}@champion').predict(X)\n"
        "    out[m] = pd.DataFrame(p).to_numpy().tolist()\n"
        "print(json.dumps(out))\n"
    )
    paths, want = {}, {}
    for m, r in logged["results"].items():
        X = (logged["RX"] if m == "response" else logged["X"]).iloc[:200][list(r.model.feature_names_in_)]
        paths[m] = str(tmp_path / f"{m}.parquet")
        X.to_parquet(paths[m])
        want[m] = np.asarray(getattr(r.model, get_spec(m).pyfunc_method)(X), dtype="float64")
    env = {
        "KUNDENWERT_HOME": str(logged["home"]),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-c", code, R.tracking_uri(), json.dumps(paths)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for m in MODELS:
        np.testing.assert_allclose(np.asarray(got[m]).reshape(want[m].shape), want[m], rtol=1e-12, err_msg=m)


def test_untrusted_types_are_refused_not_pickled(logged) -> None:
    class Sneaky:
        pass

    r = logged["results"]["churn"]
    r.model.extra_ = Sneaky()
    try:
        with pytest.raises(ModelFitError, match="Sneaky"):
            R.log_and_register(r, logged["X"], "test")
    finally:
        del r.model.extra_
    assert [v["version"] for v in R.describe_versions("churn")] == [1]  # nothing registered


def test_nothing_logged_holds_a_customer_id_or_a_rare_attribute_value(logged) -> None:
    """Every parameter, tag and artifact (models included) of every run, searched for every
    customer id and every custom attribute value held by fewer than 20 customers (numbers only
    with at least 6 characters: "0.08" is also a learning rate)."""
    import mlflow

    cust = logged["frames"]["customers"]
    needles = set(cust["customer_id"].astype(str))
    contract = {"customer_id", "created_at", "customer_type", "birth_year", "gender", "postal_code", "region"}
    for col in [c for c in cust.columns if c not in contract]:
        counts = cust[col].dropna().astype(str).value_counts()
        rare = set(counts.index[counts < 20])
        numeric = pd.api.types.is_numeric_dtype(cust[col])
        needles |= {v for v in rare if not numeric or len(v) >= 6}
    needles = {n for n in needles if len(n) >= 4}  # ids here are 8 characters; no short words
    client = mlflow.MlflowClient(R.tracking_uri())
    texts: dict[str, str] = {}
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        texts[f"{run.info.run_id} params"] = json.dumps(run.data.params)
        texts[f"{run.info.run_id} tags"] = json.dumps(run.data.tags)
        root = Path(
            mlflow.artifacts.download_artifacts(run_id=run.info.run_id, tracking_uri=R.tracking_uri())
        )
        texts |= {str(p): p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file()}
    for model in client.search_logged_models([e.experiment_id for e in client.search_experiments()]):
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location))
        texts |= {str(p): p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file()}
    blob = "\n".join(texts.values())
    assert len(blob) > 100_000 and any("plots/" in k for k in texts)  # models and plots searched ...
    assert "days_since_last_purchase" in blob and len(needles) >= 3_000  # ... and a search finds

    # A number counts as found only as a whole number: customer id 00002688 is not found in the
    # memory address 140226500002688 that skops writes into its schema.
    def pattern(n: str) -> re.Pattern:
        return re.compile(rf"(?<![0-9]){re.escape(n)}(?![0-9])" if n[:1].isdigit() else re.escape(n))

    some_id = cust["customer_id"].iloc[7]
    assert pattern(some_id).search(f'{{"customer_id": "{some_id}"}}')  # an id as it would be written
    hits = []
    for n in (n for n in needles if n in blob):
        hits += [
            (n, where, text[max(0, m.start() - 40) : m.end() + 40])
            for where, text in texts.items()
            for m in pattern(n).finditer(text)
        ]
    assert not hits, hits[:5]


def test_promotion_needs_gates_and_no_worse_than_the_champion(logged) -> None:
    """First version: gates pass, no champion yet -> champion. A weaker challenger (one boosting
    round) scored against the champion on its own test rows -> stays challenger. A failing gate
    -> stays challenger, whatever its score."""
    from kundenwert.training.backtest import TrainingData, fit_and_backtest

    frames = logged["frames"]
    churn = logged["results"]["churn"]
    first = promote(churn, 1)
    assert first["promoted"] and set(R.describe_versions("churn")[0]["aliases"]) == {"challenger", "champion"}

    weak_cfg = ExperimentConfig.model_validate(
        {"models": {"churn": {"params": {"max_iter": 1, "max_depth": 1}}}, "data": {"max_train_cutoffs": 2}}
    )
    weak = fit_and_backtest("churn", TrainingData(frames, weak_cfg))
    v2 = R.log_and_register(weak, logged["X"], "test")
    decision = promote(weak, v2)
    assert not decision["promoted"] and "worse than the champion" in decision["reason"]
    assert decision["champion_value"] == pytest.approx(churn.metrics["roc_auc"])

    strict_cfg = ExperimentConfig.model_validate(
        {
            "models": {"churn": {"params": {"max_iter": 30}, "gates": {"min_roc_auc": 0.999}}},
            "data": {"max_train_cutoffs": 2},
        }
    )
    failing = fit_and_backtest("churn", TrainingData(frames, strict_cfg))
    v3 = R.log_and_register(failing, logged["X"], "test")
    decision = promote(failing, v3)
    assert not decision["promoted"] and "gates failed: min_roc_auc" in decision["reason"]
    aliases = {row["version"]: row["aliases"] for row in R.describe_versions("churn")}
    assert "champion" in aliases[1] and "champion" not in aliases[int(v2)] + aliases[int(v3)]
    assert "challenger" in aliases[int(v3)]
