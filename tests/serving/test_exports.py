"""CSV exports are safe to open in a spreadsheet (OWASP CSV injection)."""

from __future__ import annotations

import io

import pandas as pd

from kundenwert.serving.exports import FORMULA_STARTS, defused, safe_csv


def test_text_cells_a_spreadsheet_would_run_are_escaped_and_numbers_stay_numbers() -> None:
    risky = ['=HYPERLINK("http://x")', "+1+2", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"]
    frame = pd.DataFrame(
        {
            "customer_id": [*risky, "00042", None],
            "score": [-0.05, 1.0, -2.5, 0.0, 3.0, 4.0, -1.0, 2.0],
            "kept": [True, False, True, False, True, False, True, False],
        }
    )
    text = safe_csv(frame)
    back = pd.read_csv(io.StringIO(text), dtype={"customer_id": str}, keep_default_na=False)
    assert back["customer_id"].tolist()[:6] == ["'" + v for v in risky]
    assert back["customer_id"].tolist()[6:] == ["00042", ""]
    assert not any(cell.startswith(FORMULA_STARTS) for cell in back["customer_id"])
    assert back["score"].tolist() == frame["score"].tolist()  # negative numbers are numbers, untouched
    assert back["kept"].tolist() == frame["kept"].tolist()
    assert frame["customer_id"].iloc[0] == risky[0]  # the caller's frame is left as it was


def test_defused_leaves_safe_values_alone() -> None:
    assert (
        defused("=1") == "'=1" and defused("a=1") == "a=1" and defused(-1.5) == -1.5 and defused(None) is None
    )
