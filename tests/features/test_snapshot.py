"""Snapshots: lifetimes' BTYD summary on real data, shard invariance, and no leakage across the cutoff."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kundenwert.datasets.cdnow import write_cdnow
from kundenwert.features.importer import import_folder
from kundenwert.features.snapshot import SnapshotConfig, load_frames, snapshot, snapshot_shard, spec_for

BTYD = ["frequency", "recency", "T", "monetary_value"]


@pytest.fixture(scope="module")
def sample_frames(imported_world):
    return imported_world(3_000, 5)[0]


@pytest.mark.parametrize("sample", [True, False])
@pytest.mark.parametrize("unit", ["D", "W"])
def test_btyd_summary_equals_lifetimes_on_cdnow(tmp_path, sqlite_store, sample: bool, unit: str) -> None:
    from lifetimes.utils import summary_data_from_transaction_data

    write_cdnow(tmp_path, sample=sample)
    import_folder(tmp_path, sqlite_store, mode="replace")
    frames = load_frames(sqlite_store)
    snap = snapshot(frames, "1997-10-01", SnapshotConfig(unit=unit))
    tx = frames["purchases"].assign(purchased_at=lambda d: d["purchased_at"].dt.tz_localize(None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = summary_data_from_transaction_data(
            tx,
            "customer_id",
            "purchased_at",
            monetary_value_col="amount",
            observation_period_end="1997-09-30",
            freq="D",
            freq_multiplier=7 if unit == "W" else 1,
        )
    assert len(ref) == len(snap) == (2_357 if sample else 23_570)
    got = snap.loc[ref.index, BTYD]
    for c in BTYD:
        np.testing.assert_allclose(got[c].to_numpy(), ref[c].to_numpy(), rtol=1e-12, atol=1e-9, err_msg=c)


def test_result_does_not_depend_on_shards_or_processes(sample_frames) -> None:
    one = snapshot(sample_frames, "2025-06-01")
    for shards, jobs in ((2, 1), (8, 1), (8, 2)):
        pd.testing.assert_frame_equal(snapshot(sample_frames, "2025-06-01", shards=shards, jobs=jobs), one)


def test_only_customers_known_at_the_cutoff(sample_frames) -> None:
    cutoff = pd.Timestamp("2024-01-01", tz="UTC")
    snap = snapshot(sample_frames, cutoff)
    created = sample_frames["customers"].set_index("customer_id")["created_at"]
    assert set(snap.index) == set(created[created < cutoff].index)


# ----------------------------------------------------------------------------- leakage, as properties

CUTOFF = pd.Timestamp("2025-01-01", tz="UTC")


def _future_rows(draw_times: list[float], sample_frames) -> dict[str, pd.DataFrame]:
    """Copies of existing rows moved to times at or after the cutoff (with new ids)."""
    out = {}
    for name, col, key in (
        ("purchases", "purchased_at", "purchase_id"),
        ("contacts", "contacted_at", "contact_id"),
        ("complaints", "opened_at", "complaint_id"),
        ("offers", "created_at", "offer_id"),
        ("consents", "recorded_at", None),
    ):
        src = sample_frames[name]
        rows = src.sample(n=min(len(draw_times), len(src)), random_state=len(draw_times)).copy()
        when = [CUTOFF + pd.Timedelta(days=d) for d in draw_times[: len(rows)]]
        rows[col] = pd.array(when, dtype="datetime64[us, UTC]")
        if key:
            rows[key] = [f"future-{i}" for i in range(len(rows))]
        out[name] = rows
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.floats(min_value=0, max_value=400, allow_nan=False), min_size=1, max_size=40))
def test_rows_at_or_after_the_cutoff_never_change_features(sample_frames, days: list[float]) -> None:
    spec = spec_for(sample_frames)
    before = snapshot_shard(sample_frames, CUTOFF, spec)
    extra = _future_rows(days, sample_frames)
    grown = {
        k: pd.concat([v, extra[k]], ignore_index=True) if k in extra else v for k, v in sample_frames.items()
    }
    pd.testing.assert_frame_equal(snapshot_shard(grown, CUTOFF, spec), before)


def test_a_row_before_the_cutoff_does_change_features(sample_frames) -> None:
    """The leakage property above is not vacuous: the same kind of row before the cutoff counts."""
    spec = spec_for(sample_frames)
    before = snapshot_shard(sample_frames, CUTOFF, spec)
    who = before.index[before["frequency"].fillna(-1) >= 0][0]
    row = sample_frames["purchases"].iloc[[0]].copy()
    row["customer_id"], row["purchase_id"] = who, "earlier-1"
    row["purchased_at"] = pd.array([CUTOFF - pd.Timedelta(hours=1)], dtype="datetime64[us, UTC]")
    row["amount"] = 10.0
    grown = {**sample_frames, "purchases": pd.concat([sample_frames["purchases"], row], ignore_index=True)}
    after = snapshot_shard(grown, CUTOFF, spec)
    assert after.loc[who, "frequency"] == before.loc[who, "frequency"] + 1
    assert after.loc[who, "days_since_last_purchase"] < 1
