"""The feature catalogue: every snapshot column with its family, type and meaning in plain words.

Later parts turn model explanations into sentences through ``reason`` ("no purchase for 212 days").
Column names with a window, channel or category are matched by pattern, so the catalogue covers
whatever categories and channels a company has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class FeatureInfo:
    name: str
    family: str
    type: str  # number | category | flag
    meaning: str
    reason: str  # a sentence about one customer's value, "{v}" is the value, "{x}" the pattern's part


# (pattern, family, type, meaning, reason); first match wins. {x} is the first regex group.
_RULES: tuple[tuple[str, str, str, str, str], ...] = (
    (
        r"frequency",
        "btyd",
        "number",
        "repeat purchase periods before the cutoff (BTYD frequency)",
        "{v:.0f} repeat purchases",
    ),
    (
        r"recency",
        "btyd",
        "number",
        "time from first to last purchase (BTYD recency, in the snapshot's unit)",
        "bought over a span of {v:.0f} time units",
    ),
    (
        r"T",
        "btyd",
        "number",
        "time from first purchase to the end of observation (BTYD T)",
        "first purchase {v:.0f} time units ago",
    ),
    (
        r"monetary_value",
        "btyd",
        "number",
        "mean value of repeat purchase periods (BTYD monetary value)",
        "spends {v:.2f} per repeat purchase",
    ),
    (
        r"purchase_days_(\d+)d",
        "purchases",
        "number",
        "days with a purchase in the last {x} days",
        "bought on {v:.0f} days in the last {x} days",
    ),
    (
        r"revenue_(\d+)d",
        "purchases",
        "number",
        "net revenue in the last {x} days (returns deducted)",
        "revenue of {v:.2f} in the last {x} days",
    ),
    (
        r"margin_(\d+)d",
        "purchases",
        "number",
        "contribution margin in the last {x} days",
        "margin of {v:.2f} in the last {x} days",
    ),
    (
        r"revenue_trend_90_365",
        "purchases",
        "number",
        "last 90 days' revenue against the year's quarterly average",
        "revenue trend {v:+.2f}",
    ),
    (r"revenue_total", "purchases", "number", "net revenue before the cutoff", "lifetime revenue {v:.2f}"),
    (
        r"days_since_last_purchase",
        "purchases",
        "number",
        "days since the last purchase",
        "no purchase for {v:.0f} days",
    ),
    (
        r"days_since_first_purchase",
        "purchases",
        "number",
        "days since the first purchase",
        "customer for {v:.0f} days since the first purchase",
    ),
    (
        r"interpurchase_mean_days",
        "purchases",
        "number",
        "mean days between purchase days",
        "buys every {v:.0f} days on average",
    ),
    (
        r"interpurchase_std_days",
        "purchases",
        "number",
        "spread of the days between purchase days",
        "irregular buying (spread {v:.0f} days)",
    ),
    (r"returns_count", "purchases", "number", "returned lines", "{v:.0f} returns"),
    (r"returns_amount", "purchases", "number", "value of returned lines", "returned goods worth {v:.2f}"),
    (r"return_rate", "purchases", "number", "returned lines per bought line", "returns {v:.0%} of lines"),
    (r"discount_total", "purchases", "number", "discounts granted", "received {v:.2f} in discounts"),
    (
        r"discount_share",
        "purchases",
        "number",
        "discount as a share of the gross price",
        "buys at {v:.0%} discount",
    ),
    (
        r"sales_channels_used",
        "purchases",
        "number",
        "number of sales channels used",
        "buys through {v:.0f} channels",
    ),
    (r"share_web", "purchases", "number", "share of lines bought online", "{v:.0%} of purchases online"),
    (r"share_(.+)", "purchases", "number", "share of revenue in category {x}", "{v:.0%} of spending on {x}"),
    (
        r"contacts_(.+)_(\d+)d",
        "contacts",
        "number",
        "campaign contacts on {x} in the last {y} days",
        "{v:.0f} {x} contacts in the last {y} days",
    ),
    (
        r"response_rate_(.+)",
        "contacts",
        "number",
        "smoothed response rate to {x} contacts",
        "responds to {x} ({v:.0%})",
    ),
    (
        r"days_since_last_contact",
        "contacts",
        "number",
        "days since the last campaign contact",
        "last contacted {v:.0f} days ago",
    ),
    (
        r"days_since_last_response",
        "contacts",
        "number",
        "days since the last response to a campaign",
        "last responded {v:.0f} days ago",
    ),
    (
        r"ignored_in_a_row",
        "contacts",
        "number",
        "campaign contacts ignored since the last response",
        "ignored the last {v:.0f} offers",
    ),
    (r"unsubscribes", "contacts", "number", "unsubscribes from campaigns", "unsubscribed {v:.0f} times"),
    (
        r"inbound_contacts_365d",
        "contacts",
        "number",
        "contacts the customer started in the last year",
        "contacted us {v:.0f} times this year",
    ),
    (
        r"information_requests_365d",
        "contacts",
        "number",
        "information requests in the last year",
        "asked for information {v:.0f} times this year",
    ),
    (
        r"control_memberships",
        "contacts",
        "number",
        "times held out in a campaign's control group",
        "in {v:.0f} control groups",
    ),
    (r"open_complaints", "complaints", "number", "complaints open at the cutoff", "{v:.0f} open complaints"),
    (r"complaints_total", "complaints", "number", "complaints before the cutoff", "{v:.0f} complaints"),
    (
        r"complaints_365d",
        "complaints",
        "number",
        "complaints in the last year",
        "{v:.0f} complaints this year",
    ),
    (
        r"max_severity_365d",
        "complaints",
        "number",
        "highest complaint severity in the last year (1-5)",
        "complaint of severity {v:.0f}",
    ),
    (
        r"days_since_last_complaint",
        "complaints",
        "number",
        "days since the last complaint",
        "complained {v:.0f} days ago",
    ),
    (
        r"pending_offer_amount",
        "offers",
        "number",
        "value of offers open at the cutoff (pending revenue)",
        "{v:.2f} in open offers",
    ),
    (r"open_offers", "offers", "number", "offers open at the cutoff", "{v:.0f} open offers"),
    (r"offers_won", "offers", "number", "offers won before the cutoff", "won {v:.0f} offers"),
    (r"offers_lost", "offers", "number", "offers lost before the cutoff", "lost {v:.0f} offers"),
    (
        r"last_lost_reason",
        "offers",
        "category",
        "reason the last offer was lost",
        "lost the last offer on {v}",
    ),
    (
        r"consent_(.+)",
        "consent",
        "flag",
        "valid marketing consent on {x} at the cutoff",
        "may be contacted by {x}",
    ),
    (
        r"objection",
        "consent",
        "flag",
        "objection to all direct marketing (GDPR Art. 21)",
        "objects to marketing",
    ),
    (r"attr_(.+)", "attribute", "value", "custom attribute '{x}' from the CRM", "{x} {v}"),
    (r"customer_type", "profile", "category", "consumer, business or retailer", "a {v} customer"),
    (r"tenure_days", "profile", "number", "days since registration", "registered {v:.0f} days ago"),
    (r"age", "profile", "number", "age reached this year (from birth year)", "aged {v:.0f}"),
    (
        r"age_group",
        "profile",
        "category",
        "age group at the cutoff (<25 ... 65+, unknown)",
        "in age group {v}",
    ),
    (r"region", "profile", "category", "region the customer lives in", "lives in {v}"),
)


def describe(name: str) -> FeatureInfo:
    """Catalogue entry of one snapshot column (custom attributes carry the prefix ``attr_``)."""
    for pattern, family, kind, meaning, reason in _RULES:
        m = re.fullmatch(pattern, name)
        if m:
            groups = m.groups()
            x = groups[0] if groups else ""
            y = groups[1] if len(groups) > 1 else ""
            return FeatureInfo(
                name,
                family,
                kind,
                meaning.replace("{x}", x).replace("{y}", y),
                reason.replace("{x}", x).replace("{y}", y),
            )
    return FeatureInfo(name, "unknown", "value", f"column '{name}'", f"{name} {{v}}")


def catalogue(snapshot: pd.DataFrame) -> pd.DataFrame:
    """One row per column of ``snapshot``: name, family, type, meaning."""
    rows = []
    for c in snapshot.columns:
        info = describe(c)
        if info.type == "value":  # custom attributes: numbers as numbers, text as categories
            kind = "number" if pd.api.types.is_numeric_dtype(snapshot[c].dtype) else "category"
            info = FeatureInfo(info.name, info.family, kind, info.meaning, info.reason)
        rows.append(info)
    return pd.DataFrame(
        [{"name": r.name, "family": r.family, "type": r.type, "meaning": r.meaning} for r in rows]
    )


def reason(name: str, value: object) -> str:
    """A plain sentence about one customer's value of a feature."""
    info = describe(name)
    try:
        return info.reason.format(v=value)
    except (ValueError, TypeError):
        return (
            info.reason.replace("{v:.0f}", str(value))
            .replace("{v:.2f}", str(value))
            .replace("{v:.0%}", str(value))
            .format(v=value)
        )
