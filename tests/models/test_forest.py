"""The compiled tree walk (``kundenwert.models.forest``) against scikit-learn's own predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from kundenwert.models import forest
from kundenwert.models.tabular import raw_binned, raw_encoded


def _data(n: int = 6_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, 6))
    Z[:, 3] = rng.integers(0, 5, n)  # a code column (like an action), with missing codes
    Z[rng.random(n) < 0.1, 0] = np.nan
    Z[rng.random(n) < 0.2, 3] = np.nan
    Z[:, 4] = rng.integers(0, 2, n)  # an arm
    logit = Z[:, 1] + np.nan_to_num(Z[:, 0]) * (Z[:, 4] - 0.5) + 0.3 * np.nan_to_num(Z[:, 3], nan=2.5)
    return Z, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)


@pytest.fixture(scope="module")
def boosters():
    Z, y = _data()
    clf = HistGradientBoostingClassifier(max_iter=60, max_depth=5, random_state=0).fit(Z, y)
    reg = HistGradientBoostingRegressor(loss="gamma", max_iter=40, random_state=0).fit(Z, np.exp(Z[:, 1]))
    other = HistGradientBoostingClassifier(max_iter=30, max_depth=3, random_state=1).fit(Z, 1 - y)
    return {"Z": Z, "clf": clf, "reg": reg, "other": other}


@pytest.mark.parametrize("name", ["clf", "reg"])
def test_the_walk_is_bitwise_the_boosters_own(boosters, name) -> None:
    """Missing values, thresholds at a bin's edge, +-inf: the same leaves and the same sums in
    the same order as scikit-learn's raw-value and binned paths."""
    b, Z = boosters[name], boosters["Z"].copy()
    Z[:50, 1] = np.inf
    Z[50:100, 1] = -np.inf
    got = forest.raw(b, Z)
    np.testing.assert_array_equal(got, b._raw_predict(Z)[:, 0])
    np.testing.assert_array_equal(got, raw_binned(b, b._bin_mapper.transform(Z))[:, 0])
    for threads in (1, 2):  # split over threads: the same numbers
        np.testing.assert_array_equal(forest.predict(forest.flatten([b]), Z, threads=threads)[:, 0], got)


def test_several_boosters_in_one_pass(boosters) -> None:
    Z = boosters["Z"]
    both = forest.raws([boosters["clf"], boosters["other"]], Z)
    np.testing.assert_array_equal(both[:, 0], boosters["clf"]._raw_predict(Z)[:, 0])
    np.testing.assert_array_equal(both[:, 1], boosters["other"]._raw_predict(Z)[:, 0])


def test_raw_encoded_takes_the_walk_for_many_rows_only(boosters, monkeypatch) -> None:
    b, Z = boosters["clf"], boosters["Z"]
    assert forest.use_for(b, forest.MIN_ROWS) and not forest.use_for(b, forest.MIN_ROWS - 1)
    monkeypatch.setenv("KUNDENWERT_COMPILED_TREES", "0")
    assert not forest.use_for(b, len(Z))
    np.testing.assert_array_equal(raw_encoded(b, Z), b._raw_predict(Z)[:, 0])


def test_categorical_splits_are_left_to_scikit_learn() -> None:
    """A booster with categorical splits is not flattened: the binned path, as before."""
    Z, y = _data(2_000)
    Z[:, 3] = np.nan_to_num(Z[:, 3], nan=0)
    b = HistGradientBoostingClassifier(max_iter=10, categorical_features=[3], random_state=0).fit(Z, y)
    assert not forest.supported(b)
    many = np.repeat(Z, 3, axis=0)
    np.testing.assert_array_equal(raw_encoded(b, many), raw_binned(b, b._bin_mapper.transform(many))[:, 0])


def test_trees_specialised_to_each_setting_of_the_varying_columns(boosters) -> None:
    """``pair_flat``: output c is the raw score with the varying columns (code, arm) set to
    ``values[c]`` (a missing code among them), within float rounding of the grouped sums."""
    b, Z = boosters["clf"], boosters["Z"]
    values = np.array([[0.0, 1.0], [0.0, 0.0], [3.0, 1.0], [np.nan, 1.0], [np.nan, 0.0], [4.0, 0.0]])
    got = forest.predict(forest.pair_flat(b, [3, 4], values), Z)
    for c, v in enumerate(values):
        Zc = Z.copy()
        Zc[:, [3, 4]] = v
        np.testing.assert_allclose(got[:, c], b._raw_predict(Zc)[:, 0], rtol=1e-12, atol=1e-12)
