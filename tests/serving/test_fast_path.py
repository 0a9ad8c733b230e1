"""The one-customer path of a request (indexed reads, plain Python) decides exactly as the batch
path (pandas over many customers), for every customer of a world and at several moments."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.mark.parametrize("shift_days", [1.0, -10.0, -45.5])
def test_one_customer_at_a_time_decides_as_the_batch(served, shift_days) -> None:
    state = served["client"].app.state.serving
    contacts = served["store"].read_table("contacts", ["contacted_at"])
    now = contacts["contacted_at"].max() + pd.Timedelta(days=shift_days)
    ids = served["customers"]
    batch = state.decide(ids, now=now)
    reasons = set()
    for i, cid in enumerate(ids):
        one = state.decide_one(cid, now=now)
        assert list(one.action_ids) == list(batch.action_ids)
        np.testing.assert_array_equal(one.reason[0], batch.reason[i], err_msg=cid)
        np.testing.assert_array_equal(one.detail[0], batch.detail[i], err_msg=cid)
        np.testing.assert_array_equal(one.rank[0], batch.rank[i], err_msg=cid)
        np.testing.assert_array_equal(one.score[0], batch.score[i], err_msg=cid)
        reasons |= set(one.reason[0])
    # the comparison covered the live rules, not only consent
    from kundenwert.serving.arbitration import CODE

    print(shift_days, sorted(reasons))
    assert {CODE["objection"], CODE["no_consent"], 0} <= reasons
    assert reasons & {CODE[r] for r in ("contact_pressure_7d", "contact_pressure_30d", "too_soon", "ignored")}
