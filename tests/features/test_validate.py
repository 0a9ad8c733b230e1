"""Parsing raw values into contract types."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from kundenwert.features.parsing import parse_column


def _col(values: list) -> pa.ChunkedArray:
    return pa.chunked_array([pa.array(values, type=pa.string())])


def test_timestamps_iso8601_with_and_without_offset_become_utc() -> None:
    s, bad, _ = parse_column(
        _col(
            [
                "2025-03-01",
                "2025-03-01T14:05:00",
                "2025-03-01T14:05:00+02:00",
                "2025-03-01 14:05:00Z",
                "",
                "01.03.2025",
            ]
        ),
        "timestamp",
    )
    assert list(bad) == [False, False, False, False, False, True]
    assert s[0] == pd.Timestamp("2025-03-01", tz="UTC")
    assert s[2] == pd.Timestamp("2025-03-01T12:05:00", tz="UTC")
    assert s[3] == pd.Timestamp("2025-03-01T14:05:00", tz="UTC")
    assert pd.isna(s[4]) and pd.isna(s[5])


def test_numbers_reject_comma_decimals_words_and_non_finite() -> None:
    s, bad, rule = parse_column(_col(["19.99", " -5 ", "1e3", "19,99", "abc", "nan", "inf", ""]), "number")
    assert list(bad) == [False, False, False, True, True, True, True, False]
    assert s[0] == 19.99 and s[1] == -5 and s[2] == 1000 and np.isnan(s[7])
    assert "decimal number" in rule


def test_whole_numbers() -> None:
    s, bad, _ = parse_column(_col(["1980", "1980.0", "1980.5", ""]), "int")
    assert list(bad) == [False, False, True, False]
    assert s.dtype == "Int64" and s[1] == 1980


def test_booleans() -> None:
    s, bad, _ = parse_column(_col(["true", "FALSE", "1", "0", "yes", "No", "", "maybe"]), "bool")
    assert list(bad) == [False] * 7 + [True]
    assert list(s[:6]) == [True, False, True, False, True, False] and pd.isna(s[6])


def test_parquet_typed_values() -> None:
    ts = pa.chunked_array([pa.array([pd.Timestamp("2025-01-01 10:00")], type=pa.timestamp("us"))])
    s, bad, _ = parse_column(ts, "timestamp")
    assert not bad.any() and s[0] == pd.Timestamp("2025-01-01 10:00", tz="UTC")
    ids = pa.chunked_array([pa.array([10042, 7])])
    s, bad, _ = parse_column(ids, "id")
    assert list(s) == ["10042", "7"] and not bad.any()
    floats = pa.chunked_array([pa.array([1.5])])
    _, bad, rule = parse_column(floats, "id")
    assert bad.all() and "must be text" in rule
