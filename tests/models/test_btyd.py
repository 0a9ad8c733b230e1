"""BTYD CLV: the published CDNOW parameters, the holdout fit, failure modes, behaviour."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from kundenwert.datasets.cdnow import write_cdnow
from kundenwert.db.store import Store
from kundenwert.errors import ModelFitError
from kundenwert.features.importer import import_folder
from kundenwert.features.labels import purchase_days_between
from kundenwert.features.snapshot import SnapshotConfig, load_frames, snapshot
from kundenwert.models.btyd import BTYDModel, holdout_by_frequency

CALIBRATION_END = pd.Timestamp("1997-10-01", tz="UTC")  # 39 weeks from 1997-01-01
HOLDOUT_END = CALIBRATION_END + pd.Timedelta(weeks=39)  # weeks 40-78


@pytest.fixture(scope="module")
def cdnow(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cdnow")
    write_cdnow(folder, sample=True)
    store = Store(f"sqlite:///{folder / 'kw.db'}")
    import_folder(folder, store, mode="replace")
    frames = load_frames(store)
    store.dispose()
    return frames, snapshot(frames, CALIBRATION_END, SnapshotConfig(unit="W"))


def test_cdnow_parameters_match_the_papers(cdnow) -> None:
    """Fader, Hardie and Lee (2005): r=0.243, alpha=4.414, a=0.793, b=2.426; Fader and Hardie
    (2013), Gamma-Gamma on the repeat buyers: p=6.25, q=3.74, gamma=15.44; each within 1%."""
    _, snap = cdnow
    m = BTYDModel(unit="W").fit(snap)
    paper = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426, "p": 6.25, "q": 3.74, "v": 15.44}
    for k, want in paper.items():
        assert m.params_[k] == pytest.approx(want, rel=0.01), (k, m.params_[k])
    assert m.n_customers_ == 2_357 and m.n_distinct_ < 2_357  # fitted on distinct rows


def test_weights_give_the_same_fit_and_predictions(cdnow) -> None:
    _, snap = cdnow
    a, b = BTYDModel(unit="W").fit(snap), BTYDModel(unit="W", collapse=False).fit(snap)
    for k in a.params_:
        assert a.params_[k] == pytest.approx(b.params_[k], rel=1e-4), k
    pd.testing.assert_frame_equal(a.predict(snap), b.predict(snap), rtol=1e-4)


def test_holdout_purchases_by_calibration_frequency(cdnow) -> None:
    """Weeks 40-78, the papers' holdout: the table of predicted and actual repeat purchases by
    calibration frequency (printed; -s shows it). Checked against independent computations: the
    predictions against lifetimes' own conditional expectation, the actual counts against the raw
    CDNOW rows (distinct purchase days after the calibration period)."""
    from kundenwert.datasets.cdnow import cdnow_tables

    frames, snap = cdnow
    m = BTYDModel(unit="W", horizon_days=39 * 7).fit(snap)
    predicted = m.predict(snap)["expected_purchases"]
    direct = m.bgf_.conditional_expected_number_of_purchases_up_to_time(
        39.0, snap["frequency"], snap["recency"], snap["T"]
    )
    np.testing.assert_allclose(predicted.to_numpy(), np.asarray(direct), rtol=1e-10)
    actual = purchase_days_between(frames["purchases"], CALIBRATION_END, HOLDOUT_END)
    raw = cdnow_tables(sample=True)["purchases"]
    late = raw[pd.to_datetime(raw["purchased_at"]) >= "1997-10-01"]
    assert actual.sum() == late.groupby("customer_id")["purchased_at"].nunique().sum()
    table = holdout_by_frequency(predicted, snap["frequency"], actual.reindex(snap.index))
    print("\n" + table.round(1).to_string())
    assert table.loc["total", "customers"] == 2_357
    assert table.loc["total", "actual"] == actual.sum()
    per_customer = table.drop(index="total")[["predicted", "actual"]].div(
        table.drop(index="total")["customers"], axis=0
    )
    # Both rise with calibration frequency: the model ranks the groups as the holdout does.
    assert (
        per_customer["predicted"].is_monotonic_increasing
        and per_customer["actual"].iloc[-1] > per_customer["actual"].iloc[0]
    )


def test_no_repeat_buyers_is_a_clear_error() -> None:
    X = pd.DataFrame(
        {"frequency": [0.0, 0.0], "recency": [0.0, 0.0], "T": [10.0, 20.0], "monetary_value": [0.0, 0.0]}
    )
    with pytest.raises(ModelFitError, match="repeat purchase"):
        BTYDModel().fit(X)


def test_no_positive_spend_is_a_clear_error(cdnow) -> None:
    _, snap = cdnow
    refunds = snap.assign(monetary_value=-snap["monetary_value"].abs())
    with pytest.raises(ModelFitError, match="monetary_value > 0"):
        BTYDModel(unit="W").fit(refunds)


def test_missing_columns_and_bad_values_are_named() -> None:
    with pytest.raises(ValueError, match="monetary_value"):
        BTYDModel().fit(pd.DataFrame({"frequency": [1.0], "recency": [1.0], "T": [2.0]}))
    bad = pd.DataFrame(
        {"frequency": [1.0, -1.0], "recency": [1.0, 1.0], "T": [2.0, 2.0], "monetary_value": [5.0, 5.0]},
        index=["a", "b"],
    )
    with pytest.raises(ValueError, match="frequency.*'b'"):
        BTYDModel().fit(bad)


def test_a_new_purchase_never_lowers_expected_purchases(cdnow) -> None:
    """Buying again now (frequency + 1, recency = T) never lowers expected purchases. (P(alive) can
    fall: BG/NBD holds a customer without repeat purchases alive for sure.)"""
    _, snap = cdnow
    m = BTYDModel(unit="W").fit(snap)
    known = snap.dropna(subset=["frequency"])
    more = known.assign(frequency=known["frequency"] + 1, recency=known["T"])
    before, after = m.predict(known), m.predict(more)
    assert (after["expected_purchases"] >= before["expected_purchases"] - 1e-12).all()
    assert (after["expected_purchases"] > before["expected_purchases"]).mean() > 0.99


def test_customers_without_purchases_get_no_prediction(cdnow) -> None:
    _, snap = cdnow
    m = BTYDModel(unit="W").fit(snap)
    X = pd.concat(
        [
            snap.iloc[:3],
            snap.iloc[:1].assign(frequency=np.nan, recency=np.nan, T=np.nan).rename(index=lambda i: "new"),
        ]
    )
    out = m.predict(X)
    assert out.loc["new"].isna().all() and out.iloc[:3].notna().all().all()


def test_estimator_contract(cdnow) -> None:
    _, snap = cdnow
    m = BTYDModel(unit="W", penalizer_coef=0.001)
    with pytest.raises(NotFittedError):
        m.predict(snap)
    assert clone(m).get_params() == m.get_params()
    assert m.fit(snap) is m and hasattr(m, "params_")


def test_a_time_grid_collapses_rows_and_keeps_the_fit_close(cdnow) -> None:
    """Whole weeks (as lifetimes' freq="W" periods) give fewer distinct rows and parameters
    within a few percent of the day-precision fit; predictions still use exact times."""
    _, snap = cdnow
    exact, whole = BTYDModel(unit="W").fit(snap), BTYDModel(unit="W", time_grid=1.0).fit(snap)
    assert whole.n_distinct_ < exact.n_distinct_  # CDNOW sample: 682 against 1,016
    for k in exact.params_:
        assert whole.params_[k] == pytest.approx(exact.params_[k], rel=0.05), k
    with pytest.raises(ValueError, match="time_grid"):
        BTYDModel(time_grid=-1.0).fit(snap)
