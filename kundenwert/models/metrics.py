"""Metrics of the models, as marketing reads them: ranking, calibration, lift, value capture."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score


def lift_at(y: np.ndarray, p: np.ndarray, share: float = 0.1) -> float:
    """Outcome rate among the ``share`` highest scores divided by the overall rate."""
    y, p = np.asarray(y, dtype="float64"), np.asarray(p, dtype="float64")
    k = max(1, int(round(share * len(y))))
    top = np.argsort(-p, kind="stable")[:k]
    return float(y[top].mean() / y.mean()) if y.mean() > 0 else float("nan")


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean probability| over equal-width probability bins, weighted by size."""
    y, p = np.asarray(y, dtype="float64"), np.asarray(p, dtype="float64")
    which = np.minimum((p * bins).astype(int), bins - 1)
    n = np.bincount(which, minlength=bins)
    obs = np.bincount(which, weights=y, minlength=bins)
    pred = np.bincount(which, weights=p, minlength=bins)
    used = n > 0
    return float(np.abs(obs[used] - pred[used]).sum() / len(y))


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC-AUC, PR-AUC (average precision), Brier score, lift in the top decile, ECE, rates."""
    y, p = np.asarray(y, dtype="float64"), np.asarray(p, dtype="float64")
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "lift_top_decile": lift_at(y, p, 0.1),
        "ece": expected_calibration_error(y, p),
        "positive_rate": float(y.mean()),
        "mean_probability": float(p.mean()),
        "rows": float(len(y)),
    }


def top_share_captured(actual: np.ndarray, predicted: np.ndarray, share: float = 0.2) -> float:
    """Share of the true top ``share`` (by actual value) found in the predicted top ``share``."""
    actual, predicted = np.asarray(actual, dtype="float64"), np.asarray(predicted, dtype="float64")
    k = max(1, int(round(share * len(actual))))
    true_top = set(np.argsort(-actual, kind="stable")[:k])
    pred_top = np.argsort(-predicted, kind="stable")[:k]
    return float(sum(i in true_top for i in pred_top) / k)


def value_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAE, Spearman rank correlation, share of the true top 20% captured in the predicted top 20%."""
    actual, predicted = np.asarray(actual, dtype="float64"), np.asarray(predicted, dtype="float64")
    return {
        "mae": float(np.abs(actual - predicted).mean()),
        "spearman": float(spearmanr(actual, predicted).statistic),
        "top20_captured": top_share_captured(actual, predicted, 0.2),
        "rows": float(len(actual)),
    }
