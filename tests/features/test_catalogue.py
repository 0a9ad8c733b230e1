"""Every snapshot column is in the catalogue with a meaning, and reasons read as sentences."""

from __future__ import annotations

import pandas as pd

from kundenwert.features.catalogue import catalogue, reason
from kundenwert.features.snapshot import snapshot


def test_every_snapshot_column_is_described(imported_world) -> None:
    snap = snapshot(imported_world(1_500, 4)[0], "2025-06-01")
    cat = catalogue(snap)
    assert list(cat["name"]) == list(snap.columns)
    assert (cat["family"] != "unknown").all(), cat[cat["family"] == "unknown"]
    assert (cat["meaning"].str.len() > 0).all() and (cat["meaning"] != cat["name"]).all()
    attrs = cat[cat["family"] == "attribute"].set_index("name")["type"]
    assert attrs["attr_household_size"] == "number" and attrs["attr_lifestyle_segment"] == "category"


def test_reasons_are_plain_sentences() -> None:
    assert reason("days_since_last_purchase", 212.0) == "no purchase for 212 days"
    assert reason("open_complaints", 2.0) == "2 open complaints"
    assert reason("response_rate_email", 0.12) == "responds to email (12%)"
    assert reason("attr_lifestyle_segment", "family") == "lifestyle_segment family"
    assert pd.notna(reason("consent_sms", True))
