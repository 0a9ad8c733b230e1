"""Parsing raw values into contract types."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kundenwert.features.parsing import duplicated, isin, parse_column, text_length_at_most
from kundenwert.features.validate import _lookup, _rows_duplicated


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


# --------------------------------------------------------------- the Arrow fast paths, against pandas


@given(
    st.lists(
        st.one_of(
            st.dates().map(str),
            st.datetimes(min_value=pd.Timestamp("1000-01-01").to_pydatetime()).map(lambda d: d.isoformat()),
            st.datetimes(min_value=pd.Timestamp("1000-01-01").to_pydatetime()).map(
                lambda d: d.isoformat(sep=" ", timespec="seconds")
            ),
            st.sampled_from(["", " 2024-02-29 ", "2023-02-29", "2023-13-01", "2023-01-01T24:00:00", "x"]),
        ),
        max_size=8,
    )
)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_timestamps_parsed_by_arrow_equal_pandas_iso8601(values: list[str]) -> None:
    """Plain dates and times take Arrow's parser: the same instants and the same broken cells as
    pandas' ISO 8601 parser, which every other spelling still takes."""
    s, bad, _ = parse_column(_col(values), "timestamp")
    trimmed = pd.Series([v.strip() for v in values], dtype=object)
    ref = pd.to_datetime(trimmed, format="ISO8601", utc=True, errors="coerce").astype("datetime64[us, UTC]")
    assert s.reset_index(drop=True).equals(ref.reset_index(drop=True))
    assert list(bad) == [v.strip() != "" and pd.isna(r) for v, r in zip(values, ref, strict=True)]


def test_a_day_that_does_not_exist_is_still_a_broken_cell() -> None:
    s, bad, _ = parse_column(_col(["2023-01-01", "2023-02-30", "2023-01-02T10:00:00"]), "timestamp")
    assert list(bad) == [False, True, False]
    assert s[2] == pd.Timestamp("2023-01-02T10:00:00", tz="UTC")


@given(st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "c", "ä", "a b", ""])), max_size=12))
@settings(max_examples=200, deadline=None)
def test_duplicates_isin_and_lookup_equal_pandas(values: list[str | None]) -> None:
    s = pd.Series(values, dtype="str")
    assert list(duplicated(s)) == list(s.duplicated(keep=False))
    assert list(duplicated(s.sort_values())) == list(s.sort_values().duplicated(keep=False))
    assert isin(s, ["a", "ä"]).tolist() == s.isin(["a", "ä"]).tolist()
    table = pd.Series([1.5, 2.5, 3.5], index=pd.Index(["b", "ä", "c"], dtype="str"))
    got = _lookup(s, table)
    want = table.reindex(pd.Index(s.to_numpy(), dtype="str"))
    assert got.index.equals(s.index)
    assert np.array_equal(got.to_numpy(), want.to_numpy(), equal_nan=True)


def test_text_length_at_most_passes_missing_values() -> None:
    s = pd.Series(["ab", None, "abc", "äöü"], dtype="str")
    assert text_length_at_most(s, 3).tolist() == [True, True, True, True]
    assert text_length_at_most(s, 2).tolist() == [True, True, False, False]


def test_consent_rows_duplicated_equal_pandas() -> None:
    df = pd.DataFrame(
        {
            "customer_id": pd.Series(["1", "1", "2", "1"], dtype="str"),
            "channel": pd.Series(["email", "email", "email", "sms"], dtype="str"),
            "recorded_at": pd.to_datetime(["2024-01-01"] * 4, utc=True).astype("datetime64[us, UTC]"),
        }
    )
    keys = ["customer_id", "channel", "recorded_at"]
    assert _rows_duplicated(df, keys).tolist() == df.duplicated(subset=keys, keep=False).tolist()
    assert not _rows_duplicated(df.iloc[1:], keys).any()
