"""kundenwert train / experiments / promote on a small store; a failure leaves the registry as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kundenwert.cli import app
from kundenwert.experiments.registry import describe_versions
from kundenwert.training.config import MODELS

GATES = {"winback": "gates = { min_roc_auc = 0.999 }\n"}  # cannot pass: stays a challenger
FAST = "".join(f"[models.{m}]\nparams = {{ max_iter = 30 }}\n{GATES.get(m, '')}" for m in MODELS)
CONFIG = f'name = "cli-test"\n[data]\nmax_train_cutoffs = 2\n{FAST}'


@pytest.fixture(scope="module")
def trained(imported_world, tmp_path_factory):
    _, folder = imported_world(3_000, 5)
    home = tmp_path_factory.mktemp("kw-train")
    mp = pytest.MonkeyPatch()
    mp.setenv("KUNDENWERT_DATABASE_URL", f"sqlite:///{folder / 'kw.db'}")
    mp.setenv("KUNDENWERT_HOME", str(home))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = home / "exp.toml"
    config.write_text(CONFIG)
    report = home / "report.json"
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--report", str(report)])
    yield {"result": result, "report": report, "config": config, "home": home}
    mp.undo()


def test_train_reports_registers_and_promotes(trained) -> None:
    result = trained["result"]
    assert result.exit_code == 0, result.output
    parsed = json.loads(trained["report"].read_text())
    assert set(parsed) == set(MODELS) and parsed["winback"]["passed"] is False
    assert "mlflow ui --backend-store-uri sqlite:///" in result.output
    for m in MODELS:
        (v,) = describe_versions(m)
        assert ("champion" in v["aliases"]) == (m != "winback"), m  # the failing gate keeps it out


def test_experiments_and_promote(trained) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["experiments"])
    assert listed.exit_code == 0 and "kundenwert-churn" in listed.output and "champion" in listed.output
    refused = runner.invoke(app, ["promote", "winback", "1"])
    assert refused.exit_code == 2 and "failed its gates" in refused.output
    missing = runner.invoke(app, ["promote", "churn", "7"])
    assert missing.exit_code == 2 and "no version 7" in missing.output
    assert runner.invoke(app, ["promote", "churn", "1"]).exit_code == 0


def test_a_failure_during_training_leaves_the_registry_as_it_was(trained, monkeypatch) -> None:
    import kundenwert.training.backtest as B

    before = {m: describe_versions(m) for m in MODELS}
    real = B.fit_and_backtest

    def failing(name, data, progress=None):
        if name == "affinity":  # the third model: two are trained already
            raise RuntimeError("injected failure")
        return real(name, data, progress)

    monkeypatch.setattr(B, "fit_and_backtest", failing)
    result = CliRunner().invoke(app, ["train", "--config", str(trained["config"])])
    # an unexpected error: one line naming it, exit 70, no traceback (``friendly``)
    assert result.exit_code == 70 and "RuntimeError: injected failure" in result.output
    assert "Traceback" not in result.output
    assert {m: describe_versions(m) for m in MODELS} == before


def test_an_invalid_config_is_refused_before_any_work(trained, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[labels]\nhorizon = 'soon'\n")
    before = {m: describe_versions(m) for m in MODELS}
    result = CliRunner().invoke(app, ["train", "--config", str(bad)])
    assert result.exit_code == 2 and "labels.horizon" in result.output
    assert CliRunner().invoke(app, ["train", "--models", "churn,nba"]).exit_code == 2
    assert {m: describe_versions(m) for m in MODELS} == before
