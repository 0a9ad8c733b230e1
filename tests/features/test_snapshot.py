"""Snapshots: lifetimes' BTYD summary on real data, shard invariance, and no leakage across the cutoff."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kundenwert.datasets.cdnow import write_cdnow
from kundenwert.features.consent import consent_state
from kundenwert.features.contract import MARKETING_CHANNELS
from kundenwert.features.importer import import_folder
from kundenwert.features.snapshot import (
    SnapshotConfig,
    load_frames,
    prepare,
    snapshot,
    snapshot_shard,
    spec_for,
    split_frames,
)

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


def test_the_shard_function_alone_gives_the_same_rows(sample_frames) -> None:
    """The distributed route (Spark's groupBy(shard).applyInPandas): frames split by ``shard_of``,
    ``snapshot_shard`` on each with the one spec, results stacked."""
    one = snapshot(sample_frames, "2025-06-01")
    spec = spec_for(sample_frames)
    parts = [snapshot_shard(f, "2025-06-01", spec) for f in split_frames(sample_frames, 3)]
    assert all(len(p) for p in parts)
    pd.testing.assert_frame_equal(pd.concat(parts).sort_index(), one)


def test_a_prepared_input_serves_many_cutoffs(sample_frames) -> None:
    spec = spec_for(sample_frames)
    prep = prepare(sample_frames, spec)
    for cutoff in ("2024-03-01", "2025-06-01 12:30"):
        pd.testing.assert_frame_equal(snapshot(prep, cutoff, spec=spec), snapshot(sample_frames, cutoff))
    with pytest.raises(ValueError, match="spec"):
        snapshot(prep, "2025-06-01")


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


# ------------------------------------------------------------------------ consent, the same rules


def _consent_columns_match(frames, cutoff) -> int:
    """The snapshot's consent columns equal ``consent_state`` (strictly before the cutoff); the
    number of customers with some permitted channel, so that a caller can see it is not vacuous."""
    snap = snapshot(frames, cutoff)
    state = consent_state(frames["consents"], cutoff, inclusive=False)
    for ch in [*MARKETING_CHANNELS, "objection"]:
        want = state[ch].reindex(snap.index).fillna(False).astype(bool)
        got = snap["objection" if ch == "objection" else f"consent_{ch}"]
        pd.testing.assert_series_equal(got, want, check_names=False, obj=ch)
    return int(snap[[f"consent_{c}" for c in MARKETING_CHANNELS]].any(axis=1).sum())


@pytest.mark.parametrize("cutoff", ["2023-06-01", "2024-09-15 08:00", "2025-06-01"])
def test_consent_features_follow_consent_state_on_the_sample_world(sample_frames, cutoff) -> None:
    assert _consent_columns_match(sample_frames, cutoff) > 100


def test_consent_features_follow_consent_state_on_the_rule_cases() -> None:
    from tests.features.test_consent import RECORDS, _consents

    ties = _consents(  # the same moment twice: the later row wins, in both implementations
        [("e", "sms", True, "2024-01-01", None), ("e", "sms", False, "2024-01-01", None)]
        + [("f", "sms", False, "2024-01-01", None), ("f", "sms", True, "2024-01-01", None)]
        + [("g", "email", None, "2024-01-01", True), ("g", "*", None, "2024-01-02", None)]
    )
    consents = pd.concat([RECORDS, ties], ignore_index=True)
    who = sorted(consents["customer_id"].unique())
    customers = pd.DataFrame(
        {
            "customer_id": pd.array(who, dtype="str"),
            "created_at": pd.array(
                [pd.Timestamp("2023-01-01", tz="UTC")] * len(who), dtype="datetime64[us, UTC]"
            ),
            "customer_type": "consumer",
            "birth_year": pd.array([1980] * len(who), dtype="Int64"),
            "region": "north",
        }
    )
    consents["recorded_at"] = consents["recorded_at"].astype("datetime64[us, UTC]")
    consents["granted"] = consents["granted"].astype("boolean")
    for cutoff in (
        "2024-01-01",
        "2024-01-01 00:00:01",
        "2024-02-15",
        "2024-05-01",
        "2024-06-01",
        "2024-07-01",
    ):
        _consent_columns_match({"customers": customers, "consents": consents}, cutoff)
    assert _consent_columns_match({"customers": customers, "consents": consents}, "2024-05-01") >= 3
