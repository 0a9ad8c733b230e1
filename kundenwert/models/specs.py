"""One spec per model: everything training, tracking, plots and scoring need to know about it.

A model is one ``ModelSpec`` in ``SPECS``: its estimator, which label it learns (column, horizon,
population), the metrics its backtest reports and how they are computed, the primary metric and
its direction, default gates, the pyfunc method, the types skops may load, its diagnostic plots
and what a scoring run stores from it. Training, config validation, the registry, the plots,
scoring and the CLI name no model: they read the specs. Adding a model means adding one spec
(``register_spec``; ``registered`` for a block, as the tests do); serving reads the score columns
a spec stores by their names (``clv``, ``churn``, ...), as the action catalog's formulas do.

Reading the specs is cheap: estimators are named by ``"module:Class"`` and imported when first
used, and the callables import what they need when called.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from kundenwert.errors import ConfigurationError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

Population = Literal["all", "active", "lapsed", "contacts"]
Horizon = Literal["horizon", "clv_horizon"]
# A metric the test rows cannot measure is None (e.g. a Qini without control rows), never a number.
Metrics = Callable[[Any, "pd.DataFrame", Any], Mapping[str, float | None]]


class PlotKit(Protocol):
    """The drawing functions ``kundenwert.experiments.plots`` hands to a spec's ``plots``: a
    spec says *what* to draw, the kit draws it (so ``models`` never imports matplotlib code)."""

    def curves(self, title: str, series: dict, unit: str = "customers") -> list: ...
    def shap_summary(self, model: Any, X: pd.DataFrame, title: str, target: str | None = None) -> Any: ...
    def clv_by_frequency(self, X: pd.DataFrame, actual: Any, predicted: Any) -> Any: ...
    def value_gains(self, actual: Any, predicted: Any) -> Any: ...
    def affinity_heatmap(self, X: pd.DataFrame, labels: pd.DataFrame, predicted: pd.DataFrame) -> Any: ...
    def qini(self, y: Any, treated: Any, uplift: Any) -> Any: ...


Plots = Callable[[PlotKit, Any, "pd.DataFrame", Any], list]


@dataclass(frozen=True)
class LabelSpec:
    """Which label a model learns.

    ``column``: a column of ``features.labels.labels_at`` (``churn``), or with ``per_column`` a
    prefix matching one label column each (``affinity_``: one per category); for the ``contacts``
    population the outcome of ``response_labels`` (one row per contact, not per customer).
    ``horizon``: the ``LabelConfig`` field giving the label window. ``population``: the
    customers the label is defined for (status at the cutoff), or ``contacts``.
    ``binary``: a 0/1 label (a rate is reported), else a value (CLV).
    ``needs``: the tables that must have rows for the label to exist (a store without purchases
    trains no model that learns from purchases; training says so and goes on with the others).
    """

    column: str
    horizon: Horizon = "horizon"
    population: Population = "all"
    per_column: bool = False
    binary: bool = True
    needs: tuple[str, ...] = ("purchases",)


@dataclass(frozen=True)
class Stored:
    """What a scoring run stores from a model.

    ``predict(model, X)``: the stored score of each row of ``X``, an array (stored as
    ``column``, default the model's name) or a frame (each column stored); rows outside
    ``population`` are left missing. ``reasons``: also store each scored customer's top SHAP
    reasons as ``reasons_<reasons>``, explaining ``explained(model)`` (default the model).
    ``per_action(model, X, pairs, uplift=, rows=)``: instead of columns, the propensity per
    (customer, action, channel) the customer is eligible for (one model of the set does this).
    """

    predict: Callable[[Any, pd.DataFrame], np.ndarray | pd.DataFrame] | None = None
    column: str | None = None
    population: Literal["all", "active", "lapsed"] = "all"
    reasons: str | None = None
    explained: Callable[[Any], Any] | None = None
    per_action: Callable[..., pd.DataFrame] | None = None


# Types a kundenwert model may hold beyond skops' defaults (numpy, scipy, sklearn estimators): the
# boosted classifier and encoder every model is built from, and sklearn internals they contain.
COMMON_TRUSTED_TYPES = (
    "kundenwert.models.tabular.CalibratedGBMClassifier",
    "kundenwert.models.tabular.FeatureEncoder",
    "kundenwert.models.calibration.LogitCalibrator",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.LogLink",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfGammaLoss",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss.link.Interval",
    "builtins.slice",
)


def gate_metric(gate: str) -> tuple[str, str]:
    """``min_roc_auc`` -> ``("min", "roc_auc")``."""
    bound, _, metric = gate.partition("_")
    return bound, metric


@dataclass(frozen=True)
class ModelSpec:
    """One model, everything about it in one place (see the module docstring).

    ``estimator``: the class, or ``"module:Class"`` (imported on first use). ``score(model, X,
    y)``: the backtest metrics on test rows, for any version of the model (the champion is
    scored on a challenger's rows too); ``metrics``: the ones gates may name. ``gates``: used
    when the experiment has no section for the model. ``trusted_types``: beyond
    ``COMMON_TRUSTED_TYPES`` and the estimator's own class, which are always trusted.
    ``plots(kit, model, X, y)``: the diagnostic plots on test rows (none when None).
    """

    name: str
    estimator: type | str
    label: LabelSpec
    metrics: tuple[str, ...]
    score: Metrics
    primary_metric: str
    lower_is_better: frozenset[str] = frozenset()
    gates: Mapping[str, float] = field(default_factory=dict)
    pyfunc_method: Literal["predict", "predict_proba"] = "predict_proba"
    trusted_types: tuple[str, ...] = ()
    plots: Plots | None = None
    stores: Stored = field(default_factory=Stored)

    def __post_init__(self) -> None:
        object.__setattr__(self, "gates", MappingProxyType(dict(self.gates)))
        object.__setattr__(self, "lower_is_better", frozenset(self.lower_is_better))
        problems = [f"gates.{p}" for p in self.gate_problems(self.gates)]
        if self.primary_metric not in self.metrics:
            problems.append(f"primary_metric {self.primary_metric!r} is not one of its metrics")
        problems += [
            f"lower_is_better: {m!r} is not one of its metrics"
            for m in self.lower_is_better - set(self.metrics)
        ]
        if problems:
            raise ConfigurationError(f"model spec {self.name!r}: {'; '.join(problems)}")

    @property
    def estimator_class(self) -> type:
        """The estimator class (imported now when the spec names it by path)."""
        if isinstance(self.estimator, type):
            return self.estimator
        module, _, name = self.estimator.partition(":")
        return getattr(importlib.import_module(module), name)

    @property
    def estimator_path(self) -> str:
        """``module.Class`` of the estimator, as skops names types."""
        if isinstance(self.estimator, type):
            return f"{self.estimator.__module__}.{self.estimator.__qualname__}"
        return self.estimator.replace(":", ".")

    @property
    def all_trusted_types(self) -> tuple[str, ...]:
        """Every type skops may load for this model."""
        return tuple(dict.fromkeys((*COMMON_TRUSTED_TYPES, self.estimator_path, *self.trusted_types)))

    def gate_problems(self, gates: Mapping[str, float]) -> list[str]:
        """``<gate>: what is wrong`` for each gate that is not ``min_``/``max_`` of a metric of this model."""
        out = []
        for gate in gates:
            bound, metric = gate_metric(gate)
            if bound not in ("min", "max") or metric not in self.metrics:
                out.append(
                    f"{gate}: use min_<metric> or max_<metric> with a metric of {', '.join(self.metrics)}"
                )
        return out


# ------------------------------------------------------------------ the registry

SPECS: dict[str, ModelSpec] = {}


def register_spec(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add ``spec`` after the registered ones (training and scoring follow this order)."""
    if spec.name in SPECS and not replace:
        raise ConfigurationError(
            f"model spec {spec.name!r} is registered already; pass replace=True to replace it"
        )
    SPECS[spec.name] = spec
    return spec


def unregister_spec(name: str) -> ModelSpec:
    """Remove a registered spec (``ConfigurationError`` naming the known ones when absent)."""
    get_spec(name)
    return SPECS.pop(name)


@contextmanager
def registered(spec: ModelSpec) -> Iterator[ModelSpec]:
    """``spec`` registered for a block, removed afterwards (a sixth model in a test)."""
    register_spec(spec)
    try:
        yield spec
    finally:
        SPECS.pop(spec.name, None)


def get_spec(name: str) -> ModelSpec:
    """The spec of model ``name``; ``ConfigurationError`` listing the models when unknown."""
    try:
        return SPECS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown model {name!r}; models are: {', '.join(SPECS)} "
            "(a new model needs a spec: kundenwert.models.specs.register_spec)"
        ) from None


def unknown_models(names: list[str]) -> list[str]:
    """The names of ``names`` that no spec has, sorted."""
    return sorted(set(names) - set(SPECS))


def stored_scores() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The per-customer columns scoring runs store from the registered models: (names, prefixes).
    A model stores its spec's ``column`` (default its name), or, with a per-column label
    (``affinity_``), one column per label under that prefix. The response model stores pairs."""
    stores = [s for s in SPECS.values() if s.stores.predict is not None]
    names = tuple(s.stores.column or s.name for s in stores if not s.label.per_column)
    prefixes = tuple(s.label.column for s in stores if s.label.per_column)
    return names, prefixes


def lower_is_better(metric: str) -> bool:
    """Whether a lower ``metric`` is better (a metric means the same for every model)."""
    return any(metric in s.lower_is_better for s in SPECS.values())


# ------------------------------------------------------------------ metrics of the five models


def classifier_metrics(model: Any, X: pd.DataFrame, y: Any) -> dict[str, float]:
    """``CLASSIFICATION`` metrics of a binary classifier's P(label = 1) on test rows."""
    from kundenwert.models.metrics import classification_metrics

    return classification_metrics(y, model.predict_proba(X)[:, 1])


def _value_metrics(model: Any, X: pd.DataFrame, y: Any) -> dict[str, float]:
    from kundenwert.models.metrics import value_metrics

    return value_metrics(y.to_numpy(), model.predict(X))


def _affinity_metrics(model: Any, X: pd.DataFrame, y: pd.DataFrame) -> dict[str, float]:
    import numpy as np

    from kundenwert.models.metrics import classification_metrics

    pred = model.predict_frame(X)
    per = {c: classification_metrics(y[c], pred[c.removeprefix("label_")]) for c in y.columns}
    aucs = [m["roc_auc"] for m in per.values()]
    return {
        "roc_auc_mean": float(np.mean(aucs)),
        "roc_auc_min": float(np.min(aucs)),
        "brier_mean": float(np.mean([m["brier"] for m in per.values()])),
        **{f"roc_auc_{c.removeprefix('label_affinity_')}": m["roc_auc"] for c, m in per.items()},
    }


def _response_metrics(model: Any, X: pd.DataFrame, y: Any) -> dict[str, float | None]:
    from kundenwert.models.metrics import classification_metrics
    from kundenwert.models.response import measurable_qini

    pred = model.predict_frame(X)
    return {**classification_metrics(y, pred["response"]), **measurable_qini(y, X, pred["uplift"])}


# ------------------------------------------------------------------ plots of the five models


def classifier_plots(name: str, unit: str = "customers") -> Plots:
    """ROC, precision-recall, calibration, gains/lift and the SHAP summary of a binary classifier."""

    def plots(kit: PlotKit, model: Any, X: pd.DataFrame, y: Any) -> list:
        import numpy as np

        p = model.predict_proba(X)[:, 1]
        return [*kit.curves(name, {name: (np.asarray(y), p)}, unit), kit.shap_summary(model, X, name)]

    return plots


def _clv_plots(kit: PlotKit, model: Any, X: pd.DataFrame, y: Any) -> list:
    import numpy as np

    actual, predicted = np.asarray(y, dtype="float64"), model.predict(X)
    return [
        kit.clv_by_frequency(X, actual, predicted),
        kit.value_gains(actual, predicted),
        kit.shap_summary(model, X, "CLV"),
    ]


def _affinity_plots(kit: PlotKit, model: Any, X: pd.DataFrame, y: pd.DataFrame) -> list:
    pred = model.predict_frame(X)
    series = {
        c.removeprefix("label_affinity_"): (y[c].to_numpy(), pred[c.removeprefix("label_")].to_numpy())
        for c in y.columns
    }
    best = max(series, key=lambda c: series[c][0].sum())  # the category with most buyers
    shap = kit.shap_summary(model, X, f"affinity ({best})", target=best)
    return [*kit.curves("affinity", series), shap, kit.affinity_heatmap(X, y, pred)]


def _response_plots(kit: PlotKit, model: Any, X: pd.DataFrame, y: Any) -> list:
    import numpy as np

    pred = model.predict_frame(X)
    from kundenwert.models.response import uplift_rows

    plots = kit.curves("response", {"response": (np.asarray(y), pred["response"].to_numpy())}, "contacts")
    rows = uplift_rows(X, pred["uplift"])  # the Qini only where the test rows can measure it
    qini = [kit.qini(np.asarray(y)[rows], X["treated"][rows], pred["uplift"][rows])] if rows.any() else []
    return [*plots, *qini, kit.shap_summary(model, X, "response")]


# ------------------------------------------------------------------ what scoring stores


def probability(model: Any, X: pd.DataFrame) -> np.ndarray:
    """P(label = 1) of a binary classifier."""
    return model.predict_proba(X)[:, 1]


def _clv_score(model: Any, X: pd.DataFrame) -> np.ndarray:
    return model.predict(X)


def _affinity_scores(model: Any, X: pd.DataFrame) -> pd.DataFrame:
    return model.predict_frame(X)  # affinity_<category>


def _buy_part(model: Any) -> Any:
    return getattr(model, "buy_", model)  # what drives bringing any value: the buy classifier


def _response_per_action(
    model: Any, X: pd.DataFrame, pairs: list, *, uplift: bool, rows: dict
) -> pd.DataFrame:
    return model.predict_actions(X, pairs, uplift=uplift, rows=rows)


CLASSIFICATION = ("roc_auc", "pr_auc", "brier", "lift_top_decile", "ece")
CLASSIFICATION_LOWER = frozenset({"brier", "ece"})


def _status_classifier(
    name: str, estimator: str, population: Literal["active", "lapsed"], min_roc_auc: float
) -> ModelSpec:
    """A classifier of the label ``name`` for customers of one status, scored for them with reasons."""
    return ModelSpec(
        name=name,
        estimator=estimator,
        label=LabelSpec(name, population=population),
        metrics=CLASSIFICATION,
        score=classifier_metrics,
        primary_metric="roc_auc",
        lower_is_better=CLASSIFICATION_LOWER,
        gates={"min_roc_auc": min_roc_auc, "max_ece": 0.05},
        plots=classifier_plots(name),
        stores=Stored(predict=probability, population=population, reasons=name),
    )


def _builtin_specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            name="clv",
            estimator="kundenwert.models.clv:CLVModel",
            label=LabelSpec("clv", horizon="clv_horizon", binary=False),
            metrics=("mae", "spearman", "top20_captured"),
            score=_value_metrics,
            primary_metric="spearman",
            lower_is_better=frozenset({"mae"}),
            gates={"min_spearman": 0.3},
            pyfunc_method="predict",
            plots=_clv_plots,
            stores=Stored(predict=_clv_score, reasons="value", explained=_buy_part),
        ),
        _status_classifier("churn", "kundenwert.models.tabular:ChurnModel", "active", 0.65),
        _status_classifier("winback", "kundenwert.models.tabular:WinbackModel", "lapsed", 0.7),
        ModelSpec(
            name="affinity",
            estimator="kundenwert.models.affinity:AffinityModel",
            label=LabelSpec("affinity_", per_column=True),
            metrics=("roc_auc_mean", "roc_auc_min", "brier_mean"),
            score=_affinity_metrics,
            primary_metric="roc_auc_mean",
            lower_is_better=frozenset({"brier_mean"}),
            gates={"min_roc_auc_mean": 0.7},
            pyfunc_method="predict",
            plots=_affinity_plots,
            stores=Stored(predict=_affinity_scores),
        ),
        ModelSpec(
            name="response",
            estimator="kundenwert.models.response:ResponseModel",
            label=LabelSpec("responded", population="contacts", needs=("contacts",)),
            metrics=(*CLASSIFICATION, "qini_normalized"),
            score=_response_metrics,
            primary_metric="roc_auc",
            lower_is_better=CLASSIFICATION_LOWER,
            gates={"min_roc_auc": 0.65, "min_qini_normalized": 0.05},
            plots=_response_plots,
            stores=Stored(per_action=_response_per_action),
        ),
    ]


for _spec in _builtin_specs():
    register_spec(_spec)
del _spec
