"""Labels: the contract's definitions, no dependence on rows before the cutoff, agreement with truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kundenwert.datasets.truth import load_truth, values_at
from kundenwert.features.labels import LabelConfig, labels_at, response_labels

CUTOFF = pd.Timestamp("2025-06-01", tz="UTC")


@pytest.fixture(scope="module")
def world(imported_world):
    frames, folder = imported_world(20_000, 9)
    return frames, load_truth(str(folder))


def test_churn_share_among_active_matches_true_probability(world) -> None:
    frames, truth = world
    lab = labels_at(frames, CUTOFF)
    active = lab.index[lab["status"] == "active"]
    p = values_at(truth, CUTOFF, (90,)).loc[active, "churn_probability_90d"]
    observed = lab.loc[active, "churn"].mean()
    se = np.sqrt((p * (1 - p)).sum()) / len(p)
    assert abs(observed - p.mean()) < 4 * se, (observed, p.mean(), se)


def test_affinity_share_matches_true_probability(world) -> None:
    frames, truth = world
    lab = labels_at(frames, CUTOFF)
    v = values_at(truth, CUTOFF, (90,))
    for c in ("electronics", "fashion", "books_media"):
        p = v.loc[lab.index, f"affinity_{c}_90d"]
        se = np.sqrt((p * (1 - p)).sum()) / len(p)
        assert abs(lab[f"affinity_{c}"].mean() - p.mean()) < 4 * se + 0.003, c


def test_status_assigns_churn_and_winback_to_the_right_customers(world) -> None:
    frames, _ = world
    lab = labels_at(frames, CUTOFF)
    assert lab.loc[lab["status"] != "active", "churn"].isna().all()
    assert lab.loc[lab["status"] != "lapsed", "winback"].isna().all()
    assert lab.loc[lab["status"] == "active", "churn"].notna().all()
    assert (lab["clv"] >= lab["clv"].min()).all() and lab["clv"].max() > 0


def test_response_labels_cover_treated_and_control(world) -> None:
    frames, _ = world
    r = response_labels(frames["contacts"], CUTOFF, LabelConfig(horizon=90))
    assert r["treated"].any() and (~r["treated"]).any()
    assert r.loc[r["treated"], "responded"].mean() > r.loc[~r["treated"], "responded"].mean()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.floats(min_value=0.001, max_value=700, allow_nan=False), min_size=1, max_size=30),
    st.integers(0, 10_000),
)
def test_changing_rows_before_the_cutoff_never_changes_labels_after_it(
    world, days_back: list[float], seed: int
) -> None:
    """Amounts and times of rows before the cutoff change (staying before it); every label stays."""
    frames, _ = world
    p = frames["purchases"]
    before = p["purchased_at"] < CUTOFF
    rng = np.random.default_rng(seed)
    idx = rng.choice(np.flatnonzero(before.to_numpy()), size=len(days_back), replace=False)
    changed = p.copy()
    changed.loc[changed.index[idx], "amount"] = changed.loc[changed.index[idx], "amount"] * 3 + 1
    changed.loc[changed.index[idx], "purchased_at"] = pd.array(
        [CUTOFF - pd.Timedelta(days=d) for d in days_back], dtype="datetime64[us, UTC]"
    )
    base = labels_at(frames, CUTOFF).drop(columns="status")
    moved = labels_at({**frames, "purchases": changed}, CUTOFF).drop(columns="status")
    # Status (who gets which label) may change; the label values of the future never do.
    future = ["clv"] + [c for c in base.columns if c.startswith("affinity_")]
    pd.testing.assert_frame_equal(moved[future], base[future])
    both = base["churn"].notna() & moved["churn"].notna()
    pd.testing.assert_series_equal(moved.loc[both, "churn"], base.loc[both, "churn"])
