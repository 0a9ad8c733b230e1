"""Files that leave the service: safe to open in a spreadsheet.

A text cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read as a
formula by spreadsheet programs (OWASP "CSV injection"); such cells are written with a leading
``'``, which the programs show as text. Numbers stay numbers: pandas writes them as plain digits,
which no spreadsheet evaluates.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def defused(value: object) -> object:
    """``value`` with a leading ``'`` when it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_csv(frame: pd.DataFrame) -> str:
    """``frame`` as CSV text (RFC 4180) with every text cell defused (numbers, booleans and empty
    cells as they are)."""
    out = frame.copy(deep=False)
    for c in out.columns:
        s = out[c]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            continue
        values = s.to_numpy(dtype=object)
        text = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))
        if text.any():
            risky = np.zeros(len(values), dtype=bool)
            risky[text] = pd.Series(values[text], dtype="str").str.startswith(FORMULA_STARTS).to_numpy()
            if risky.any():
                values = values.copy()
                values[risky] = ["'" + v for v in values[risky]]
                out[c] = values
    buf = io.StringIO()
    # CRLF line ends (RFC 4180): the csv writer then quotes a cell holding a lone CR too (with
    # "\n" as the line end it did not, and the CR split the row for every reader)
    out.to_csv(buf, index=False, lineterminator="\r\n")
    return buf.getvalue()
