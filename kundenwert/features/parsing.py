"""Parsing: raw CRM text (or Parquet values) into the contract's column types.

Identifiers and text become strings, timestamps UTC, numbers float, then integers and booleans.
``parse_column`` returns the typed column, which cells could not be read, and the rule they broke;
validation (``kundenwert.features.validate``) turns those cells into issues.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pyarrow
import pyarrow.compute as pc

from kundenwert.features.contract import Column

_TRUE = ["true", "1", "yes", "t", "y"]
_FALSE = ["false", "0", "no", "f", "n"]


def arrow_text(values: pd.Series | pd.Index | list) -> pyarrow.Array | pyarrow.ChunkedArray:
    """Text values as an Arrow string array, missing values null (zero copy for pandas' Arrow-backed
    ``str``; object columns of Python strings are converted once)."""
    if isinstance(values, list):
        values = pd.Series(values, dtype=object)
    array = values.array
    if isinstance(array, pd.arrays.ArrowStringArray):
        out = pyarrow.array(array)
    else:
        out = pyarrow.array(np.asarray(array, dtype=object), type=pyarrow.string(), from_pandas=True)
    return out.cast(pyarrow.string()) if pyarrow.types.is_large_string(out.type) else out


def isin(s: pd.Series, values: pd.Index | pd.Series | list) -> pd.Series:
    """``s.isin(values)`` for text, through pyarrow (pandas' arrow-string isin builds Python lists)."""
    found = pc.is_in(arrow_text(s), value_set=arrow_text(values))
    return pd.Series(found.to_numpy(zero_copy_only=False), index=s.index)


def index_in(keys: pd.Series, values: pd.Index) -> np.ndarray:
    """Position of each text key in ``values`` (unique), -1 where it is not there."""
    pos = pc.index_in(arrow_text(keys), value_set=arrow_text(values))
    return pc.fill_null(pos, -1).to_numpy(zero_copy_only=False).astype(np.intp)


def duplicated(s: pd.Series) -> np.ndarray:
    """``s.duplicated(keep=False)``. Keys usually come sorted: values in strictly increasing order
    (one comparison pass in Arrow) or as many distinct values as rows (a hash pass) are unique,
    and only a column with duplicates pays for pandas' factorisation."""
    if s.dtype != object or isinstance(s.array, pd.arrays.ArrowStringArray):
        try:
            arr = pyarrow.array(s.array)
            if arr.null_count == 0 and (
                len(arr) < 2
                or pc.all(pc.greater(arr[1:], arr[:-1])).as_py()
                or len(pc.unique(arr)) == len(arr)
            ):
                return np.zeros(len(s), dtype=bool)
        except (pyarrow.ArrowException, TypeError):
            pass
    return s.duplicated(keep=False).to_numpy(dtype=bool)


def text_length_at_most(s: pd.Series, limit: int) -> pd.Series:
    """Whether each text value is at most ``limit`` characters (missing values pass)."""
    ok = pc.fill_null(pc.less_equal(pc.utf8_length(arrow_text(s)), limit), True)
    return pd.Series(ok.to_numpy(zero_copy_only=False), index=s.index)


def _empty(col: pyarrow.ChunkedArray) -> np.ndarray:
    """True where a text value is empty or missing (Parquet nulls count as empty cells)."""
    return pc.fill_null(pc.equal(col, ""), True).to_numpy(zero_copy_only=False)


def _is_text(t: pyarrow.DataType) -> bool:
    return pyarrow.types.is_string(t) or pyarrow.types.is_large_string(t)


def to_text(col: pyarrow.ChunkedArray) -> pd.Series:
    """Text column with empty strings as missing."""
    col = col.cast(pyarrow.string()) if pyarrow.types.is_large_string(col.type) else col
    col = pc.if_else(pc.equal(col, ""), pyarrow.scalar(None, pyarrow.string()), col)
    return col.to_pandas(types_mapper={pyarrow.string(): pd.StringDtype("pyarrow")}.get).astype("str")


def number_from_text(col: pyarrow.ChunkedArray) -> tuple[pd.Series, np.ndarray]:
    stripped = pc.utf8_trim_whitespace(col)
    empty = _empty(stripped)
    try:
        values = pc.cast(pc.if_else(pc.equal(stripped, ""), None, stripped), pyarrow.float64())
        out = values.to_numpy(zero_copy_only=False).astype("float64")
    except pyarrow.ArrowInvalid:
        out = pd.to_numeric(stripped.to_pandas(), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = ~empty & ~np.isfinite(out)
    out = np.where(bad, np.nan, out)
    return pd.Series(out, dtype="float64"), bad


def parse_column(col: pyarrow.ChunkedArray, kind: str) -> tuple[pd.Series, np.ndarray, str]:
    """Parse one raw column into its contract type.

    Returns the typed series, a mask of values that could not be read, and the rule they broke.
    """
    t = col.type
    n = len(col)
    no_bad = np.zeros(n, dtype=bool)
    if kind in ("id", "text"):
        if _is_text(t):
            return to_text(col), no_bad, ""
        if pyarrow.types.is_integer(t):  # Parquet integer ids: kept as their decimal text
            return to_text(pc.cast(col, pyarrow.string())), no_bad, ""
        return pd.Series([None] * n, dtype="str"), np.ones(n, bool), f"must be text, the file stores {t}"
    if kind == "timestamp":
        if pyarrow.types.is_timestamp(t) or pyarrow.types.is_date(t):
            s = pd.Series(col.to_pandas())
            s = pd.to_datetime(s)
            s = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
            return s.astype("datetime64[us, UTC]"), no_bad, ""
        if not _is_text(t):
            return _empty_ts(n), np.ones(n, bool), f"must be an ISO 8601 timestamp, the file stores {t}"
        raw = pc.utf8_trim_whitespace(col)
        empty = _empty(raw)
        parsed = _plain_instants(raw)
        if parsed is None:
            parsed = pd.to_datetime(raw.to_pandas(), format="ISO8601", utc=True, errors="coerce")
            parsed = parsed.astype("datetime64[us, UTC]")
        bad = ~empty & parsed.isna().to_numpy()
        return parsed, bad, "must be an ISO 8601 timestamp such as 2025-03-01 or 2025-03-01T14:05:00"
    if kind in ("number", "int"):
        if pyarrow.types.is_integer(t) or pyarrow.types.is_floating(t) or pyarrow.types.is_decimal(t):
            values = pd.Series(
                pc.cast(col, pyarrow.float64()).to_numpy(zero_copy_only=False), dtype="float64"
            )
            bad = values.notna().to_numpy() & ~np.isfinite(values.to_numpy())
            rule = "must be a finite number"
        elif _is_text(t):
            values, bad = number_from_text(col)
            rule = "must be a decimal number with '.' as decimal separator (e.g. 19.99)"
        else:
            return (
                pd.Series(np.nan, index=range(n)),
                np.ones(n, bool),
                f"must be a number, the file stores {t}",
            )
        if kind == "int":
            v = values.to_numpy()
            frac = np.isfinite(v) & (np.floor(v) != v)
            bad = bad | frac
            values = pd.Series(np.where(frac, np.nan, v)).astype("Int64")
            rule = "must be a whole number"
        return values, bad, rule
    if kind == "bool":
        if pyarrow.types.is_boolean(t):
            return pd.Series(col.to_pandas(), dtype="boolean"), no_bad, ""
        if not _is_text(t):
            return (
                pd.Series([pd.NA] * n, dtype="boolean"),
                np.ones(n, bool),
                f"must be true or false, the file stores {t}",
            )
        low = pc.utf8_lower(pc.utf8_trim_whitespace(col))
        is_true = pc.fill_null(pc.is_in(low, value_set=pyarrow.array(_TRUE)), False).to_numpy(
            zero_copy_only=False
        )
        is_false = pc.fill_null(pc.is_in(low, value_set=pyarrow.array(_FALSE)), False).to_numpy(
            zero_copy_only=False
        )
        empty = _empty(low)
        bad = ~(is_true | is_false | empty)
        out = pd.array(np.where(is_true, True, False), dtype="boolean")
        out[~(is_true | is_false)] = pd.NA
        return pd.Series(out), bad, "must be true or false (also accepted: 1/0, yes/no)"
    raise ValueError(f"unknown column kind {kind!r}")


# Dates and zone-less times to the microsecond: what CRM exports write. Arrow parses these in C;
# anything else (zones, other spellings, a broken value) takes pandas' ISO 8601 parser.
_PLAIN_INSTANT = (
    r"^(\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r"([T ]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?)?)?$"
)


def _plain_instants(raw: pyarrow.ChunkedArray) -> pd.Series | None:
    """UTC instants of a text column whose every value is a plain ISO date or time (empty: NaT),
    parsed by Arrow; None when any value is not of that form or not a valid date (pandas decides)."""
    if len(raw) == 0 or not pc.all(pc.match_substring_regex(raw, _PLAIN_INSTANT)).as_py():
        return None
    try:
        blank = pc.equal(raw, "")
        values = pc.cast(pc.if_else(blank, pyarrow.scalar(None, raw.type), raw), pyarrow.timestamp("us"))
    except pyarrow.ArrowInvalid:  # e.g. 2023-02-30: pandas' parser marks the cell
        return None
    out = pd.Series(values.to_numpy(zero_copy_only=False))
    return out.dt.tz_localize("UTC").astype("datetime64[us, UTC]")


def _empty_ts(n: int) -> pd.Series:
    return pd.Series(pd.NaT, index=range(n), dtype="datetime64[us, UTC]")


def missing_column(col: Column, n: int, default: object = None) -> pd.Series:
    """A column of ``n`` missing values (or ``default``) in the contract type of ``col``."""
    if col.kind == "timestamp":
        return _empty_ts(n)
    if col.kind in ("number",):
        return pd.Series(np.full(n, np.nan if default is None else default, dtype="float64"))
    if col.kind == "int":
        return pd.Series([pd.NA] * n, dtype="Int64")
    if col.kind == "bool":
        return pd.Series([pd.NA] * n, dtype="boolean")
    return pd.Series([None] * n, dtype="str")


def as_text(col: pyarrow.ChunkedArray) -> pyarrow.ChunkedArray:
    if _is_text(col.type):
        return col
    return pc.cast(col, pyarrow.string())
