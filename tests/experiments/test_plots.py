"""Diagnostic plots: the numbers behind each curve are right, and no bucket shows fewer than
MIN_GROUP rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from kundenwert.experiments import plots as P


@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(4)
    p = rng.uniform(0, 1, 5_000)
    y = (rng.uniform(0, 1, 5_000) < p).astype(float)  # calibrated by construction
    return y, p


def test_roc_on_the_grid_has_the_area_of_the_exact_curve(scored) -> None:
    y, p = scored
    roc = P.roc_points(y, p)
    area = np.trapezoid(roc["tpr"], roc["fpr"])
    assert area == pytest.approx(roc_auc_score(y, p), abs=0.005)
    assert roc["tpr"][0] >= 0 and roc["tpr"][-1] == 1.0 and len(roc["fpr"]) == 101


def test_precision_recall_is_interpolated_and_not_increasing(scored) -> None:
    y, p = scored
    pr = P.pr_points(y, p)
    precision = np.asarray(pr["precision"])
    assert np.all(np.diff(precision) <= 1e-12)  # interpolated precision never rises with recall
    assert np.trapezoid(precision, pr["recall"]) == pytest.approx(average_precision_score(y, p), abs=0.02)
    assert pr["base_rate"] == pytest.approx(y.mean())


def test_gains_of_a_perfect_and_a_random_ranking(scored) -> None:
    y, p = scored
    perfect = P.gains_points(y, y)
    k = int(np.ceil(y.mean() * 100))
    assert perfect["share_captured"][k] == 1.0 and perfect["share_captured"][0] == 0.0
    shuffled = P.gains_points(y, np.random.default_rng(0).uniform(size=len(y)))
    assert np.max(np.abs(np.asarray(shuffled["share_captured"]) - P.GRID)) < 0.05
    good = P.gains_points(y, p)
    assert good["lift"][10] == pytest.approx(good["share_captured"][10] / 0.1)
    assert good["lift"][10] > 1.5


def test_calibration_bins_follow_the_diagonal_and_drop_small_bins(scored) -> None:
    y, p = scored
    cal = P.calibration_points(y, p)
    assert sum(cal["rows"]) == len(y) and len(cal["rows"]) == 10
    assert np.max(np.abs(np.subtract(cal["mean_probability"], cal["observed_rate"]))) < 0.06
    few = P.calibration_points(y[:150], p[:150], bins=10)  # 15 rows per bin < MIN_GROUP
    assert few["rows"] == [] and few["observed_rate"] == []


def test_clv_by_frequency_pools_and_leaves_out_small_buckets() -> None:
    freq = np.r_[[np.nan] * 30, [0] * 40, [1] * 25, [2] * 5, [9] * 15, [12] * 10]
    X = pd.DataFrame({"frequency": freq})
    actual = np.arange(len(freq), dtype=float)
    plot = P.clv_by_frequency(X, actual, actual * 2)
    assert list(plot.data) == ["none", "0", "1", "7+"]  # "2" has 5 rows: left out
    assert plot.data["7+"]["rows"] == 25
    assert plot.data["0"]["actual"] == pytest.approx(actual[30:70].mean())
    assert plot.data["0"]["predicted"] == pytest.approx(2 * actual[30:70].mean())
    P.plt.close(plot.figure)


def test_affinity_heatmap_keeps_age_order_and_hides_small_groups() -> None:
    rng = np.random.default_rng(1)
    groups = np.r_[["<25"] * 200, ["35-44"] * 300, ["65+"] * 10]
    X = pd.DataFrame({"age_group": groups})
    labels = pd.DataFrame({"label_affinity_books": rng.uniform(size=len(X)) < 0.2})
    predicted = pd.DataFrame({"affinity_books": rng.uniform(0, 0.4, len(X))})
    plot = P.affinity_heatmap(X, labels, predicted)
    assert list(plot.data) == ["books|<25", "books|35-44"]  # 65+ has 10 customers
    ax = plot.figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["<25", "35-44"]
    assert plot.data["books|<25"]["customers"] == 200
    P.plt.close(plot.figure)
