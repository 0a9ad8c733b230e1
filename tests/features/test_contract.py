from __future__ import annotations

import numpy as np
import pandas as pd

from kundenwert.features.contract import AGE_GROUPS, age_group


def test_age_group_bands() -> None:
    years = pd.Series([2001, 2000, 1991, 1990, 1961, 1960, np.nan])
    got = list(age_group(years, "2025-06-01"))
    assert got == ["<25", "25-34", "25-34", "35-44", "55-64", "65+", "unknown"]
    assert list(age_group(years, "2025-06-01").cat.categories) == list(AGE_GROUPS)
