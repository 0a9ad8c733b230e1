"""Machine-learned CLV: P(any value in the horizon) x E[value | value], on the full snapshot.

Two boosters: a calibrated classifier for "brings positive value in the horizon" and a
gradient-boosting regressor with gamma deviance (positive, right-skewed values) for the value of
those who do; the prediction is their product. Unlike BTYD it can use attributes, contact
history, complaints and offers. More purchases (frequency, purchase days in every window) never
lower either part (monotonic constraints), so never the prediction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.utils.validation import check_is_fitted

from kundenwert.errors import ModelFitError
from kundenwert.models.metrics import value_metrics
from kundenwert.models.tabular import BoostedSnapshotModel, fit_boosters, predict_binned


def _more_purchases(columns) -> dict[str, int]:
    return {c: 1 for c in columns if c == "frequency" or str(c).startswith("purchase_days_")}


class CLVModel(RegressorMixin, BoostedSnapshotModel):
    """Discounted value over the label's horizon (``labels_at``'s ``clv``), from a snapshot."""

    def __init__(
        self,
        calibration: str = "auto",
        max_iter: int = 300,
        learning_rate: float = 0.08,
        max_depth: int | None = 5,
        min_samples_leaf: int = 40,
        exclude: tuple[str, ...] = (),
        random_state: int = 0,
    ) -> None:
        self.calibration = calibration
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.exclude = exclude
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, y) -> CLVModel:
        self._validate_params()
        y = np.asarray(y, dtype="float64")
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        if np.isnan(y).any():
            raise ValueError("y has missing values; CLV labels are 0 for customers without purchases")
        buys = y > 0
        if buys.sum() < 20:
            raise ModelFitError(
                f"only {int(buys.sum())} customers bring value in the horizon; need at least 20"
            )
        self.buy_ = self._classifier(monotonic=_more_purchases(X.columns))
        Z, bought, jobs = self.buy_._prepare(X, buys.astype("float64"))
        self.encoder_ = self.buy_.encoder_
        names = list(self.encoder_.feature_names_in_)
        monotonic = _more_purchases(names)
        value = HistGradientBoostingRegressor(
            loss="gamma",
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=1.0,
            early_stopping=True,
            validation_fraction=0.1,
            n_iter_no_change=20,
            monotonic_cst=np.array([monotonic.get(c, 0) for c in names]),
            random_state=self.random_state,
        )
        # the value regressor on the buyers' rows, in the same parallel batch as the buy
        # classifier's boosters (the encoding is row by row: Z[buys] encodes X[buys])
        *boosters, self.value_ = fit_boosters([*jobs, (value, Z, y, buys)])
        self.buy_._complete(X, Z, bought, boosters)
        self.feature_names_in_ = self.encoder_.feature_names_in_
        self.n_features_in_ = len(names)
        return self

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """``p_value`` (P(any value)), ``value_if_any`` and ``clv`` (their product), indexed like X."""
        check_is_fitted(self, "value_")
        Z = self.encoder_.transform(X)  # one encoding for both models
        p = self.buy_.proba_encoded(Z)[:, 1]
        value = predict_binned(self.value_, Z)
        return pd.DataFrame({"p_value": p, "value_if_any": value, "clv": p * value}, index=X.index)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_frame(X)["clv"].to_numpy()


def compare_clv(actual: pd.Series, predictions: dict[str, pd.Series]) -> pd.DataFrame:
    """MAE, Spearman and top-20% capture of each prediction against the actual values (the rows of
    ``actual``; a missing prediction counts as 0)."""
    rows = {
        name: value_metrics(actual.to_numpy(), pred.reindex(actual.index).fillna(0.0).to_numpy())
        for name, pred in predictions.items()
    }
    return pd.DataFrame(rows).T
