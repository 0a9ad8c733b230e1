"""``pivot`` of a long propensity frame through its index codes equals the unstack it replaces."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kundenwert.serving.candidates import _pivot_long, pivot


def _long(n: int = 500, seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    pairs = [("a", "email"), ("a", "sms"), ("b", "mail"), ("c", "email")]
    rows = [(f"c{i:04d}", a, ch) for i in range(n) for a, ch in pairs if rng.random() < 0.6]
    index = pd.MultiIndex.from_tuples(rows, names=["customer_id", "action_id", "channel"])
    values = rng.random(len(rows))
    values[rng.random(len(rows)) < 0.1] = np.nan
    return pd.Series(values, index=index, name="response")


def _unstacked(values: pd.Series, ids: pd.Index, keys: list, default: float) -> np.ndarray:
    mine = values.index.get_level_values("customer_id").isin(ids)
    table = values[mine].unstack(list(values.index.names[1:]))
    block = table.reindex(index=ids, columns=pd.MultiIndex.from_tuples(keys)).to_numpy(
        dtype="float64", na_value=np.nan
    )
    return np.where(np.isnan(block), default, block)


def test_pivot_through_codes_equals_unstack() -> None:
    values = _long()
    ids = pd.Index([f"c{i:04d}" for i in range(0, 600, 2)] + ["someone"], name="customer_id")
    keys = [("c", "email"), ("a", "sms"), ("a", "phone"), ("new", "email"), ("a", "email")]
    for default in (np.nan, 0.0):
        got = pivot(values.to_frame(), "response", ids, keys, default)
        np.testing.assert_array_equal(got, _unstacked(values, ids, keys, default))


def test_a_repeated_customer_pair_is_left_to_unstack() -> None:
    values = _long(20)
    twice = pd.concat([values, values.iloc[:1]])
    customer, action, channel = values.index[0]
    assert _pivot_long(twice, pd.Index([customer]), [(action, channel)], np.nan) is None
