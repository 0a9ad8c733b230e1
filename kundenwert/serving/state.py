"""What the service holds in memory, and the decisions it makes from it.

The precomputed scores of the current scoring run (``kundenwert score``) and the catalog are held
in memory; consent, contact pressure and ignored offers are read from the store for the customers
of each request, so a consent withdrawn a second ago counts. Every answer with suggestions is
recorded as a decision (``kw_decisions``) so that feedback can refer to it.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa

from kundenwert.features.store import Store
from kundenwert.serving.arbitration import EXPLAINED, Inputs, arbitrate
from kundenwert.serving.catalog import Catalog
from kundenwert.serving.live import consent_now, contact_pressure, ignored_offers
from kundenwert.serving.scores_store import read_scores
from kundenwert.serving.scoring import category_margins

_meta = sa.MetaData()
DECISIONS = sa.Table(
    "kw_decisions",
    _meta,
    sa.Column("decision_id", sa.String(32), primary_key=True),
    sa.Column("customer_id", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("score_run", sa.String(32), nullable=False),
    sa.Column("suggestions", sa.Text, nullable=False),  # JSON: [{action_id, channel, score, rank}]
)


class NotFound(LookupError):
    """A customer the store does not know."""


class ServingState:
    """Scores, catalog and the store; ``decide`` answers for one or many customers."""

    def __init__(self, store: Store, catalog: Catalog) -> None:
        self.store, self.catalog = store, catalog
        self._lock = threading.Lock()
        _meta.create_all(store.engine)
        self.load()

    def load(self) -> None:
        """Read the current scoring run; swapped in at once (requests see the old or the new)."""
        scores, propensity, run = read_scores(self.store.engine)
        margins = category_margins(self.store.read_table("purchases", ["amount", "margin", "category"]))
        self.catalog.check_names(sorted(margins))
        wide = propensity.unstack(["action_id", "channel"])
        wide.columns = wide.columns.set_names(["metric", "action_id", "channel"])
        with self._lock:
            self.scores, self.run, self.margins = scores, run, margins
            self._wide, self._wide_index = wide, set(wide.index)

    # ------------------------------------------------------------------ live state

    def _live(self, ids: list[str], now: pd.Timestamp):
        consents = self.store.read_for_customers("consents", ids)
        contacts = self.store.read_for_customers(
            "contacts",
            ids,
            ["customer_id", "contacted_at", "channel", "direction", "action_id", "is_control", "outcome"],
        )
        return consent_now(consents, now), contact_pressure(contacts, now), ignored_offers(contacts, now)

    def consent_of(self, ids: list[str], now: pd.Timestamp | None = None) -> pd.DataFrame:
        """Permitted channels and objection of ``ids`` now (customers without records: missing)."""
        now = now or pd.Timestamp.now(tz="UTC")
        return consent_now(self.store.read_for_customers("consents", ids), now)

    def known(self, ids: list[str]) -> set[str]:
        customers = self.store.read_for_customers("customers", ids, ["customer_id"])
        return set(customers["customer_id"].astype(str))

    def _propensity_of(self, ids: list[str]) -> pd.DataFrame:
        """The wide propensities (metric, action_id, channel) of ``ids`` (arbitration's wide form)."""
        have = [i for i in ids if i in self._wide_index]
        if not have:
            return self._wide.iloc[:0]
        return self._wide.loc[have]

    # ------------------------------------------------------------------ decisions

    def decide(
        self,
        ids: list[str],
        channels: list[str] | None = None,
        actions: list[str] | None = None,
        now: pd.Timestamp | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(candidates with the funnel, consent) for ``ids``; customers without scores (never
        scored, or objecting: never profiled) get candidates only from consent: none kept."""
        now = now or pd.Timestamp.now(tz="UTC")
        inputs = self.inputs_for(self.scores.reindex(pd.Index(ids, name="customer_id")), now)
        out = arbitrate(
            self.catalog, inputs, channels=channels, actions=actions, period=now.strftime("%Y-%m")
        )
        return out, inputs.consent

    def inputs_for(self, customers: pd.DataFrame, now: pd.Timestamp | None = None) -> Inputs:
        """Arbitration inputs for the customers (rows of ``scores``) with their live state now."""
        now = now or pd.Timestamp.now(tz="UTC")
        ids = [str(i) for i in customers.index]
        consent, pressure, ignored = self._live(ids, now)
        return Inputs(
            customers=customers,
            consent=consent,
            pressure=pressure,
            ignored=ignored,
            propensity=self._propensity_of(ids),
            margins=self.margins,
        )

    def record_many(self, kept: pd.DataFrame) -> dict[str, str]:
        """One decision per customer of a batch, written in one transaction."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        rows, ids = [], {}
        for cid, part in kept.groupby("customer_id", sort=False):
            ids[str(cid)] = uuid.uuid4().hex
            suggestions = [
                {"action_id": a, "channel": c, "score": round(float(s), 6), "rank": int(k)}
                for a, c, s, k in zip(
                    part["action_id"], part["channel"], part["score"], part["rank"], strict=True
                )
            ]
            rows.append(
                {
                    "decision_id": ids[str(cid)],
                    "customer_id": str(cid),
                    "created_at": now,
                    "score_run": self.run["run_id"],
                    "suggestions": json.dumps(suggestions),
                }
            )
        if rows:
            with self.store.engine.begin() as conn:
                conn.execute(DECISIONS.insert(), rows)
        return ids

    REASONS_OF_KIND = {"retention": "churn", "win_back": "winback"}

    def reasons(self, customer_id: str, score: str) -> list[dict]:
        """The stored top SHAP reasons of one score (churn, winback, value) of a customer."""
        column = f"reasons_{score}"
        if customer_id not in self.scores.index or column not in self.scores.columns:
            return []
        text = self.scores.at[customer_id, column]
        return json.loads(text) if isinstance(text, str) else []

    def reasons_for(self, customer_id: str, kind: str) -> list[dict]:
        """The reasons behind an action of ``kind``: churn risk for retention, win-back chance for
        win-back, otherwise what drives the customer's value."""
        return self.reasons(customer_id, self.REASONS_OF_KIND.get(kind, "value"))

    def profile(self, customer_id: str) -> dict | None:
        """The scores of one customer (None when not scored)."""
        if customer_id not in self.scores.index:
            return None
        row = self.scores.loc[customer_id]
        out = {}
        for k, v in row.items():
            if str(k).startswith("reasons_"):
                continue
            v = v.item() if isinstance(v, np.generic) else v  # JSON-ready Python values
            out[k] = None if isinstance(v, float) and np.isnan(v) else v
        return out


def explain_reason(code: str) -> str:
    return EXPLAINED.get(code, code)
