"""Against a real ``mlflow server`` on 127.0.0.1: a model logged and registered through the HTTP
tracking server loads back as the champion with the same probabilities."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from kundenwert.experiments import registry as R
from kundenwert.training.backtest import TrainingData, fit_and_backtest
from kundenwert.training.config import ExperimentConfig
from kundenwert.training.promotion import promote


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    if not mlflow_bin.exists():
        pytest.skip("the mlflow command is not installed next to this Python")
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(
        [str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{root / 'm.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not answer /health within 60 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_register_promote_and_load_through_the_server(server, imported_world, monkeypatch, tmp_path) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("KUNDENWERT_HOME", str(tmp_path))
    frames, _ = imported_world(3_000, 5)
    cfg = ExperimentConfig.model_validate(
        {"models": {"churn": {"params": {"max_iter": 30}}}, "data": {"max_train_cutoffs": 2}}
    )
    result = fit_and_backtest("churn", TrainingData(frames, cfg))
    X = result.test[0]
    version = R.log_and_register(result, X, "server-test")
    assert promote(result, version)["promoted"]
    assert R.tracking_uri() == server and os.environ["MLFLOW_TRACKING_URI"] == server
    loaded = mlflow.pyfunc.load_model("models:/kundenwert-churn@champion")
    sample = X.iloc[:300][list(result.model.feature_names_in_)]
    np.testing.assert_allclose(
        np.asarray(loaded.predict(sample)), result.model.predict_proba(sample), rtol=1e-12
    )
    assert not list(tmp_path.glob("**/*.db"))  # nothing went to the embedded store
