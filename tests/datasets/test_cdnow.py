"""CDNOW in the contract format, imported like any other data."""

from __future__ import annotations

import pandas as pd
import pytest

from kundenwert.datasets.cdnow import cdnow_tables, write_cdnow
from kundenwert.features.importer import import_folder


@pytest.mark.parametrize(("sample", "customers", "rows"), [(False, 23_570, 69_659), (True, 2_357, 6_919)])
def test_counts_match_the_published_data(sample: bool, customers: int, rows: int) -> None:
    t = cdnow_tables(sample)
    assert len(t["customers"]) == customers and len(t["purchases"]) == rows
    assert t["purchases"]["purchased_at"].min() == "1997-01-01"
    assert t["purchases"]["purchased_at"].max() <= "1998-06-30"


def test_full_cdnow_imports_cleanly(tmp_path, sqlite_store) -> None:
    write_cdnow(tmp_path, sample=False)
    result = import_folder(tmp_path, sqlite_store, mode="replace")
    assert result.rows == {"customers": 23_570, "purchases": 69_659}
    p = sqlite_store.read_table("purchases")
    assert p["customer_id"].str.len().eq(5).all()  # "00001": identifiers keep their zeros
    assert abs(p["amount"].sum() - pd.read_csv(tmp_path / "purchases.csv")["amount"].sum()) < 1e-6
