"""The experiment configuration: data, snapshot, labels, split, models, hyperparameters and gates.

One TOML file (the packaged ``kundenwert/defaults/experiment.toml`` is the default) holds everything a training run
needs. It is validated completely before any work starts: unknown sections or keys, wrong
types, unknown models, hyperparameters an estimator does not have and gates on metrics a model
does not report are refused with the field's path in the message.
"""

from __future__ import annotations

import tomllib
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from kundenwert.defaults import default_file
from kundenwert.errors import ConfigurationError
from kundenwert.features.labels import LabelConfig
from kundenwert.features.snapshot import SnapshotConfig
from kundenwert.features.training_set import SplitConfig
from kundenwert.models.specs import SPECS, get_spec, unknown_models

DEFAULT_CONFIG = default_file("experiment.toml")  # shipped in the wheel

# The models are the registered specs, by name (``kundenwert.models.specs``); kept under this name
# for the callers that iterate the models.
MODELS = SPECS


class ModelConfig(BaseModel):
    """One model: whether to train it, its hyperparameters and its gates.

    ``gates`` map a metric to its bound: ``min_<metric>`` must be reached, ``max_<metric>`` not
    exceeded, on the test split, before a version may become ``champion``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    params: dict[str, Any] = Field(default_factory=dict)
    gates: dict[str, float] = Field(default_factory=dict)


class DataConfig(BaseModel):
    """Which rows train: rows per cutoff are sampled by customer to bound the training time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_train_cutoffs: int = Field(6, ge=1, description="latest training cutoffs used")
    max_customers_per_cutoff: int = Field(
        15_000, ge=0, description="sample this many customers per cutoff (stable hash); 0: all"
    )
    seed: int = Field(0, description="random seed of the models and the sampling")

    @field_validator("max_customers_per_cutoff")
    @classmethod
    def _enough_customers(cls, v: int) -> int:
        if 0 < v < 100:
            raise ValueError("sample at least 100 customers per cutoff, or 0 for all of them")
        return v


class ExperimentConfig(BaseModel):
    """Everything a training run needs; ``kundenwert/defaults/experiment.toml`` holds the defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("kundenwert", min_length=1, description="MLflow experiment name")
    data: DataConfig = Field(default_factory=DataConfig)
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig)
    labels: LabelConfig = Field(default_factory=LabelConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    models: dict[str, ModelConfig] = Field(
        default_factory=dict,
        description="per model; a model without a section, or a section without gates, gets its spec's gates",
    )

    @field_validator("models")
    @classmethod
    def _known_models(cls, models: dict[str, ModelConfig]) -> dict[str, ModelConfig]:
        unknown = unknown_models(list(models))
        if unknown:
            raise ValueError(f"unknown model(s) {', '.join(unknown)}; models are: {', '.join(SPECS)}")
        return models

    @model_validator(mode="after")
    def _params_and_gates(self) -> ExperimentConfig:
        problems = []
        for name, section in self.models.items():
            spec = get_spec(name)
            cls = spec.estimator_class
            known = set(cls().get_params())
            for key in sorted(set(section.params) - known):
                problems.append(f"models.{name}.params.{key}: {cls.__name__} has no parameter {key!r}")
            if not problems and hasattr(cls, "_parameter_constraints"):
                try:
                    cls(**section.params)._validate_params()  # scikit-learn's parameter constraints
                except (TypeError, ValueError) as exc:
                    problems.append(f"models.{name}.params: {exc}")
            problems += [f"models.{name}.gates.{p}" for p in spec.gate_problems(section.gates)]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def enabled(self, only: list[str] | None = None) -> list[str]:
        """The models to train: the enabled ones, or ``only`` (which must name known models)."""
        if only:
            unknown = unknown_models(only)
            if unknown:
                raise ConfigurationError(
                    f"--models: unknown model(s) {', '.join(unknown)}; models are: {', '.join(SPECS)}"
                )
            return [m for m in SPECS if m in only]
        return [m for m in SPECS if self.model(m).enabled]

    def model(self, name: str) -> ModelConfig:
        """The section of model ``name``; without one: enabled, default parameters, the spec's
        gates. A section without a ``gates`` key keeps the spec's gates too (setting parameters
        must not silently drop the gates); ``gates = {}`` turns them off."""
        if name not in self.models:
            return ModelConfig(gates=dict(get_spec(name).gates))
        section = self.models[name]
        if "gates" not in section.model_fields_set:
            return section.model_copy(update={"gates": dict(get_spec(name).gates)})
        return section


def _where(error: ErrorDetails) -> str:
    return ".".join(str(p) for p in error["loc"]) or "(file)"


def load_config(path: str | Path | None = None) -> ExperimentConfig:
    """The configuration from a TOML file (default: the packaged experiment), validated.

    Raises ``ConfigurationError`` naming the file and every invalid field.
    """
    source: Path | Traversable = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"experiment configuration {source} does not exist") from None
    except OSError as exc:  # a folder, no permission, ...
        raise ConfigurationError(
            f"experiment configuration {source} cannot be read: {exc.strerror}"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"experiment configuration {source} is not valid TOML: {exc}") from None
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        fields = "; ".join(f"{_where(e)}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"experiment configuration {source}: {fields}") from None
