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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kundenwert.errors import ConfigurationError, ModelFitError
from kundenwert.features.labels import LabelConfig, response_labels
from kundenwert.features.snapshot import spec_for
from kundenwert.features.training_set import (
    build_training_set,
    customer_test_rows,
    rolling_cutoffs,
    time_split,
)
from kundenwert.models.response import response_rows
from kundenwert.models.specs import ModelSpec, get_spec
from kundenwert.training.config import ExperimentConfig
from kundenwert.training.promotion import Gate, check_gates

Progress = Callable[[str], None]


@dataclass
class ModelResult:
    """One trained model: the fitted estimator, its test metrics, its gates and its data."""

    name: str
    model: object
    metrics: Mapping[str, float | None]  # None: not measurable on the test rows
    gates: dict[str, Gate]
    data: dict[str, object] = field(default_factory=dict)
    test: tuple | None = field(default=None, repr=False)  # (X, y) of the test cutoffs, not logged

    @property
    def passed(self) -> bool:
        """Every gate passed, or is not applicable (its metric cannot be measured here)."""
        return all(g["passed"] for g in self.gates.values())

    @property
    def split(self) -> dict[str, Any]:
        """How the test rows were set apart: method, reason, test rows and positives, warnings."""
        split = self.data.get("split")
        return split if isinstance(split, dict) else {}

    @property
    def warnings(self) -> list[str]:
        """What the report should say about the split (a small test set)."""
        return list(self.split.get("warnings", []))


class Trained(dict[str, ModelResult]):
    """The results of a run by model name, and ``skipped``: the models the data could not
    train, each with the reason (no purchases in the store, one outcome only, ...)."""

    def __init__(self, results: dict[str, ModelResult], skipped: dict[str, str]) -> None:
        super().__init__(results)
        self.skipped = dict(skipped)


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
    """Training sets by horizon, built once and shared by the models of a run.

    The time axis is that of the purchases, or of the contacts when the store has no purchases
    (a CRM whose products are sold elsewhere): the response model learns from contacts and
    profiles alone, and the models that learn from purchases are not trainable (``missing``)."""

    def __init__(
        self, frames: dict[str, pd.DataFrame], config: ExperimentConfig, progress: Progress | None = None
    ):
        self.frames, self.config = frames, config
        self.progress = progress or (lambda _msg: None)
        purchases, contacts = frames["purchases"], frames["contacts"]
        if purchases.empty and contacts.empty:
            raise ConfigurationError(
                "the store has no purchases and no contacts: import data before training"
            )
        when = purchases["purchased_at"] if len(purchases) else contacts["contacted_at"]
        self.first, self.last = when.min(), when.max()
        self.spec = spec_for(frames, config.snapshot)
        self._sets: dict[int, tuple[pd.DataFrame, dict]] = {}
        self._plans: dict[int, dict] = {}
        self.fingerprint = _fingerprint(frames)

    def missing(self, spec: ModelSpec) -> str | None:
        """Why the store cannot train ``spec``'s model (a table it needs has no rows), or None."""
        for table in spec.label.needs:
            frame = self.frames.get(table)
            if frame is None or frame.empty:
                return f"the store has no {table}: {spec.name} learns from them"
            if table == "contacts" and not (frame["direction"] == "outbound").any():
                return f"the store has no outbound contacts: {spec.name} learns from them"
        return None

    def cutoffs(self, horizon: int) -> dict:
        """The cutoffs for labels of ``horizon`` days and how test rows are set apart:
        ``{"train", "validation", "test": [cutoffs], "method": "time" | "customer", "reason"}``.

        In time, the latest cutoffs test (``time_split``). Validation cutoffs join the training
        rows (the models stop early and calibrate on inner splits), so for the long CLV horizon
        none are set apart: a year-long window each would leave no training cutoff in three years
        of data. When the data is too short for the history and the label windows, or no
        training cutoff is left, the split is by customer (``split.method = "auto"``, the
        default) over the latest cutoffs, or refused (``"time"``)."""
        if horizon in self._plans:
            return self._plans[horizon]
        cfg = self.config
        split_cfg = (
            cfg.split
            if horizon == cfg.labels.horizon
            else cfg.split.model_copy(update={"validation_cutoffs": 0})
        )
        problem = None
        try:
            cuts = rolling_cutoffs(self.first, self.last, horizon, split_cfg)
        except ValueError as exc:
            problem = str(exc)
            try:  # without the history demand: features from whatever history there is
                cuts = rolling_cutoffs(
                    self.first, self.last, horizon, split_cfg.model_copy(update={"min_history_days": 0})
                )
            except ValueError:
                raise ConfigurationError(f"horizon {horizon} days: {exc}") from None
        plan: dict | None = None
        if problem is None and split_cfg.method != "customer":
            try:
                split = time_split(cuts, horizon, split_cfg)
                split["train"] = split["train"][-cfg.data.max_train_cutoffs :]
                plan = {**split, "method": "time", "reason": None}
            except ValueError as exc:
                problem = str(exc)
        if plan is None:
            if split_cfg.method == "time":
                raise ConfigurationError(f"horizon {horizon} days: {problem}")
            latest = cuts[-(cfg.data.max_train_cutoffs + split_cfg.test_cutoffs) :]
            reason = (
                "split.method is customer"
                if split_cfg.method == "customer"
                else f"no time split: {problem}; customers are set apart instead"
            )
            plan = {"train": latest, "validation": [], "test": latest, "method": "customer", "reason": reason}
        self._plans[horizon] = plan
        return plan

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

    def table(self, horizon: int, labels: LabelConfig) -> tuple[pd.DataFrame, dict]:
        """Features and labels at every cutoff of this horizon (sampled per the config)."""
        if horizon not in self._sets:
            plan = self.cutoffs(horizon)
            wanted = sorted(set(plan["train"] + plan["validation"] + plan["test"]))
            self.progress(f"building the training set for {horizon}-day labels ({len(wanted)} cutoffs)")
            ts = build_training_set(
                self._customers_of(wanted), wanted, self.config.snapshot, labels, spec=self.spec
            )
            self._sets[horizon] = (
                _sample(ts, self.config.data.max_customers_per_cutoff, self.config.data.seed),
                plan,
            )
        return self._sets[horizon]

    def _contact_rows(
        self, ts: pd.DataFrame, cutoffs: list[pd.Timestamp]
    ) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
        """Contact rows with the snapshot at their cutoff, for each of ``cutoffs``, and the cutoff
        of each row. The snapshots are the features of the (sampled) training set."""
        features = [c for c in ts.columns if not c.startswith("label_")]
        xs, ys, cut = [], [], []
        for t in cutoffs:
            snap = ts.xs(t, level="cutoff")[features]
            contacts = self.frames["contacts"]
            mine = contacts[contacts["customer_id"].isin(snap.index)]  # the sampled customers' only
            x, y = response_rows(snap, response_labels(mine, t, self.config.labels))
            xs.append(x)
            ys.append(y)
            cut.append(np.full(len(x), t))
        return pd.concat(xs), pd.concat(ys), np.concatenate(cut) if cut else np.array([])

    def _rows(self, spec: ModelSpec) -> tuple[pd.DataFrame, Any, pd.DatetimeIndex, dict]:
        """Every row of a model's label at its cutoffs: (X, y, cutoff of each row, plan)."""
        label = spec.label
        horizon = (
            self.config.labels.horizon
            if label.population == "contacts"
            else getattr(self.config.labels, label.horizon)
        )
        ts, plan = self.table(horizon, self.config.labels)
        wanted = sorted(set(plan["train"] + plan["validation"] + plan["test"]))
        if label.population == "contacts":
            X, y, cut = self._contact_rows(ts, wanted)
            return X, y, pd.DatetimeIndex(cut), plan
        if label.population != "all":
            ts = ts[(ts["label_status"] == label.population).to_numpy()]
        features = [c for c in ts.columns if not c.startswith("label_")]
        if label.per_column:
            labels = [c for c in ts.columns if c.startswith(f"label_{label.column}")]
            if not labels:
                raise ModelFitError(f"no {label.column} labels: the purchases name no category")
            return ts[features], ts[labels], pd.DatetimeIndex(ts.index.get_level_values("cutoff")), plan
        column = f"label_{label.column}"
        ts = ts[ts[column].notna()]
        return ts[features], ts[column], pd.DatetimeIndex(ts.index.get_level_values("cutoff")), plan

    def examples(self, spec: ModelSpec) -> tuple[pd.DataFrame, Any, tuple, dict, str]:
        """``(X, y, (X_test, y_test), split, what)`` of a model's label (``spec.label``): its
        horizon's rows of its population with a label, or the contact rows, split as the plan of
        its horizon says (``cutoffs``); ``split`` holds the cutoffs of each part and ``split``
        details (method, reason, test rows and positives, warnings); ``what`` says what the
        rows are, for the progress line. Under ``split.method = "auto"`` a time split whose
        training rows hold one outcome only becomes a split by customer, and so does one whose
        test rows are too few to judge when customers set apart give at least 1.5x its positive
        test labels, counted over distinct contacts or customers (else the time split stays,
        with a warning). ``ModelFitError`` when the rows cannot train the model at all."""
        cfg = self.config.split
        X, y, cut, plan = self._rows(spec)
        if not len(X):
            raise ModelFitError(
                f"no {'contacts' if spec.label.population == 'contacts' else 'rows'} to learn from"
            )
        method, reason = plan["method"], plan["reason"]

        def by_customer() -> np.ndarray:  # the customers set apart: only hashed when needed
            return customer_test_rows(X.index, cfg.test_share, self.config.data.seed)

        if method == "time":
            train = np.asarray(cut.isin(plan["train"] + plan["validation"]))
            test = np.asarray(cut.isin(plan["test"]))
            problem = _too_few(y[train], y[test], spec, cfg)
            # Too few test rows: customers set apart judge better only with clearly more of them.
            better = (
                problem is not None
                and cfg.method == "auto"
                and (
                    problem.startswith("the training")
                    or _distinct_positives(y[by_customer()]) >= 1.5 * _distinct_positives(y[test])
                )
            )
            if better:
                method, reason = "customer", f"{problem} in the time split; customers are set apart instead"
        if method == "customer":
            test = by_customer()
            train = ~test
        Xtr, ytr, Xte, yte = X[train], y[train], X[test], y[test]
        if spec.label.binary and _outcomes(ytr) < 2:
            raise ModelFitError(f"the training rows hold only one outcome ({len(Xtr):,} rows)")
        if spec.label.binary and _outcomes(yte) < 2:
            raise ModelFitError(
                f"the test rows hold only one outcome ({len(Xte):,} rows): nothing to judge by"
            )
        rows, positives = len(Xte), _positives(yte)
        warnings = []
        if rows < cfg.min_test_rows or positives < cfg.min_test_positives:
            warnings.append(
                f"test set small: {rows:,} rows, {positives:,} positives (judging needs about "
                f"{cfg.min_test_rows:,} rows and {cfg.min_test_positives:,} positives)"
            )
        split = {
            "train": list(cut[train].unique().sort_values()),
            "validation": [] if method == "customer" else plan["validation"],
            "test": list(cut[test].unique().sort_values()),
            "method": method,
            "reason": reason,
            "test_rows": rows,
            "test_positives": positives,
            "warnings": warnings,
        }
        if method == "time":
            split["train"] = [t for t in split["train"] if t not in plan["validation"]]
        unit = "contacts" if spec.label.population == "contacts" else "rows"
        what = f"{len(Xtr):,} {unit}"
        if spec.label.per_column:
            what += f" ({ytr.shape[1]} labels)"
        return Xtr, ytr, (Xte, yte), split, what


def _outcomes(y: Any) -> int:
    """The fewest distinct outcomes of any label column (2 when each has both)."""
    frame = y if isinstance(y, pd.DataFrame) else pd.DataFrame({"y": y})
    return int(frame.nunique().min()) if len(frame) else 0


def _positives(y: Any) -> int:
    """Positive labels (a value above 0); for several label columns, the fewest of any column."""
    frame = y if isinstance(y, pd.DataFrame) else pd.DataFrame({"y": y})
    return int((frame > 0).sum().min()) if len(frame) else 0


def _distinct_positives(y: Any) -> int:
    """Positive labels of distinct contacts (a contact is labelled at every cutoff whose window
    holds it) or, per customer, of distinct customers: what a split by customer spread over many
    cutoffs really adds over one test cutoff."""
    frame = y if isinstance(y, pd.DataFrame) else pd.DataFrame({"y": y})
    names = frame.index.names or []
    level = "contact_id" if "contact_id" in names else "customer_id" if "customer_id" in names else None
    if level is None or not len(frame):
        return _positives(frame)
    who = frame.index.get_level_values(level)
    return int(min(who[(frame[c] > 0).to_numpy()].nunique() for c in frame.columns))


def _too_few(y_train: Any, y_test: Any, spec: ModelSpec, cfg) -> str | None:
    """Why a time split cannot train (starts "the training") or judge a model, or None."""
    if not len(y_train) or (spec.label.binary and _outcomes(y_train) < 2):
        return f"the training cutoffs hold {len(y_train):,} rows with {_positives(y_train):,} positives"
    rows, positives = len(y_test), _positives(y_test)
    if rows < cfg.min_test_rows or positives < cfg.min_test_positives:
        return f"the test cutoffs hold {rows:,} rows with {positives:,} positives, too few to judge"
    return None


def _describe(
    split: dict, rows: int, label_rate: float | None, features: list[str], fingerprint: str
) -> dict:
    parts = ("train", "validation", "test")
    return {
        "cutoffs": {k: [t.strftime("%Y-%m-%d") for t in split[k]] for k in parts},
        "split": {k: v for k, v in split.items() if k not in parts},
        "rows": int(rows),
        "label_rate": None if label_rate is None else float(label_rate),
        "features": features,
        "data_fingerprint": fingerprint,
    }


def fit_and_backtest(name: str, data: TrainingData, progress: Progress | None = None) -> ModelResult:
    """Fit one model on the training cutoffs and score it on the test cutoffs (as its spec says).
    ``ModelFitError`` when the store's data cannot train it (``TrainingData.missing``, or rows
    with one outcome only)."""
    spec = get_spec(name)
    missing = data.missing(spec)
    if missing:
        raise ModelFitError(missing)
    cfg = data.config
    section = cfg.model(name)
    params = dict(section.params)
    cls = spec.estimator_class
    if "random_state" in cls().get_params():
        params.setdefault("random_state", cfg.data.seed)
    model = cls(**params)
    X, y, test, split, what = data.examples(spec)
    say = progress or (lambda _msg: None)
    say(f"fitting {name} on {what}" + (f" (split by customer: {split['reason']})" if split["reason"] else ""))
    model.fit(X, y)
    rate = float(y.to_numpy().mean()) if isinstance(y, pd.DataFrame) else float(y.mean())
    metrics = spec.score(model, *test)
    if hasattr(model, "calibrate_uplift"):  # what its uplifts are worth on the held-out rows
        model.calibrate_uplift(*test)
    described = _describe(split, len(X), rate, list(model.feature_names_in_), data.fingerprint)
    # what a later run needs to know which rows this model never trained on (promotion)
    described["split_key"] = (
        {"method": "customer", "seed": cfg.data.seed, "test_share": cfg.split.test_share}
        if split["method"] == "customer"
        else {"method": "time"}
    )
    for warning in split["warnings"]:
        say(f"{name}: {warning}")
    return ModelResult(name, model, metrics, check_gates(metrics, section.gates), described, test)


def train_models(
    frames: dict[str, pd.DataFrame],
    config: ExperimentConfig,
    models: list[str] | None = None,
    progress: Progress | None = None,
) -> Trained:
    """Fit and backtest the chosen (or enabled) models the data can train; the results by model
    name, and the others in ``skipped`` with the reason. ``ConfigurationError`` when none can be
    trained."""
    names = config.enabled(models)
    data = TrainingData(frames, config, progress)
    say = progress or (lambda _msg: None)
    results, skipped = {}, {}
    for name in names:
        try:
            results[name] = fit_and_backtest(name, data, progress)
        except ModelFitError as exc:
            skipped[name] = str(exc)
            say(f"skipping {name}: {exc}")
    if not results:
        why = "; ".join(f"{n}: {r}" for n, r in skipped.items())
        raise ConfigurationError(f"the store's data can train none of the models ({why})")
    return Trained(results, skipped)


def report(results: dict[str, ModelResult]) -> str:
    """Every metric, gate and data description as JSON (for ``--report``); a model the data
    could not train has ``skipped`` and the reason instead. A metric that is not measurable is
    ``null``."""
    out: dict[str, dict] = {
        name: {
            "metrics": r.metrics,
            "gates": r.gates,
            "passed": r.passed,
            "warnings": r.warnings,
            "data": r.data,
        }
        for name, r in results.items()
    }
    for name, reason in getattr(results, "skipped", {}).items():
        out[name] = {"skipped": True, "reason": reason}
    return json.dumps(out, indent=2, default=float)
