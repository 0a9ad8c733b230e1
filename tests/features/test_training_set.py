"""Rolling cutoffs and the time split: no test label window overlaps a training label window."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kundenwert.features.labels import labels_at
from kundenwert.features.snapshot import snapshot
from kundenwert.features.training_set import SplitConfig, build_training_set, rolling_cutoffs, time_split


@given(st.integers(30, 400), st.integers(7, 60), st.integers(0, 3), st.integers(1, 3), st.integers(400, 1500))
def test_split_never_overlaps_label_windows(
    horizon: int, step: int, n_valid: int, n_test: int, span: int
) -> None:
    cfg = SplitConfig(step_days=step, min_history_days=60, validation_cutoffs=n_valid, test_cutoffs=n_test)
    start = pd.Timestamp("2023-01-01", tz="UTC")
    try:
        cuts = rolling_cutoffs(start, start + pd.Timedelta(days=span), horizon, cfg)
        split = time_split(cuts, horizon, cfg)
    except ValueError:
        return  # too little data for this configuration: refused, never a leaky split
    h = pd.Timedelta(days=horizon)
    assert all(t + h <= min(split["test"]) for t in split["train"] + split["validation"])
    if split["validation"]:
        assert all(t + h <= min(split["validation"]) for t in split["train"])
    assert max(split["test"]) + h <= start + pd.Timedelta(days=span)
    assert len(split["test"]) == n_test and len(split["train"]) >= 1


def test_too_little_history_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="too short"):
        rolling_cutoffs(pd.Timestamp("2025-01-01"), pd.Timestamp("2025-03-01"), 90, SplitConfig())


def test_training_set_stacks_snapshots_and_labels(imported_world) -> None:
    frames = imported_world(1_000, 8)[0]
    cuts = [pd.Timestamp("2025-03-01", tz="UTC"), pd.Timestamp("2025-06-01", tz="UTC")]
    ts = build_training_set(frames, cuts)
    for t in cuts:
        part = ts.xs(t, level="cutoff")
        x = snapshot(frames, t)
        pd.testing.assert_frame_equal(part[x.columns], x)
        y = labels_at(frames, t)
        pd.testing.assert_series_equal(
            part["label_churn"], y["churn"].reindex(part.index).rename("label_churn")
        )
