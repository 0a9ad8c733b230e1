"""The experiment configuration is validated completely, with the field named, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from kundenwert.errors import ConfigurationError
from kundenwert.training.config import DEFAULT_CONFIG, MODELS, ExperimentConfig, load_config


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


def test_the_default_file_is_the_default_config() -> None:
    cfg = load_config()
    assert DEFAULT_CONFIG.exists() and cfg.enabled() == list(MODELS)
    assert cfg.labels.horizon == 90 and cfg.split.step_days == 30
    assert cfg.data.max_customers_per_cutoff == 15_000 == ExperimentConfig().data.max_customers_per_cutoff
    assert cfg.model("churn").gates == {"min_roc_auc": 0.65, "max_ece": 0.05}
    # An empty file is valid too: every key has a default.
    assert ExperimentConfig().snapshot == cfg.snapshot


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[labels]\nhorizon = -5\n", "labels.horizon"),
        ("[labels]\nhorizont = 90\n", "labels.horizont"),
        ("[snapshot]\nunit = 'M'\n", "snapshot.unit"),
        ("[split]\nstep_days = 'monthly'\n", "split.step_days"),
        ("[models.churm]\nenabled = true\n", "churm"),
        ("[models.churn]\nparams = { max_iterations = 10 }\n", "models.churn.params.max_iterations"),
        ("[models.churn]\nparams = { calibration = 'platt' }\n", "calibration"),
        ("[models.clv]\ngates = { min_roc_auc = 0.7 }\n", "models.clv.gates.min_roc_auc"),
        ("[models.churn]\ngates = { best_roc_auc = 0.7 }\n", "models.churn.gates.best_roc_auc"),
        ("[data]\nmax_train_cutoffs = 0\n", "data.max_train_cutoffs"),
        ("[data]\nmax_customers_per_cutoff = 50\n", "data.max_customers_per_cutoff"),
        ("[surprise]\nx = 1\n", "surprise"),
    ],
)
def test_invalid_fields_are_refused_by_name(tmp_path: Path, text: str, field: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigurationError) as info:
        load_config(path)
    assert field in str(info.value) and str(path) in str(info.value)


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_config(_write(tmp_path, "[labels\nhorizon = 1\n"))


def test_models_can_be_chosen_on_the_command_line() -> None:
    cfg = load_config()
    assert cfg.enabled(["churn", "clv"]) == ["clv", "churn"]
    with pytest.raises(ConfigurationError, match="unknown model"):
        cfg.enabled(["churn", "nba"])
    off = ExperimentConfig.model_validate({"models": {"affinity": {"enabled": False}}})
    assert "affinity" not in off.enabled() and "churn" in off.enabled()


def test_a_model_without_a_section_gets_its_specs_gates() -> None:
    from kundenwert.models.specs import get_spec

    default = load_config()
    bare = ExperimentConfig()
    for m in MODELS:  # the default file repeats the specs' gates
        assert default.model(m).gates == dict(get_spec(m).gates) == bare.model(m).gates, m
    assert bare.enabled() == list(MODELS) and bare.model("churn").params == {}


def test_a_config_path_that_is_no_file_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=f"experiment configuration {tmp_path} cannot be read"):
        load_config(tmp_path)


def test_a_section_with_parameters_only_keeps_the_specs_gates() -> None:
    from kundenwert.models.specs import get_spec

    """Setting a hyperparameter must not silently drop a model's gates; ``gates = {}`` does."""
    cfg = ExperimentConfig.model_validate(
        {"models": {"response": {"params": {"max_iter": 40}}, "churn": {"gates": {}}}}
    )
    assert cfg.model("response").gates == dict(get_spec("response").gates)
    assert cfg.model("response").params == {"max_iter": 40}
    assert cfg.model("churn").gates == {}
