"""A first look at what the store holds: the numbers ``make run`` prints."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from kundenwert.features.consent import consent_state
from kundenwert.features.contract import AGE_GROUPS, CUSTOMER_TYPES, age_group
from kundenwert.features.ports import StoreReader


@dataclass
class StoreSummary:
    at: pd.Timestamp
    rows: dict[str, int]
    customers_by_type_and_age: pd.DataFrame  # customer_type x age group, counts
    revenue_by_year: pd.DataFrame  # year -> revenue (net), margin, purchases
    email_consent_share: float
    customers: int


def summarize(store: StoreReader, at: pd.Timestamp | str | None = None) -> StoreSummary:
    """Rows per table, customers by type and age group, revenue per year, email consent share at ``at``."""
    t = pd.Timestamp(at) if at is not None else pd.Timestamp.now(tz="UTC")
    t = t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
    rows = store.counts()
    cust = store.read_table("customers", ["customer_id", "customer_type", "birth_year"], attributes=False)
    groups = age_group(cust["birth_year"], t)
    by = pd.crosstab(
        pd.Categorical(cust["customer_type"], categories=list(CUSTOMER_TYPES)),
        pd.Categorical(groups, categories=list(AGE_GROUPS)),
        dropna=False,
    )
    by.index.name, by.columns.name = "customer_type", "age_group"
    purchases = store.read_table("purchases", ["purchased_at", "amount", "margin"])
    year = purchases["purchased_at"].dt.year
    revenue = (
        purchases.assign(year=year)
        .groupby("year")
        .agg(revenue=("amount", "sum"), margin=("margin", "sum"), purchase_rows=("amount", "size"))
    )
    consents = store.read_table("consents")
    state = consent_state(consents, t) if len(consents) else pd.DataFrame(columns=["email"])
    n = len(cust)
    email_share = float(state["email"].sum()) / n if n else 0.0
    return StoreSummary(t, rows, by, revenue, email_share, n)
