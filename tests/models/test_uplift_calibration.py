"""The uplift interval: what the response model's predicted uplifts were worth on held-out
contacts, per quantile bin of the prediction, with Newcombe's interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kundenwert.models.lift import diff_proportions
from kundenwert.models.response import MIN_ARM_ROWS, interval_of, uplift_calibration


def _contacts(n: int, seed: int, control: float = 0.3):
    """Test contacts of one action whose true uplift rises with the prediction: base rate 0.1,
    uplift = the prediction itself (0 to 0.3)."""
    rng = np.random.default_rng(seed)
    predicted = rng.uniform(0, 0.3, n)
    treated = rng.random(n) >= control
    y = (rng.random(n) < 0.1 + np.where(treated, predicted, 0.0)).astype(int)
    X = pd.DataFrame({"action_id": "a", "treated": treated})
    return X, y, predicted


def test_each_bin_holds_the_observed_uplift_of_its_contacts_with_newcombes_interval() -> None:
    X, y, u = _contacts(20_000, 1)
    table = uplift_calibration(y, X, u, bins=5)
    assert table is not None and len(table["edges"]) == 4
    at = np.searchsorted(table["edges"], u, side="right")
    t = X["treated"].to_numpy()
    for b in range(5):
        x1, n1 = y[(at == b) & t].sum(), ((at == b) & t).sum()
        x0, n0 = y[(at == b) & ~t].sum(), ((at == b) & ~t).sum()
        expected = diff_proportions(x1, n1, x0, n0)
        assert (table["treated"][b], table["control"][b]) == (n1, n0)
        assert table["observed"][b] == pytest.approx(expected.estimate)
        assert (table["low"][b], table["high"][b]) == pytest.approx((expected.low, expected.high))
    # the bins rank: the observed uplift rises with the prediction, as the truth does
    assert table["observed"] == sorted(table["observed"])
    low, high = interval_of(table, np.array([0.01, 0.29, np.nan]))
    assert (low[0], high[0]) == (table["low"][0], table["high"][0])
    assert (low[1], high[1]) == (table["low"][-1], table["high"][-1])
    assert np.isnan(low[2]) and np.isnan(high[2])


def test_the_intervals_cover_each_bins_true_uplift_about_95_percent_of_the_time() -> None:
    covered = total = 0
    for seed in range(40):
        X, y, u = _contacts(4_000, 100 + seed)
        table = uplift_calibration(y, X, u, bins=5)
        assert table is not None
        at = np.searchsorted(table["edges"], u, side="right")
        for b in range(len(table["edges"]) + 1):
            true = u[at == b].mean()  # the mean true uplift of the bin's contacts
            covered += table["low"][b] <= true <= table["high"][b]
            total += 1
    assert 0.90 <= covered / total <= 0.99, covered / total


def test_too_few_control_rows_merge_bins_and_none_leave_no_interval() -> None:
    X, y, u = _contacts(5 * MIN_ARM_ROWS * 3, 2, control=0.12)  # about 18 control rows per fifth
    table = uplift_calibration(y, X, u, bins=5)
    assert table is not None and len(table["edges"]) + 1 < 5
    assert min(table["control"]) >= MIN_ARM_ROWS and min(table["treated"]) >= MIN_ARM_ROWS
    X1 = X.assign(treated=True)  # no control rows at all: nothing can be measured
    assert uplift_calibration(y, X1, u) is None


def test_the_trained_response_model_carries_its_calibration(trained_small) -> None:
    model = trained_small["response"].model
    table = model.uplift_calibration_
    assert table is not None and min(table["control"]) >= MIN_ARM_ROWS
    low, high = model.uplift_interval(np.array(table["predicted"]))
    assert (low <= high).all()
    assert list(low) == table["low"] and list(high) == table["high"]
