"""Probabilistic CLV: BG/NBD (purchases, P(alive)) and Gamma-Gamma (spend) through ``lifetimes``.

Input is a snapshot (``kundenwert.features.snapshot``): ``frequency``, ``recency``, ``T`` and
``monetary_value`` as lifetimes defines them, in days or weeks (``unit``). Customers without any
purchase before the cutoff (NaN frequency) are outside the model: their predictions are NaN.

Fitting is on distinct ``(frequency, recency, T)`` rows with their counts as ``weights`` (and distinct
``(frequency, monetary_value)`` rows for Gamma-Gamma): the likelihood is the same, the work is
proportional to the distinct rows. Predictions are computed once per distinct row too. The distinct
rows are sorted, so a fit depends on the rows' multiset only, not their order: ``fit(X)`` and
``fit(distinct rows of X, sample_weight=their counts)`` give the same parameters to the last bit
(what a distributed run fits on the driver from counts).
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from kundenwert.errors import ModelFitError

BTYD_COLUMNS = ("frequency", "recency", "T", "monetary_value")
STEP_DAYS = 30.0  # discounting step of the CLV sum (months of 30 days)


def btyd_columns(X: pd.DataFrame, columns: tuple[str, ...] = BTYD_COLUMNS) -> pd.DataFrame:
    """The BTYD columns of a snapshot as float64, or a clear error naming what is missing."""
    if not isinstance(X, pd.DataFrame):
        raise TypeError(
            f"expected a snapshot DataFrame with columns {', '.join(columns)}, got {type(X).__name__}"
        )
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise ValueError(f"the snapshot lacks column(s) {', '.join(missing)} (needed: {', '.join(columns)})")
    out = X[list(columns)].astype("float64")
    for c in columns:
        bad = np.isinf(out[c].to_numpy()) | (out[c].to_numpy() < 0) & (c != "monetary_value")
        if bad.any():
            who = out.index[bad][0]
            raise ValueError(f"column {c} has an invalid value {out.at[who, c]!r} for customer {who!r}")
    return out


def _distinct(
    frame: pd.DataFrame, weights: np.ndarray | None = None
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Distinct rows in sorted order, their counts (summed ``weights``), and the position of every
    row's distinct row."""
    codes, uniques = pd.factorize(pd.MultiIndex.from_frame(frame), sort=True)
    counts = np.bincount(codes, weights=weights, minlength=len(uniques))
    distinct = uniques.to_frame(index=False).set_axis(list(frame.columns), axis=1)
    return distinct.astype("float64"), counts.astype("float64"), codes


class BTYDModel(RegressorMixin, BaseEstimator):
    """BG/NBD + Gamma-Gamma: expected purchases, P(alive), expected spend and discounted CLV.

    Parameters
    ----------
    horizon_days : days ahead for expected purchases and CLV.
    discount_rate : annual rate; CLV discounts each 30-day step's value to the cutoff.
    unit : ``"D"`` or ``"W"``, the time unit of the snapshot's recency and T.
    penalizer_coef, gg_penalizer_coef : L2 penalties of the two fits (lifetimes' ``penalizer_coef``);
        the remedy when a fit does not converge or runs to extreme parameters.
    collapse : fit and predict on distinct rows with weights (the same likelihood, less work).
    time_grid : if set, recency and T are rounded to multiples of it (in the snapshot's unit) for
        fitting only, as lifetimes' whole periods (``freq="W"``) do: far fewer distinct rows, a
        slightly coarser likelihood. Predictions always use the exact values.
    """

    _parameter_constraints: dict = {
        "horizon_days": [Interval(Real, 0, None, closed="neither")],
        "discount_rate": [Interval(Real, 0, None, closed="left")],
        "unit": [StrOptions({"D", "W"})],
        "penalizer_coef": [Interval(Real, 0, None, closed="left")],
        "gg_penalizer_coef": [Interval(Real, 0, None, closed="left")],
        "collapse": ["boolean"],
        "time_grid": [Interval(Real, 0, None, closed="neither"), None],
    }

    def __init__(
        self,
        horizon_days: float = 365.0,
        discount_rate: float = 0.1,
        unit: str = "D",
        penalizer_coef: float = 0.0,
        gg_penalizer_coef: float = 0.0,
        collapse: bool = True,
        time_grid: float | None = None,
    ) -> None:
        self.horizon_days = horizon_days
        self.discount_rate = discount_rate
        self.unit = unit
        self.penalizer_coef = penalizer_coef
        self.gg_penalizer_coef = gg_penalizer_coef
        self.collapse = collapse
        self.time_grid = time_grid

    # ------------------------------------------------------------------------------------ fit

    def fit(self, X: pd.DataFrame, y: object = None, sample_weight: object = None) -> BTYDModel:
        """Fit both models on the snapshot ``X``; ``sample_weight``: how many customers each row
        stands for (counts of distinct rows, e.g. gathered from a distributed snapshot)."""
        from lifetimes import BetaGeoFitter, GammaGammaFitter

        self._validate_params()
        data = btyd_columns(X)
        w_all = np.ones(len(data)) if sample_weight is None else np.asarray(sample_weight, dtype="float64")
        keep = data[["frequency", "recency", "T"]].notna().all(axis=1).to_numpy()
        data, w_all = data[keep], w_all[keep]
        if len(data) == 0:
            raise ModelFitError("BG/NBD: no customer with a purchase before the cutoff; nothing to fit")
        repeat = data["frequency"] > 0
        if not repeat.any():
            raise ModelFitError(
                f"BG/NBD: none of the {int(w_all.sum()):,} customers has a repeat purchase (frequency > 0), so "
                "the purchase rate and dropout cannot be told apart; use a longer calibration period"
            )
        rows = data[["frequency", "recency", "T"]]
        if self.time_grid:
            g = float(self.time_grid)
            rows = rows.assign(recency=(rows["recency"] / g).round() * g, T=(rows["T"] / g).round() * g)
            rows = rows.assign(T=np.maximum(rows["T"], rows["recency"]))
        if self.collapse:
            rows, weights, _ = _distinct(rows, w_all)
        else:
            weights = w_all
        self.bgf_ = self._converged(
            "BG/NBD",
            "penalizer_coef",
            lambda: BetaGeoFitter(penalizer_coef=self.penalizer_coef).fit(
                rows["frequency"], rows["recency"], rows["T"], weights=weights
            ),
        )
        buyers = (repeat & (data["monetary_value"] > 0)).to_numpy()
        spend = data.loc[buyers, ["frequency", "monetary_value"]]
        w_spend = w_all[buyers]
        self.gg_excluded_ = int(w_all[(repeat & ~(data["monetary_value"] > 0)).to_numpy()].sum())
        if len(spend) == 0:
            raise ModelFitError(
                "Gamma-Gamma: no repeat buyer has a positive average spend (monetary_value > 0); "
                "check that purchase amounts are positive and returns are negative rows"
            )
        spend_rows = spend
        if self.collapse:
            spend, gg_weights, _ = _distinct(spend, w_spend)
        else:
            gg_weights = w_spend
        self.ggf_ = self._converged(
            "Gamma-Gamma",
            "gg_penalizer_coef",
            lambda: GammaGammaFitter(penalizer_coef=self.gg_penalizer_coef).fit(
                spend["frequency"], spend["monetary_value"], weights=gg_weights
            ),
        )
        p, q, v = (float(self.ggf_.params_[k]) for k in ("p", "q", "v"))
        if q <= 1:
            raise ModelFitError(
                f"Gamma-Gamma: q = {q:.3f} <= 1 means an infinite mean spend; raise gg_penalizer_coef "
                f"(now {self.gg_penalizer_coef})"
            )
        self.params_ = {**{k: float(v_) for k, v_ in self.bgf_.params_.items()}, "p": p, "q": q, "v": v}
        self.n_customers_ = int(w_all.sum()) if sample_weight is not None else len(data)
        self.n_distinct_ = len(rows)
        self.spend_frequency_correlation_ = _weighted_correlation(
            spend_rows["frequency"].to_numpy(), spend_rows["monetary_value"].to_numpy(), w_spend
        )
        return self

    @classmethod
    def from_params(cls, params: dict[str, float], **hyperparameters: object) -> BTYDModel:
        """The fitted model of ``params`` (``params_`` of a fit): what predictions need, in a form
        that pickles (lifetimes' fitted fitters hold lambdas), e.g. to send to Spark's workers."""
        from lifetimes import BetaGeoFitter, GammaGammaFitter

        model = cls(**hyperparameters)  # type: ignore[arg-type]
        model.bgf_, model.ggf_ = BetaGeoFitter(), GammaGammaFitter()
        model.bgf_.params_ = pd.Series({k: float(params[k]) for k in ("r", "alpha", "a", "b")})
        model.ggf_.params_ = pd.Series({k: float(params[k]) for k in ("p", "q", "v")})
        model.params_ = dict(params)
        return model

    def _converged(self, name: str, knob: str, fit):
        from lifetimes.utils import ConvergenceError

        try:
            with np.errstate(all="ignore"):
                fitted = fit()
        except ConvergenceError as exc:
            raise ModelFitError(
                f"{name} did not converge ({str(exc).strip().splitlines()[0]}); set {knob} to a small "
                f"positive value (e.g. 0.001; now {getattr(self, knob)})"
            ) from None
        values = np.asarray(fitted.params_, dtype="float64")
        if not np.isfinite(values).all() or (values <= 0).any() or (values > 1e6).any():
            raise ModelFitError(
                f"{name} ran to degenerate parameters {dict(fitted.params_)}; set {knob} to a small "
                f"positive value (e.g. 0.001; now {getattr(self, knob)})"
            )
        return fitted

    # -------------------------------------------------------------------------------- predict

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per customer: ``expected_purchases``, ``p_alive``, ``expected_spend``, ``clv``."""
        check_is_fitted(self, "params_")
        data = btyd_columns(X)
        known = data["frequency"].notna().to_numpy()
        out = pd.DataFrame(
            np.nan, index=X.index, columns=["expected_purchases", "p_alive", "expected_spend", "clv"]
        )
        if not known.any():
            return out
        rows = data.loc[known, ["frequency", "recency", "T", "monetary_value"]].fillna(
            {"monetary_value": 0.0}
        )
        if self.collapse:
            distinct, _, codes = _distinct(rows)
        else:
            distinct, codes = rows.reset_index(drop=True), np.arange(len(rows))
        values = self._predict_rows(distinct)
        out.loc[known, :] = values[codes]
        return out

    def _predict_rows(self, d: pd.DataFrame) -> np.ndarray:
        f, r, T, m = (d[c].to_numpy() for c in ("frequency", "recency", "T", "monetary_value"))
        unit_days = 7.0 if self.unit == "W" else 1.0
        with np.errstate(all="ignore"):
            expected = self.bgf_.conditional_expected_number_of_purchases_up_to_time(
                self.horizon_days / unit_days, f, r, T
            )
            alive = self.bgf_.conditional_probability_alive(f, r, T)
            spend = self.ggf_.conditional_expected_average_profit(f, np.where(f > 0, m, 0.0))
            clv = np.zeros(len(d))
            steps = max(1, math.ceil(self.horizon_days / STEP_DAYS))
            before = np.zeros(len(d))
            for k in range(1, steps + 1):
                end = min(k * STEP_DAYS, self.horizon_days)
                upto = self.bgf_.conditional_expected_number_of_purchases_up_to_time(end / unit_days, f, r, T)
                clv += (upto - before) * spend / (1.0 + self.discount_rate) ** (end / 365.0)
                before = upto
        return np.column_stack([np.asarray(expected), np.asarray(alive), np.asarray(spend), clv])


def _weighted_correlation(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Pearson correlation of rows standing for ``w`` customers each (NaN for fewer than 3)."""
    if w.sum() <= 2 or len(x) < 2:
        return float("nan")
    with np.errstate(all="ignore"):
        return float(np.cov(x, y, aweights=w)[0, 1] / np.sqrt(np.cov(x, aweights=w) * np.cov(y, aweights=w)))


def holdout_by_frequency(
    expected: pd.Series, frequency: pd.Series, actual: pd.Series, top: int = 7
) -> pd.DataFrame:
    """The BTYD papers' calibration/holdout table: customers, predicted and actual holdout purchases
    by calibration frequency (0, 1, ..., ``top``+), and a total row."""
    frame = pd.DataFrame({"frequency": frequency, "predicted": expected, "actual": actual}).dropna(
        subset=["frequency", "predicted"]
    )
    frame["actual"] = frame["actual"].fillna(0.0)
    bucket = frame["frequency"].clip(upper=top).astype(int)
    out = frame.groupby(bucket).agg(
        customers=("predicted", "size"), predicted=("predicted", "sum"), actual=("actual", "sum")
    )
    out.index = [str(i) if i < top else f"{top}+" for i in out.index]
    out.loc["total"] = out.sum()
    out["customers"] = out["customers"].astype(int)
    return out
