"""The CRM data contract (``shared/crm-schema.md``) as data: tables, columns, types and rules.

Everything that reads, validates or stores CRM tables takes its column names and rules from here,
so the contract is written down once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

Kind = Literal["id", "text", "timestamp", "number", "int", "bool"]

MAX_ID_LENGTH = 200
MAX_TEXT_LENGTH = 1000

CUSTOMER_TYPES = ("consumer", "business", "retailer")
DIRECTIONS = ("outbound", "inbound")
OUTCOMES = ("none", "opened", "clicked", "responded", "converted", "unsubscribed", "bounced")
OFFER_STATUSES = ("open", "won", "lost")
KNOWN_CHANNELS = ("email", "sms", "phone", "mail", "field_sales", "web", "app", "store")
MARKETING_CHANNELS = ("email", "sms", "phone", "mail")
ALL_CHANNELS = "*"  # consent channel meaning "all direct marketing and profiling" (GDPR Art. 21)

AGE_GROUPS = ("<25", "25-34", "35-44", "45-54", "55-64", "65+", "unknown")
_AGE_EDGES = (25, 35, 45, 55, 65)


@dataclass(frozen=True)
class Column:
    """One column of a contract table.

    ``required``: the column must be present in the file. ``nullable``: a value may be empty.
    ``low``/``high`` bound numbers (``low_open``: strictly greater than ``low``).
    """

    name: str
    kind: Kind
    required: bool = True
    nullable: bool = False
    allowed: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    references: str | None = None  # "customers" or "products"
    not_in_future: bool = False
    default: object = None


@dataclass(frozen=True)
class Table:
    """One contract table; ``key`` identifies a row (used for uniqueness, append and upsert)."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    required: bool = False

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


CUSTOMERS = Table(
    "customers",
    (
        Column("customer_id", "id"),
        Column("created_at", "timestamp", not_in_future=True),
        Column("customer_type", "text", allowed=CUSTOMER_TYPES),
        Column("birth_year", "int", required=False, nullable=True, low=1900),  # high: this year
        Column("gender", "text", required=False, nullable=True),
        Column("postal_code", "text", required=False, nullable=True),
        Column("region", "text", required=False, nullable=True),
    ),
    key=("customer_id",),
    required=True,
)

PRODUCTS = Table(
    "products",
    (
        Column("product_id", "id"),
        Column("category", "text"),
        Column("name", "text", required=False, nullable=True),
        Column("price", "number", required=False, nullable=True, low=0),
    ),
    key=("product_id",),
)

PURCHASES = Table(
    "purchases",
    (
        Column("purchase_id", "id"),
        Column("customer_id", "id", references="customers"),
        Column("purchased_at", "timestamp", not_in_future=True),
        Column("product_id", "id", required=False, nullable=True, references="products"),
        # May be empty when the product is known: then it is taken from products.
        Column("category", "text", required=False, nullable=True),
        Column("quantity", "number", required=False, nullable=True, low=0, low_open=True, default=1.0),
        Column("amount", "number"),
        Column("margin", "number", required=False, nullable=True),
        Column("discount", "number", required=False, nullable=True, low=0),
        Column("sales_channel", "text", required=False, nullable=True),
    ),
    key=("purchase_id",),
    # Optional: a CRM whose products are sold in another system (a bank's campaigns) still has
    # customers, contacts, consents and complaints to learn from; purchase features are then empty.
    required=False,
)

CONTACTS = Table(
    "contacts",
    (
        Column("contact_id", "id"),
        Column("customer_id", "id", references="customers"),
        Column("contacted_at", "timestamp"),
        Column("channel", "text"),
        Column("direction", "text", allowed=DIRECTIONS),
        Column("campaign_id", "id", required=False, nullable=True),
        Column("action_id", "id", required=False, nullable=True),
        Column("is_control", "bool", required=False, nullable=True),
        Column("outcome", "text", required=False, nullable=True, allowed=OUTCOMES),
        Column("topic", "text", required=False, nullable=True),
    ),
    key=("contact_id",),
)

CONSENTS = Table(
    "consents",
    (
        Column("customer_id", "id", references="customers"),
        Column("channel", "text"),
        Column("granted", "bool"),
        Column("recorded_at", "timestamp"),
        Column("double_opt_in", "bool", required=False, nullable=True),
        Column("source", "text", required=False, nullable=True),
    ),
    key=("customer_id", "channel", "recorded_at"),
)

COMPLAINTS = Table(
    "complaints",
    (
        Column("complaint_id", "id"),
        Column("customer_id", "id", references="customers"),
        Column("opened_at", "timestamp"),
        Column("closed_at", "timestamp", required=False, nullable=True),
        Column("category", "text", required=False, nullable=True),
        Column("severity", "int", required=False, nullable=True, low=1, high=5),
    ),
    key=("complaint_id",),
)

OFFERS = Table(
    "offers",
    (
        Column("offer_id", "id"),
        Column("customer_id", "id", references="customers"),
        Column("created_at", "timestamp"),
        Column("amount", "number"),
        Column("status", "text", allowed=OFFER_STATUSES),
        Column("closed_at", "timestamp", required=False, nullable=True),
        Column("lost_reason", "text", required=False, nullable=True),
    ),
    key=("offer_id",),
)

# Order matters: a table comes after every table it references.
TABLES: dict[str, Table] = {
    t.name: t for t in (CUSTOMERS, PRODUCTS, PURCHASES, CONTACTS, CONSENTS, COMPLAINTS, OFFERS)
}
TABLE_ORDER: tuple[str, ...] = tuple(TABLES)
# How an import meets what the store holds: add new rows only, add or update by key, or replace all.
IMPORT_MODES = ("append", "upsert", "replace")


def age_group(birth_year: pd.Series | np.ndarray, at: pd.Timestamp | str) -> pd.Series:
    """Age group at date ``at`` from the birth year (the contract's bands; ``unknown`` when missing).

    Age is ``at.year - birth_year``: with only a birth year (data minimisation) that is the age the
    customer reaches in that year.
    """
    year = pd.Timestamp(at).year
    by = pd.to_numeric(pd.Series(birth_year), errors="coerce").astype("float64")
    age = year - by.to_numpy()
    codes = np.searchsorted(np.asarray(_AGE_EDGES, dtype="float64"), age, side="right")
    codes = np.where(np.isnan(age), len(AGE_GROUPS) - 1, codes)
    index = birth_year.index if isinstance(birth_year, pd.Series) else None
    return pd.Series(
        pd.Categorical.from_codes(codes, categories=list(AGE_GROUPS)), index=index, name="age_group"
    )
