"""The smooth calibration: strictly inside (0, 1), strictly increasing, chosen on held-out log-loss,
fast; and models calibrated the earlier way still load and predict the same."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression

from kundenwert.models.calibration import (
    CANDIDATES,
    MARGIN,
    LogitCalibrator,
    holdout_mask,
    log_loss_of_logits,
)
from kundenwert.models.specs import COMMON_TRUSTED_TYPES
from kundenwert.models.tabular import CalibratedGBMClassifier

DATA = Path(__file__).parents[1] / "data"
N = 60_000


def _beta_truth(s):  # 4 ln p - 0.3 ln(1 - p) + 1: far from Platt's line, smooth
    return 1.0 - 4.0 * np.logaddexp(0, -s) + 0.3 * np.logaddexp(0, s)


def _step_truth(s):  # a plateau, a steep rise, a plateau: neither Platt nor beta can bend so
    return -2.2 + 2.8 * expit(6 * s)


def _platt_truth(s):  # an over-confident booster: the log-odds are twice what they should be
    return 0.5 * s - 0.5


def _sample(truth, seed: int = 0):
    rng = np.random.default_rng(seed)
    s = rng.normal(0, 2, N)
    y = (rng.random(N) < expit(truth(s))).astype("float64")
    groups = rng.integers(0, 2**63, N, dtype=np.uint64)
    return s, y, groups


@pytest.mark.parametrize("method", ["auto", *CANDIDATES])
@pytest.mark.parametrize("truth", [_beta_truth, _step_truth, _platt_truth])
def test_strictly_inside_and_strictly_increasing(method, truth) -> None:
    s, y, groups = _sample(truth)
    cal = LogitCalibrator(method).fit(s, y, groups)
    wide = np.r_[-1e6, -50.0, s, 50.0, 1e6]
    p = cal.predict(wide)
    assert (p > 0).all() and (p < 1).all()
    # Every distinct score its own value, beyond the data too (up to float resolution): the
    # log-odds everywhere, the probability wherever the last guard (MARGIN) does not bind.
    grid = np.linspace(-12, 12, 240_001)
    assert (np.diff(cal.decision_function(grid)) > 0).all()
    inside = np.abs(cal.decision_function(grid)) < np.log((1 - MARGIN) / MARGIN)
    assert inside.mean() > 0.5 and (np.diff(cal.predict(grid[inside])) > 0).all()
    u = np.unique(s)
    u = u[np.abs(cal.decision_function(u)) < np.log((1 - MARGIN) / MARGIN)]
    assert len(np.unique(cal.predict(u))) == len(u)


@pytest.mark.parametrize(("truth", "right"), [(_beta_truth, "beta"), (_step_truth, "centered_isotonic")])
def test_auto_chooses_the_lowest_held_out_log_loss(truth, right) -> None:
    """Held-out log-loss of each candidate, recomputed here from the split ``auto`` uses: the
    chosen one has the lowest, and on data made for one candidate that is the one."""
    s, y, groups = _sample(truth)
    cal = LogitCalibrator("auto").fit(s, y, groups)
    held = holdout_mask(groups)
    assert 0.15 < held.mean() < 0.25
    losses = {}
    for name in CANDIDATES:
        alone = LogitCalibrator(name).fit(s[~held], y[~held])
        losses[name] = log_loss_of_logits(y[held], alone.decision_function(s[held]))
    assert losses == pytest.approx(cal.holdout_log_loss_, rel=1e-12)
    assert cal.method_ == min(losses, key=losses.__getitem__) == right
    # refitted on every row: the chosen map fitted alone on all of them
    again = LogitCalibrator(right).fit(s, y)
    np.testing.assert_allclose(cal.predict(s), again.predict(s), rtol=1e-12)


def test_auto_recovers_an_over_confident_booster() -> None:
    """Platt's case (beta contains it): whichever wins, the map is the true one within 0.01."""
    s, y, groups = _sample(_platt_truth)
    cal = LogitCalibrator("auto").fit(s, y, groups)
    assert cal.method_ == min(cal.holdout_log_loss_, key=cal.holdout_log_loss_.__getitem__)
    grid = np.linspace(-4, 4, 81)
    assert np.abs(cal.predict(grid) - expit(_platt_truth(grid))).max() < 0.01


def test_centered_isotonic_has_no_steps_and_no_certainty() -> None:
    """Where isotonic regression is a staircase with ends at exactly 0 and 1, the centered
    version gives every score its own value inside (0, 1), and is as good on new rows."""
    s, y, _ = _sample(_step_truth)
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(s, y)
    cir = LogitCalibrator("centered_isotonic").fit(s, y)
    assert len(np.unique(iso.predict(s))) < 200 and {0.0, 1.0} & set(iso.predict(np.r_[-99, 99]))
    assert len(np.unique(cir.predict(s))) == len(np.unique(s))
    t, yt, _ = _sample(_step_truth, seed=1)
    p_iso = np.clip(iso.predict(t), 1e-9, 1 - 1e-9)
    loss_iso = -np.mean(yt * np.log(p_iso) + (1 - yt) * np.log(1 - p_iso))
    assert log_loss_of_logits(yt, cir.decision_function(t)) < loss_iso + 1e-3


def test_too_few_rows_to_compare_fall_back_to_platt() -> None:
    s = np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 3.0])
    y = np.array([0.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    cal = LogitCalibrator("auto").fit(s, y, np.zeros(6, dtype=np.uint64))  # all held out
    assert cal.method_ == "platt" and cal.holdout_log_loss_ == {}
    with pytest.raises(ValueError, match="both outcomes"):
        LogitCalibrator().fit(s, np.zeros(6))


def test_scoring_is_vectorised_and_fast() -> None:
    """Two million scores through each map in well under a second (the scoring hot path)."""
    s, y, groups = _sample(_step_truth)
    big = np.random.default_rng(2).normal(0, 2, 2_000_000)
    for name in CANDIDATES:
        cal = LogitCalibrator(name).fit(s, y, groups)
        t0 = time.perf_counter()
        cal.predict(big)
        assert time.perf_counter() - t0 < 1.0, name


def test_models_calibrated_the_earlier_way_load_and_predict_the_same() -> None:
    """``old_calibration.skops`` was written by the code before ``LogitCalibrator`` (see
    ``tests/data/make_old_calibration.py``): its isotonic and sigmoid models predict as then."""
    sys.path.insert(0, str(DATA))
    try:
        from make_old_calibration import frame
    finally:
        sys.path.remove(str(DATA))
    stored = sio.load(
        DATA / "old_calibration.skops",
        trusted=[*COMMON_TRUSTED_TYPES, "kundenwert.models.tabular.ChurnModel"],
    )
    X, _ = frame()
    for name in ("isotonic", "sigmoid"):
        model = stored[name]
        assert isinstance(model, CalibratedGBMClassifier) and model.calibration == name
        np.testing.assert_allclose(model.predict_proba(X)[:, 1], stored[f"{name}_predicted"], rtol=1e-12)
