"""Gradient boosting on snapshots: the encoding of snapshot columns and a calibrated classifier.

Snapshot columns are numbers, booleans and text (customer type, age group, region, text
attributes). ``FeatureEncoder`` turns them into one float matrix with a fixed column order:
text becomes the position of its value among the values seen in training (unknown or missing:
NaN), so every input column stays one model feature and one SHAP value, which is what reasons
need. Consent columns never enter a model: consent decides whether we may contact someone, not
what we expect of them (and an objection to profiling must not become a profile feature).
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from kundenwert.errors import ModelFitError
from kundenwert.features.snapshot import lookup
from kundenwert.models.calibration import LogitCalibrator
from kundenwert.threads import run_parallel

NEVER_FEATURES = ("consent_", "objection", "label_", "cutoff")  # prefixes of columns never used


class FeatureEncoder(BaseEstimator):
    """Snapshot frame -> float matrix; remembers columns and text categories from ``fit``.

    ``exclude``: column names or prefixes left out (besides consent, objection and labels).
    ``min_category_count``: a text value held by fewer customers is not kept (treated as unknown):
    the categories are stored with the model, and a rare value could single a person out.
    """

    def __init__(self, exclude: tuple[str, ...] = (), min_category_count: int = 20) -> None:
        self.exclude = exclude
        self.min_category_count = min_category_count

    def fit(self, X: pd.DataFrame, y: object = None) -> FeatureEncoder:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"expected a snapshot DataFrame, got {type(X).__name__}")
        skip = (*NEVER_FEATURES, *self.exclude)
        # A column without any value in training carries nothing (and breaks the binning).
        cols = [c for c in X.columns if not str(c).startswith(skip) and X[c].notna().any()]
        if not cols:
            raise ValueError("no feature columns left after the exclusions")
        self.feature_names_in_ = np.array(cols, dtype=object)
        self.categories_: dict[str, np.ndarray] = {}
        names = X.index.names or []
        ids = np.asarray(
            X.index.get_level_values("customer_id") if "customer_id" in names else X.index, dtype=object
        )
        for c in cols:
            s = X[c]
            if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
                held = pd.DataFrame({"who": ids, "value": s.astype("str").to_numpy(dtype=object)})
                held = held[s.notna().to_numpy()].drop_duplicates()
                customers = held.groupby("value").size()
                values = customers.index[customers >= self.min_category_count]
                self.categories_[c] = np.sort(np.asarray(values, dtype=object))
        self.n_features_in_ = len(cols)
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "feature_names_in_")
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise ValueError(f"the snapshot lacks feature column(s) {', '.join(missing[:10])}")
        out = np.empty((len(X), len(self.feature_names_in_)), dtype="float64")
        for j, c in enumerate(self.feature_names_in_):
            s = X[c]
            if c in self.categories_:
                idx = lookup(s, pa.array(self.categories_[c], pa.string()))
                out[:, j] = np.where(idx >= 0, idx, np.nan)
            else:
                out[:, j] = s.to_numpy(dtype="float64", na_value=np.nan)
        return out

    def is_categorical(self) -> np.ndarray:
        return np.array([c in self.categories_ for c in self.feature_names_in_])


def customer_groups(index: pd.Index) -> np.ndarray:
    """A stable group number per row from its customer id (the ``customer_id`` level of a
    training set's (cutoff, customer_id) index), so that folds never split a customer."""
    ids = index.get_level_values("customer_id") if "customer_id" in (index.names or []) else index
    return pd.util.hash_array(np.asarray(ids, dtype=object)).astype(np.uint64)


def _fit(booster, Z: np.ndarray, y: np.ndarray):
    """Fit, with columns that have no value in these rows made constant (HistGradientBoosting
    cannot bin an all-missing column; a constant one is never split on, as intended)."""
    empty = np.isnan(Z).all(axis=0)
    if empty.any():
        Z = Z.copy()
        Z[:, empty] = 0.0
    return booster.fit(Z, y)


# One booster to fit: (unfitted booster, encoded rows, labels, the rows it learns from or None: all).
BoosterJob = tuple[object, np.ndarray, np.ndarray, "np.ndarray | None"]


def _fit_rows(booster, Z: np.ndarray, y: np.ndarray, rows: np.ndarray | None):
    """``_fit`` on ``rows`` of ``Z`` and ``y`` (a job of ``fit_boosters``, in a worker process)."""
    if rows is not None:
        Z, y = Z[rows], y[rows]
    return _fit(booster, Z, y)


def fit_boosters(jobs: list[BoosterJob]) -> list:
    """The boosters of ``jobs`` fitted, in order. They are independent: spread over worker
    processes of one thread each within the thread budget (``kundenwert.threads``); the same
    boosters as fitted one after the other. Jobs holding the same ``Z`` share one copy of it."""
    return run_parallel(_fit_rows, jobs)


class CalibratedGBMClassifier(ClassifierMixin, BaseEstimator):
    """HistGradientBoosting with out-of-fold calibration, on snapshot frames.

    The booster is fitted on all rows; the calibration map is fitted on out-of-fold scores from
    ``calibration_folds`` boosters whose folds keep each customer's rows together.
    ``calibration``: ``auto`` (the default) is the smooth, strictly increasing map of
    ``LogitCalibrator`` with the lowest held-out log-loss among Platt, beta and centered
    isotonic (``kundenwert.models.calibration``); ``beta`` and ``centered_isotonic`` choose one
    of them; ``isotonic`` (a step function: ties, and exactly 0 or 1 at the ends) and
    ``sigmoid`` are the earlier maps, kept so that models stored with them load and predict the
    same; ``none`` uses the booster's probability. Every map is monotone, so it keeps the
    booster's order and the ``monotonic`` constraints ({feature: +1 or -1}) hold for the
    calibrated probability too.
    ``decision_function`` is the booster's log-odds, the scale SHAP values add up to.
    ``monotonic=None`` takes the class's ``default_monotonic`` (for the features X has).
    """

    default_monotonic: dict[str, int] = {}

    _parameter_constraints: dict = {
        "monotonic": [dict, None],
        "exclude": [tuple, list],
        "calibration": [StrOptions({"auto", "beta", "centered_isotonic", "isotonic", "sigmoid", "none"})],
        "calibration_folds": [Interval(Integral, 2, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "max_depth": [Interval(Integral, 1, None, closed="left"), None],
        "max_leaf_nodes": [Interval(Integral, 2, None, closed="left")],
        "min_samples_leaf": [Interval(Integral, 1, None, closed="left")],
        "l2_regularization": [Interval(Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        monotonic: dict[str, int] | None = None,
        exclude: tuple[str, ...] = (),
        calibration: str = "auto",
        calibration_folds: int = 3,
        max_iter: int = 300,
        learning_rate: float = 0.08,
        max_depth: int | None = 5,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 40,
        l2_regularization: float = 1.0,
        early_stopping: bool = True,
        random_state: int = 0,
    ) -> None:
        self.monotonic = monotonic
        self.exclude = exclude
        self.calibration = calibration
        self.calibration_folds = calibration_folds
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.early_stopping = early_stopping
        self.random_state = random_state

    def _booster(self, constraints: np.ndarray) -> HistGradientBoostingClassifier:
        return HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_depth=self.max_depth,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            early_stopping=self.early_stopping,
            validation_fraction=0.1,
            n_iter_no_change=20,
            monotonic_cst=constraints,
            random_state=self.random_state,
        )

    def fit(self, X: pd.DataFrame, y) -> CalibratedGBMClassifier:
        Z, y_, jobs = self._prepare(X, y)
        return self._complete(X, Z, y_, fit_boosters(jobs))

    def _prepare(
        self, X: pd.DataFrame, y, encoder: FeatureEncoder | None = None, Z: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[BoosterJob]]:
        """The first half of ``fit``: checks, the encoder (``encoder``: one fitted on ``X``
        already, shared, and ``Z`` its encoding of ``X`` when known), the constraints; the
        encoded rows, the labels and the booster jobs
        (the final booster first, the biggest, then the calibration folds'), which
        ``fit_boosters`` runs and ``_complete`` takes, so that a model of several classifiers
        (affinity, CLV) fits all their boosters in one parallel batch."""
        self._validate_params()
        y = np.asarray(y, dtype="float64")
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        if np.isnan(y).any():
            raise ValueError("y has missing labels; keep only the rows the label is defined for")
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2 or set(self.classes_) - {0.0, 1.0}:
            raise ModelFitError(f"need both outcomes 0 and 1 among the labels, got {sorted(set(y))[:5]}")
        self.encoder_ = encoder if encoder is not None else FeatureEncoder(self.exclude).fit(X)
        if Z is None or encoder is None:
            Z = self.encoder_.transform(X)
        names = list(self.encoder_.feature_names_in_)
        if self.monotonic is None:
            self.monotonic_ = {k: v for k, v in self.default_monotonic.items() if k in names}
        else:
            self.monotonic_ = dict(self.monotonic)
        unknown = sorted(set(self.monotonic_) - set(names))
        if unknown:
            raise ValueError(f"monotonic constraints name unknown feature(s) {', '.join(unknown)}")
        constraints = np.array([self.monotonic_.get(c, 0) for c in names], dtype=int)
        self.feature_names_in_ = self.encoder_.feature_names_in_
        self.n_features_in_ = len(names)
        jobs: list[BoosterJob] = [(self._booster(constraints), Z, y, None)]
        if self.calibration != "none":
            folds = customer_groups(X.index) % np.uint64(self.calibration_folds)
            for k in range(self.calibration_folds):
                part = folds == k
                if y[~part].min() == y[~part].max():
                    raise ModelFitError("a calibration fold has only one outcome; use fewer folds")
                jobs.append((self._booster(constraints), Z, y, ~part))
        return Z, y, jobs

    def _complete(
        self, X: pd.DataFrame, Z: np.ndarray, y: np.ndarray, boosters: list
    ) -> CalibratedGBMClassifier:
        """The second half of ``fit``: the boosters of ``_prepare``'s jobs, fitted; the
        calibration map from the folds' out-of-fold scores."""
        if self.calibration != "none":
            groups = customer_groups(X.index)
            folds = groups % np.uint64(self.calibration_folds)
            oof = np.empty(len(y))  # the out-of-fold booster log-odds
            for k, booster in enumerate(boosters[1:]):
                part = folds == k
                oof[part] = booster.decision_function(Z[part])
            if self.calibration == "isotonic":
                self.calibrator_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
                    expit(oof), y
                )
            elif self.calibration == "sigmoid":
                self.calibrator_ = LogisticRegression(C=1e6).fit(_logit(expit(oof))[:, None], y)
            else:
                self.calibrator_ = LogitCalibrator(self.calibration).fit(oof, y, groups)
        else:
            self.calibrator_ = None
        self.booster_ = boosters[0]
        return self

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "booster_")
        return self.booster_.decision_function(self.encoder_.transform(X))

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "booster_")
        return self.proba_encoded(self.encoder_.transform(X))

    def proba_encoded(self, Z: np.ndarray) -> np.ndarray:
        """``predict_proba`` of rows already encoded by ``encoder_`` (to encode once for many):
        the booster's raw scores of ``raw_encoded`` through the calibration map."""
        return self._calibrated(raw_encoded(self.booster_, Z))

    def bin(self, Z: np.ndarray) -> np.ndarray:
        """Encoded rows as the booster's bins (uint8), for ``proba_binned``."""
        return self.booster_._bin_mapper.transform(Z)

    def proba_binned(self, Zb: np.ndarray) -> np.ndarray:
        """``proba_encoded`` of binned rows (``bin``): the same numbers (the trees compare bins
        instead of values; a test holds them equal), about 3x faster, for scoring one customer
        base many times over (every action and channel). Uses scikit-learn's internal
        ``_predict_iterations``, as its own early stopping does."""
        return self._calibrated(raw_binned(self.booster_, Zb)[:, 0])

    def _calibrated(self, raw: np.ndarray) -> np.ndarray:
        """[1 - p, p] of the booster's raw scores (log-odds) through the calibration map."""
        p = self.probability_of_raw(raw)
        return np.column_stack([1.0 - p, p])

    def probability_of_raw(self, raw: np.ndarray) -> np.ndarray:
        """P(1) of the booster's raw scores (log-odds) through the calibration map."""
        if isinstance(self.calibrator_, LogitCalibrator):
            p = self.calibrator_.predict(raw)
        else:  # no map, or one of a model stored before LogitCalibrator: on the probability
            p = self.booster_._loss.link.inverse(raw)
            if isinstance(self.calibrator_, IsotonicRegression):
                p = self.calibrator_.predict(p)
            elif self.calibrator_ is not None:
                p = self.calibrator_.predict_proba(_logit(p)[:, None])[:, 1]
        return p

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype("float64")

    def predict_frame(self, X: pd.DataFrame, name: str = "probability") -> pd.DataFrame:
        """The calibrated probability as a frame indexed like ``X`` (by customer)."""
        return pd.DataFrame({name: self.predict_proba(X)[:, 1]}, index=X.index)


def _logit(p: np.ndarray) -> np.ndarray:
    """The log-odds the ``sigmoid`` calibration was fitted on (probabilities clipped as then)."""
    return np.log(np.clip(p, 1e-12, 1 - 1e-12) / np.clip(1 - p, 1e-12, 1))


def raw_binned(booster, Zb: np.ndarray) -> np.ndarray:
    """A fitted HistGradientBoosting model's raw predictions (before the link) for rows already
    binned by its ``_bin_mapper``: its own ``_predict_iterations`` on bins, as its early stopping
    does (a test holds the result equal to ``predict``)."""
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    raw = np.zeros((Zb.shape[0], 1), dtype="float64") + booster._baseline_prediction
    booster._predict_iterations(Zb, booster._predictors, raw, True, _openmp_effective_n_threads())
    return raw


def raw_encoded(booster, Z: np.ndarray) -> np.ndarray:
    """A fitted HistGradientBoosting model's raw predictions (n,) of encoded rows ``Z``, bitwise
    its own: in one compiled pass over the rows for many rows (``forest``: about 2x faster than
    binning and predicting through the bins, 5x faster than scikit-learn's raw-value path),
    through the bins for few (no compilation)."""
    from kundenwert.models import forest

    if forest.use_for(booster, len(Z)):
        return forest.raw(booster, Z)
    return raw_binned(booster, booster._bin_mapper.transform(Z))[:, 0]


def predict_binned(regressor, Z: np.ndarray) -> np.ndarray:
    """``HistGradientBoostingRegressor.predict`` of encoded rows (``raw_encoded``: faster)."""
    return regressor._loss.link.inverse(raw_encoded(regressor, Z))


# The hyperparameters a model built of CalibratedGBMClassifiers passes on to them.
BOOSTED_PARAMS = (
    "calibration",
    "max_iter",
    "learning_rate",
    "max_depth",
    "min_samples_leaf",
    "exclude",
    "random_state",
)


class BoostedSnapshotModel(BaseEstimator):
    """Base of the models made of ``CalibratedGBMClassifier``s (CLV, affinity, response): the
    constraints of the hyperparameters they share and the classifier those configure. Each
    subclass keeps its own ``__init__`` (scikit-learn reads the defaults from it; they differ)."""

    _parameter_constraints: dict = {
        k: CalibratedGBMClassifier._parameter_constraints[k] for k in BOOSTED_PARAMS
    }

    def _classifier(self, **overrides) -> CalibratedGBMClassifier:
        return CalibratedGBMClassifier(**{k: getattr(self, k) for k in BOOSTED_PARAMS}, **overrides)


class ChurnModel(CalibratedGBMClassifier):
    """P(no purchase in the horizon) of an active customer. Monotone: a longer time since the
    last purchase and more open complaints never lower the risk."""

    default_monotonic = {"days_since_last_purchase": 1, "open_complaints": 1}


class WinbackModel(CalibratedGBMClassifier):
    """P(a purchase in the horizon) of a lapsed customer. Monotone: a longer time since the last
    purchase never raises it."""

    default_monotonic = {"days_since_last_purchase": -1}
