"""Train and backtest every model from the store's frames, as the experiment configuration says.

For a horizon ``h`` the cutoffs roll every ``split.step_days`` up to the last one whose label window
ends inside the data; ``time_split`` keeps the test label windows clear of the training ones. A
model is fitted on the training and validation cutoffs (the classifiers calibrate out of fold
inside) and scored on the test cutoffs, and its gates are checked there. Each model's spec
(``kundenwert.models.specs``) says which label, horizon and population it learns and how it is
scored; a model with a longer horizon (CLV) has its own cutoffs. Nothing here writes anything: tracking and the registry
take the results (``kundenwert.experiments``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kundenwert.errors import ConfigurationError
from kundenwert.features.labels import LabelConfig, response_labels
from kundenwert.features.snapshot import spec_for
from kundenwert.features.training_set import build_training_set, rolling_cutoffs, time_split
from kundenwert.models.response import response_rows
from kundenwert.models.specs import ModelSpec, get_spec
from kundenwert.training.config import ExperimentConfig
from kundenwert.training.promotion import check_gates

Progress = Callable[[str], None]


@dataclass
class ModelResult:
    """One trained model: the fitted estimator, its test metrics, its gates and its data."""

    name: str
    model: object
    metrics: dict[str, float]
    gates: dict[str, dict[str, float | bool | str]]
    data: dict[str, object] = field(default_factory=dict)
    test: tuple | None = field(default=None, repr=False)  # (X, y) of the test cutoffs, not logged

    @property
    def passed(self) -> bool:
        return all(g["passed"] for g in self.gates.values())


def _hashed(ids, seed: int) -> np.ndarray:
    """A stable pseudo-random number per customer id (the same id, the same number, every run)."""
    return pd.util.hash_array(np.asarray(ids, dtype=object), hash_key=f"{seed:016d}"[:16])


def _sample(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """At most ``limit`` customers per cutoff, chosen by a stable hash of (seed, customer_id)."""
    if not limit:
        return frame
    h = _hashed(frame.index.get_level_values("customer_id"), seed)
    rank = pd.Series(h, index=frame.index).groupby(level="cutoff").rank(method="first")
    return frame[(rank <= limit).to_numpy()]


def _fingerprint(frames: dict[str, pd.DataFrame]) -> str:
    """A short hash of the rows (per table: count and a hash of the values), no personal data."""
    digest = hashlib.sha256()
    for name in sorted(frames):
        df = frames[name]
        digest.update(f"{name}:{len(df)}:".encode())
        digest.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


class TrainingData:
    """Training sets by horizon, built once and shared by the models of a run."""

    def __init__(
        self, frames: dict[str, pd.DataFrame], config: ExperimentConfig, progress: Progress | None = None
    ):
        self.frames, self.config = frames, config
        self.progress = progress or (lambda _msg: None)
        purchases = frames["purchases"]
        if purchases.empty:
            raise ConfigurationError("the store has no purchases: import data before training")
        self.first, self.last = purchases["purchased_at"].min(), purchases["purchased_at"].max()
        self.spec = spec_for(frames, config.snapshot)
        self._sets: dict[int, tuple[pd.DataFrame, dict]] = {}
        self.fingerprint = _fingerprint(frames)

    def cutoffs(self, horizon: int) -> dict[str, list[pd.Timestamp]]:
        """Training, validation and test cutoffs for labels of ``horizon`` days. Validation cutoffs
        join the training rows (the models stop early and calibrate on inner splits), so for the
        long CLV horizon none are set apart: a year-long window each would leave no training
        cutoff in three years of data."""
        cfg = self.config
        split_cfg = (
            cfg.split
            if horizon == cfg.labels.horizon
            else cfg.split.model_copy(update={"validation_cutoffs": 0})
        )
        try:
            split = time_split(rolling_cutoffs(self.first, self.last, horizon, split_cfg), horizon, split_cfg)
        except ValueError as exc:
            raise ConfigurationError(f"horizon {horizon} days: {exc}") from None
        split["train"] = split["train"][-cfg.data.max_train_cutoffs :]
        return split

    def _customers_of(self, cutoffs: list[pd.Timestamp]) -> dict[str, pd.DataFrame]:
        """The frames cut down to the customers ``_sample`` can choose at any of ``cutoffs`` (at
        each, the ``limit`` smallest hashes among the customers registered before it). Features
        and labels are per customer, so the sampled rows are the same as from every customer,
        while snapshots and labels are computed for a fraction of them."""
        limit, seed = self.config.data.max_customers_per_cutoff, self.config.data.seed
        customers = self.frames["customers"]
        if not limit or len(customers) <= limit:
            return self.frames
        ids = customers["customer_id"].to_numpy()
        order = np.argsort(_hashed(ids, seed), kind="stable")
        created = customers["created_at"].iloc[order]
        keep = np.zeros(len(ids), dtype=bool)
        for t in cutoffs:
            known = np.flatnonzero((created < t).to_numpy())
            keep[order[known[:limit]]] = True
        chosen = pd.Index(ids[keep])
        return {
            name: df[df["customer_id"].isin(chosen)] if "customer_id" in df.columns else df
            for name, df in self.frames.items()
        }

    def table(self, horizon: int, labels: LabelConfig) -> tuple[pd.DataFrame, dict[str, list[pd.Timestamp]]]:
        """Features and labels at every cutoff of this horizon (sampled per the config)."""
        if horizon not in self._sets:
            split = self.cutoffs(horizon)
            self.progress(
                f"building the training set for {horizon}-day labels ({sum(map(len, split.values()))} cutoffs)"
            )
            wanted = split["train"] + split["validation"] + split["test"]
            ts = build_training_set(
                self._customers_of(wanted), wanted, self.config.snapshot, labels, spec=self.spec
            )
            self._sets[horizon] = (
                _sample(ts, self.config.data.max_customers_per_cutoff, self.config.data.seed),
                split,
            )
        return self._sets[horizon]

    def response(self) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series, dict]:
        """Contact rows with the snapshot at their cutoff: training and test. The snapshots are
        the features of the (sampled) training set of the same horizon."""
        cfg = self.config
        ts, split = self.table(cfg.labels.horizon, cfg.labels)
        features = [c for c in ts.columns if not c.startswith("label_")]
        parts = {}
        for part, cuts in (("train", split["train"] + split["validation"]), ("test", split["test"])):
            xs, ys = [], []
            for t in cuts:
                snap = ts.xs(t, level="cutoff")[features]
                x, y = response_rows(snap, response_labels(self.frames["contacts"], t, cfg.labels))
                xs.append(x)
                ys.append(y)
            parts[part] = (pd.concat(xs), pd.concat(ys))
        return (*parts["train"], *parts["test"], split)

    def examples(self, spec: ModelSpec) -> tuple[pd.DataFrame, Any, tuple, dict, str]:
        """``(X, y, (X_test, y_test), split, what)`` of a model's label (``spec.label``): its
        horizon's training set, the rows of its population with a label, or the contact rows;
        ``what`` says what the rows are, for the progress line."""
        label = spec.label
        if label.population == "contacts":
            X, y, Xt, yt, split = self.response()
            return X, y, (Xt, yt), split, f"{len(X):,} contacts"
        ts, split = self.table(getattr(self.config.labels, label.horizon), self.config.labels)
        cut = ts.index.get_level_values("cutoff")
        train, held = ts[cut.isin(split["train"] + split["validation"])], ts[cut.isin(split["test"])]
        if label.population != "all":
            train = train[(train["label_status"] == label.population).to_numpy()]
            held = held[(held["label_status"] == label.population).to_numpy()]
        features = [c for c in ts.columns if not c.startswith("label_")]
        if label.per_column:
            labels = [c for c in ts.columns if c.startswith(f"label_{label.column}")]
            what = f"{len(train):,} rows ({len(labels)} labels)"
            return train[features], train[labels], (held[features], held[labels]), split, what
        column = f"label_{label.column}"
        train, held = train[train[column].notna()], held[held[column].notna()]
        return train[features], train[column], (held[features], held[column]), split, f"{len(train):,} rows"


def _describe(
    split: dict, rows: int, label_rate: float | None, features: list[str], fingerprint: str
) -> dict:
    return {
        "cutoffs": {k: [t.strftime("%Y-%m-%d") for t in v] for k, v in split.items()},
        "rows": int(rows),
        "label_rate": None if label_rate is None else float(label_rate),
        "features": features,
        "data_fingerprint": fingerprint,
    }


def fit_and_backtest(name: str, data: TrainingData, progress: Progress | None = None) -> ModelResult:
    """Fit one model on the training cutoffs and score it on the test cutoffs (as its spec says)."""
    spec = get_spec(name)
    cfg = data.config
    section = cfg.model(name)
    params = dict(section.params)
    cls = spec.estimator_class
    if "random_state" in cls().get_params():
        params.setdefault("random_state", cfg.data.seed)
    model = cls(**params)
    X, y, test, split, what = data.examples(spec)
    (progress or (lambda _msg: None))(f"fitting {name} on {what}")
    model.fit(X, y)
    rate = float(y.to_numpy().mean()) if isinstance(y, pd.DataFrame) else float(y.mean())
    metrics = spec.score(model, *test)
    described = _describe(split, len(X), rate, list(model.feature_names_in_), data.fingerprint)
    return ModelResult(name, model, metrics, check_gates(metrics, section.gates), described, test)


def train_models(
    frames: dict[str, pd.DataFrame],
    config: ExperimentConfig,
    models: list[str] | None = None,
    progress: Progress | None = None,
) -> dict[str, ModelResult]:
    """Fit and backtest the chosen (or enabled) models; the results by model name."""
    names = config.enabled(models)
    data = TrainingData(frames, config, progress)
    return {name: fit_and_backtest(name, data, progress) for name in names}


def report(results: dict[str, ModelResult]) -> str:
    """Every metric, gate and data description as JSON (for ``--report``)."""
    return json.dumps(
        {
            name: {"metrics": r.metrics, "gates": r.gates, "passed": r.passed, "data": r.data}
            for name, r in results.items()
        },
        indent=2,
        default=float,
    )
