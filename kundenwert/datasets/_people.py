"""Step 1 of the sample world: customers, their attributes and their category shares."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from kundenwert.datasets import design as D
from kundenwert.datasets._common import _choice, _Clock
from kundenwert.datasets.truth import age_group_index

REGIONS = (
    # region, share, postal code prefixes (two digits)
    ("Sachsen", 0.05, ("01", "02", "04", "08", "09")),
    ("Berlin", 0.045, ("10", "12", "13")),
    ("Brandenburg", 0.03, ("14", "15", "16")),
    ("Mecklenburg-Vorpommern", 0.02, ("17", "18", "19")),
    ("Hamburg", 0.022, ("20", "21", "22")),
    ("Schleswig-Holstein", 0.035, ("23", "24", "25")),
    ("Niedersachsen", 0.096, ("26", "27", "29", "30", "31", "37", "38", "49")),
    ("Bremen", 0.008, ("28",)),
    (
        "Nordrhein-Westfalen",
        0.215,
        (
            "32",
            "33",
            "40",
            "41",
            "42",
            "44",
            "45",
            "46",
            "47",
            "48",
            "50",
            "51",
            "52",
            "53",
            "57",
            "58",
            "59",
        ),
    ),
    ("Hessen", 0.076, ("34", "35", "36", "60", "61", "63", "64", "65")),
    ("Thueringen", 0.025, ("07", "98", "99")),
    ("Sachsen-Anhalt", 0.026, ("06", "39")),
    ("Rheinland-Pfalz", 0.049, ("54", "55", "56", "67")),
    ("Saarland", 0.012, ("66",)),
    (
        "Baden-Wuerttemberg",
        0.134,
        ("68", "69", "70", "71", "72", "73", "74", "75", "76", "77", "78", "79", "88", "89"),
    ),
    (
        "Bayern",
        0.157,
        ("80", "81", "82", "83", "84", "85", "86", "87", "90", "91", "92", "93", "94", "95", "96", "97"),
    ),
)


@dataclass(frozen=True)
class People:
    """Per customer (arrays of length n): type, attributes, preferred channel and category shares
    ``pi`` (n x categories)."""

    ctype_i: np.ndarray
    ctype: np.ndarray
    consumer: np.ndarray
    created: np.ndarray
    birth_year: np.ndarray
    ag: np.ndarray
    gender: np.ndarray
    region: np.ndarray
    postal: np.ndarray
    household: np.ndarray
    income: np.ndarray
    life_i: np.ndarray
    lifestyle: np.ndarray
    price_sens: np.ndarray
    pref_i: np.ndarray
    preferred: np.ndarray
    company_size: np.ndarray
    pi: np.ndarray


def draw_people(rng: np.random.Generator, n: int, span: float, end_ts: pd.Timestamp) -> People:
    """Customers and attributes (story step 1) and their category shares (step 5)."""
    ctype_i = rng.choice(3, size=n, p=D.TYPE_SHARE)
    ctype = np.asarray(D.CUSTOMER_TYPES, dtype=object)[ctype_i]
    consumer = ctype_i == 0
    created = rng.uniform(0.0, span - 14.0, size=n)
    age_at_end = np.clip(np.round(rng.normal(46, 16, size=n)), 18, 90)
    birth_year = np.where(consumer, end_ts.year - age_at_end, np.nan)
    birth_year[consumer & (rng.random(n) < 0.03)] = np.nan
    ag = age_group_index(birth_year, end_ts.year)  # 0..6, 6 = unknown
    gender = np.where(consumer, _choice(rng, ("f", "m", "d", ""), (0.49, 0.48, 0.01, 0.02), n), "")
    reg_i = rng.choice(len(REGIONS), size=n, p=np.array([r[1] for r in REGIONS]) / sum(r[1] for r in REGIONS))
    region = np.asarray([r[0] for r in REGIONS], dtype=object)[reg_i]
    prefix_pick = rng.random(n)
    postal = np.empty(n, dtype=object)
    for k, (_, _, prefixes) in enumerate(REGIONS):
        m = reg_i == k
        pre = np.asarray(prefixes, dtype=object)[(prefix_pick[m] * len(prefixes)).astype(int)]
        digits = rng.integers(0, 1000, m.sum())
        if len(digits):  # a tiny world may have nobody in a region (zfill of nothing fails)
            postal[m] = pre + np.char.zfill(digits.astype(str), 3).astype(object)
    household = np.where(
        consumer, rng.choice(np.arange(1, 7), size=n, p=(0.38, 0.33, 0.12, 0.11, 0.04, 0.02)), np.nan
    )
    income = np.where(consumer, _choice(rng, D.INCOME_BANDS, D.INCOME_SHARE, n), "")
    life_p = np.tile(np.array([0.18, 0.17, 0.17, 0.14, 0.14, 0.20]), (n, 1))
    life_p[(ag == 1) | (ag == 2), 1] += 0.25  # families are more common at 25-44
    life_p /= life_p.sum(axis=1, keepdims=True)
    life_i = (rng.random(n)[:, None] > np.cumsum(life_p, axis=1)).sum(axis=1)
    lifestyle = np.where(consumer, np.asarray(D.LIFESTYLES, dtype=object)[life_i], "")
    price_sens = np.round(np.where(consumer, rng.beta(2, 2, n), rng.beta(2, 3, n)), 2)
    pref_p = np.array(
        [  # email, sms, phone, mail by age group
            [0.55, 0.35, 0.05, 0.05],
            [0.60, 0.25, 0.07, 0.08],
            [0.55, 0.15, 0.12, 0.18],
            [0.45, 0.10, 0.18, 0.27],
            [0.35, 0.05, 0.25, 0.35],
            [0.20, 0.03, 0.32, 0.45],
            [0.55, 0.05, 0.30, 0.10],
        ]
    )[ag]
    pref_i = (rng.random(n)[:, None] > np.cumsum(pref_p, axis=1)).sum(axis=1).clip(0, 3)
    preferred = np.asarray(D.CHANNELS, dtype=object)[pref_i]
    company_size = np.where(
        consumer, "", _choice(rng, ("1-9", "10-49", "50-249", "250+"), (0.5, 0.3, 0.15, 0.05), n)
    )

    # Category shares: softmax(age pattern + lifestyle pattern + individual taste).
    cat_logit = D.AGE_CATEGORY_LOGWEIGHT[ag].copy()
    cat_logit[consumer] += D.LIFESTYLE_CATEGORY_LOGWEIGHT[life_i[consumer]]
    cat_logit += rng.normal(0, D.CATEGORY_NOISE_SD, size=cat_logit.shape)
    pi = np.exp(cat_logit - cat_logit.max(axis=1, keepdims=True))
    pi /= pi.sum(axis=1, keepdims=True)
    return People(
        ctype_i=ctype_i,
        ctype=ctype,
        consumer=consumer,
        created=created,
        birth_year=birth_year,
        ag=ag,
        gender=gender,
        region=region,
        postal=postal,
        household=household,
        income=income,
        life_i=life_i,
        lifestyle=lifestyle,
        price_sens=price_sens,
        pref_i=pref_i,
        preferred=preferred,
        company_size=company_size,
        pi=pi,
    )


def _customer_ids(ctype_i: np.ndarray) -> np.ndarray:
    """Identifiers in three styles: numbers with leading zeros (consumers), 'B-...' and 'H-...'."""
    n = len(ctype_i)
    nums = pc.cast(pa.array(np.arange(1, n + 1)), pa.string())
    padded = pc.utf8_lpad(nums, 8, "0").to_numpy(zero_copy_only=False).astype(object)
    plain = nums.to_numpy(zero_copy_only=False).astype(object)
    out = padded.copy()
    out[ctype_i == 1] = "B-" + plain[ctype_i == 1]
    out[ctype_i == 2] = "H-" + plain[ctype_i == 2]
    return out


def customers_table(p: People, clock: _Clock, customer_ids: np.ndarray) -> pd.DataFrame:
    """The contract's ``customers`` table (custom attributes as extra columns)."""
    return pd.DataFrame(
        {
            "customer_id": customer_ids,
            "created_at": clock.ts(p.created),
            "customer_type": p.ctype,
            "birth_year": pd.array(p.birth_year, dtype="Int64"),
            "gender": p.gender,
            "postal_code": p.postal,
            "region": p.region,
            "household_size": pd.array(p.household, dtype="Int64"),
            "income_band": p.income,
            "lifestyle_segment": p.lifestyle,
            "price_sensitivity": p.price_sens,
            "preferred_channel": p.preferred,
            "company_size": p.company_size,
        }
    )
