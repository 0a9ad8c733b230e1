"""Smooth, strictly increasing calibration of a booster's log-odds, chosen on held-out log-loss.

Isotonic regression (PAVA) fits a step function: every customer of a step gets the same
probability, a few hundred distinct values for a whole customer base, and an end step of only
negatives or only positives is exactly 0 or 1. ``LogitCalibrator`` maps the booster's raw score
``s`` (log-odds) to a calibrated log-odds ``z(s)`` that is strictly increasing and finite
everywhere, and the probability is ``expit(z)``. Candidates:

- ``platt``: ``z = a s + c`` (Platt 1999, on the log-odds as scikit-learn's sigmoid does).
- ``beta``: ``z = a ln p - b ln(1 - p) + c`` with ``p = expit(s)`` (beta calibration, Kull,
  Silva Filho and Flach 2017), ``a, b >= 0`` so it is monotone: a negative coefficient drops its
  feature and the other is refitted (as the authors' ``betacal`` does); Platt is ``a = b``.
- ``centered_isotonic``: centered isotonic regression (Oron and Flournoy 2017): PAVA's blocks
  shrunk to one point each (mean score, observed rate) and linearly interpolated between them,
  in log-odds; an end block of one outcome only gets (k + 1/2) / (n + 1) instead of 0 or 1, and
  beyond the end blocks the map goes on linearly with Platt's slope, so the tails do not tie.

``method="auto"`` fits every candidate on the scores of most customers, scores each by its
log-loss on the rest (a customer's rows stay on one side), keeps the best, and refits it on all
rows. Scoring is closed form or one ``np.interp``: vectorised, for millions of rows.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.isotonic import isotonic_regression
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

CANDIDATES = ("platt", "beta", "centered_isotonic")
# The last guard: a calibrated probability stays this far inside (0, 1). The calibrators' log-odds
# are finite, so this only binds beyond |z| = 20.7, far outside what marketing scores reach.
MARGIN = 1e-9
MIN_SLOPE = 1e-6  # a map with no signal (slope <= 0) still keeps the booster's order


def _logistic(F: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Unpenalised (C = 1e6) logistic regression of y on the columns of F: (coefficients, intercept)."""
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(F, y)
    return np.r_[lr.coef_.ravel(), lr.intercept_]


def _beta_features(s: np.ndarray) -> np.ndarray:
    """[ln p, -ln(1 - p)] of p = expit(s), without forming p (exact for any s)."""
    return np.column_stack([-np.logaddexp(0.0, -s), np.logaddexp(0.0, s)])


def log_loss_of_logits(y: np.ndarray, z: np.ndarray) -> float:
    """Mean log-loss of probabilities expit(z), computed on the log-odds (no clipping needed)."""
    return float(np.mean(y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)))


def holdout_mask(groups: np.ndarray, share: int = 5) -> np.ndarray:
    """The held-out rows of ``auto``: about 1 in ``share`` groups (customers), chosen from bits of
    the group hash above the ones the calibration folds use (``groups % folds``)."""
    return ((np.asarray(groups, dtype=np.uint64) >> np.uint64(32)) % np.uint64(share)) == 0


class LogitCalibrator(BaseEstimator):
    """Booster log-odds -> calibrated probability, smooth and strictly increasing (see the module).

    ``fit(s, y, groups)``: ``groups`` (one number per row, e.g. ``customer_groups``) keep a
    customer's rows on one side of ``auto``'s held-out split. After fitting, ``method_`` is the
    calibrator used and ``holdout_log_loss_`` the held-out log-loss of each candidate (``auto``).
    """

    _parameter_constraints: dict = {
        "method": [StrOptions({"auto", *CANDIDATES})],
        "holdout_share": [Interval(Integral, 2, None, closed="left")],
    }

    def __init__(self, method: str = "auto", holdout_share: int = 5) -> None:
        self.method = method
        self.holdout_share = holdout_share

    def fit(self, s, y, groups=None) -> LogitCalibrator:
        self._validate_params()
        s, y = np.asarray(s, dtype="float64").ravel(), np.asarray(y, dtype="float64").ravel()
        if len(s) != len(y) or not np.isfinite(s).all():
            raise ValueError("scores must be finite and as many as the labels")
        if y.min() == y.max():
            raise ValueError("calibration needs both outcomes among the labels")
        self.holdout_log_loss_: dict[str, float] = {}
        method = self.method
        if method == "auto":
            if groups is None:
                groups = np.random.default_rng(0).integers(0, 2**63, len(s), dtype=np.uint64)
            held = holdout_mask(groups, self.holdout_share)
            fit_y, held_y = y[~held], y[held]
            if np.unique(fit_y).size == 2 and np.unique(held_y).size == 2:  # both outcomes, both sides
                for name in CANDIDATES:
                    params = self._fit_params(name, s[~held], fit_y)
                    z = self._logit(name, params, s[held])
                    self.holdout_log_loss_[name] = log_loss_of_logits(held_y, z)
                method = min(self.holdout_log_loss_, key=self.holdout_log_loss_.__getitem__)
            else:
                method = "platt"  # too few rows to compare: the two-parameter map
        self.method_ = method
        self.params_ = self._fit_params(method, s, y)
        return self

    @staticmethod
    def _fit_params(method: str, s: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        a, c = _logistic(s[:, None], y)
        platt = np.array([max(a, MIN_SLOPE), c])
        if method == "platt":
            return {"coef": platt}
        if method == "beta":
            F = _beta_features(s)
            coef = _logistic(F, y)
            if coef[0] < 0 or coef[1] < 0:  # not monotone: keep the feature with a positive weight
                keep = 1 if coef[0] < 0 else 0
                one = _logistic(F[:, [keep]], y)
                coef = np.zeros(3)
                coef[keep], coef[2] = one[0], one[1]
                if one[0] <= 0:  # neither alone rises with the score: Platt
                    coef = np.array([platt[0], platt[0], platt[1]])
            if coef[0] + coef[1] <= 0:
                coef = np.array([platt[0], platt[0], platt[1]])
            return {"coef": coef}
        return _centered_isotonic(s, y, platt[0])

    @staticmethod
    def _logit(method: str, params: dict[str, np.ndarray], s: np.ndarray) -> np.ndarray:
        if method == "platt":
            a, c = params["coef"]
            return a * s + c
        if method == "beta":
            a, b, c = params["coef"]
            # a ln p - b ln(1 - p) + c, with ln p = -softplus(-s) and -ln(1 - p) = softplus(s)
            return c - a * np.logaddexp(0.0, -s) + b * np.logaddexp(0.0, s)
        x, z, slope = params["x"], params["z"], params["tail_slope"][0]
        out = np.interp(s, x, z)
        return out + slope * (np.minimum(s - x[0], 0.0) + np.maximum(s - x[-1], 0.0))

    def decision_function(self, s) -> np.ndarray:
        """The calibrated log-odds of raw scores ``s``."""
        check_is_fitted(self, "params_")
        return self._logit(self.method_, self.params_, np.asarray(s, dtype="float64"))

    def predict(self, s) -> np.ndarray:
        """The calibrated probability of raw scores ``s`` (log-odds), strictly inside (0, 1)."""
        return np.clip(expit(self.decision_function(s)), MARGIN, 1.0 - MARGIN)


def _centered_isotonic(s: np.ndarray, y: np.ndarray, tail_slope: float) -> dict[str, np.ndarray]:
    """Knots (mean score of each PAVA block, log-odds of its rate): strictly increasing in both."""
    ux, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    hits = np.bincount(inverse, weights=y)
    fitted = isotonic_regression(hits / counts, sample_weight=counts.astype("float64"))
    starts = np.flatnonzero(np.r_[True, fitted[1:] != fitted[:-1]])  # blocks: runs of one value
    n = np.add.reduceat(counts.astype("float64"), starts)
    k = np.add.reduceat(hits, starts)
    sx = np.add.reduceat(ux * counts, starts)
    # Only an end block can be all negatives (first) or all positives (last): it gets half a
    # case of the other outcome, (k + 1/2) / (n + 1), instead of a rate of 0 or 1. Should that
    # (or float rounding of PAVA's means) leave two neighbours out of order, they become one.
    while True:
        rate = _rates(k, n)
        bad = np.flatnonzero(np.diff(rate) <= 0)
        if not len(bad):
            break
        n, k, sx = _merge(n, k, sx, int(bad[0]))
    x = sx / n
    z = np.log(rate) - np.log1p(-rate)
    return {"x": x, "z": z, "tail_slope": np.array([tail_slope])}


def _rates(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    rate = k / n
    ends = (rate <= 0) | (rate >= 1)
    rate[ends] = (k[ends] + 0.5) / (n[ends] + 1)
    return rate


def _merge(n: np.ndarray, k: np.ndarray, sx: np.ndarray, i: int) -> tuple[np.ndarray, ...]:
    """Blocks i and i + 1 as one."""
    out = []
    for v in (n, k, sx):
        v = v.copy()
        v[i] += v[i + 1]
        out.append(np.delete(v, i + 1))
    return tuple(out)
