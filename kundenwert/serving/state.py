"""What the service holds in memory, and the decisions it makes from it.

The precomputed scores of the current scoring run (``kundenwert score``) and the catalog are held
in memory, with everything about a decision that does not change between requests worked out once
per run (``Candidates``: eligibility, propensity, value, score). Consent, contact pressure and
ignored offers are read from the store at the moment of each request, so a consent withdrawn a
second ago counts: for one customer through ``LiveReader`` (two indexed reads, plain Python), for
a batch through pandas. Every answer with suggestions is recorded as a decision (``kw_decisions``)
so that feedback can refer to it.
"""

from __future__ import annotations

import gc
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from kundenwert.features.store import Store
from kundenwert.serving.arbitration import EXPLAINED, Candidates, Decisions, Live, decide, decide_one
from kundenwert.serving.catalog import Catalog
from kundenwert.serving.decisions import DecisionLog
from kundenwert.serving.live import (
    LiveReader,
    consent_now,
    contact_pressure,
    ignored_offers,
    live_of_rows,
)
from kundenwert.serving.scores_store import read_scores
from kundenwert.serving.scoring import category_margins


class NotFound(LookupError):
    """A customer the store does not know."""


@dataclass(frozen=True)
class Run:
    """One scoring run as served: swapped as a whole, so a request sees the old or the new."""

    scores: pd.DataFrame
    info: dict
    margins: dict[str, float]
    candidates: Candidates
    reason_texts: dict[str, np.ndarray]  # score -> JSON text per customer, in candidates' order


class ServingState:
    """Scores, catalog and the store; ``decide`` answers for many customers, ``decide_one`` for one."""

    def __init__(self, store: Store, catalog: Catalog) -> None:
        self.store, self.catalog = store, catalog
        self.reader = LiveReader(store.engine)
        self.decisions = DecisionLog(store.engine)
        self.load()

    def load(self) -> None:
        """Read the current scoring run and work out its candidates; swapped in at once."""
        scores, propensity, info = read_scores(self.store.engine)
        margins = category_margins(self.store.read_table("purchases", ["amount", "margin", "category"]))
        self.catalog.check_names(sorted(margins))
        wide = propensity.unstack(["action_id", "channel"])
        candidates = Candidates(self.catalog, scores, wide, margins)
        candidates.after(pd.Timestamp.now(tz="UTC").strftime("%Y-%m"))  # not in a request
        texts = {
            c.removeprefix("reasons_"): scores[c].to_numpy(dtype=object)
            for c in scores.columns
            if str(c).startswith("reasons_")
        }
        self.current = Run(scores, info, margins, candidates, texts)
        settle_heap()

    def close(self) -> None:
        """Commit the queued decisions and stop the writer."""
        self.decisions.close()

    @property
    def scores(self) -> pd.DataFrame:
        return self.current.scores

    @property
    def run(self) -> dict:
        return self.current.info

    @property
    def margins(self) -> dict[str, float]:
        return self.current.margins

    # ------------------------------------------------------------------ live state

    def consent_of(self, ids: list[str], now: pd.Timestamp | None = None) -> pd.DataFrame:
        """Permitted channels and objection of ``ids`` now (customers without records: missing)."""
        now = now or pd.Timestamp.now(tz="UTC")
        return consent_now(self.store.read_for_customers("consents", ids), now)

    def known(self, ids: list[str]) -> set[str]:
        found = {i for i in ids if i in self.current.scores.index}
        rest = [i for i in ids if i not in found]
        if rest:
            customers = self.store.read_for_customers("customers", rest, ["customer_id"])
            found |= set(customers["customer_id"].astype(str))
        return found

    def _live_frames(self, cands: Candidates, ids: list[str], now: pd.Timestamp) -> Live:
        consents = self.store.read_for_customers("consents", ids)
        contacts = self.store.read_for_customers(
            "contacts",
            ids,
            ["customer_id", "contacted_at", "channel", "direction", "action_id", "is_control", "outcome"],
        )
        return Live.from_frames(
            cands,
            pd.Index(ids),
            consent_now(consents, now),
            contact_pressure(contacts, now),
            ignored_offers(contacts, now),
        )

    # ------------------------------------------------------------------ decisions

    def decide(
        self,
        ids: list[str],
        channels: list[str] | None = None,
        actions: list[str] | None = None,
        now: pd.Timestamp | None = None,
    ) -> Decisions:
        """The funnel for ``ids`` with their live state now; customers without scores (never
        scored, or objecting: never profiled) keep no suggestion."""
        now = now or pd.Timestamp.now(tz="UTC")
        cands = self.current.candidates
        live = self._live_frames(cands, ids, now)
        return decide(cands, ids, live, period=now.strftime("%Y-%m"), channels=channels, actions=actions)

    def decide_one(
        self, customer_id: str, channels: list[str] | None = None, now: pd.Timestamp | None = None
    ) -> Decisions:
        """The funnel for one customer: the same rules as ``decide`` on their rows, read fast."""
        now = now or pd.Timestamp.now(tz="UTC")
        cands = self.current.candidates
        consents, contacts = self.reader.rows(customer_id)
        live = live_of_rows(consents, contacts, now.value // 1000, cands.channels, cands.action_id_list)
        return decide_one(cands, customer_id, live, period=now.strftime("%Y-%m"), channels=channels)

    def record(self, suggestions: dict[str, list[dict]]) -> dict[str, str]:
        """One decision per customer with suggestions, queued for the decision log (``flush`` it
        before reading ``kw_decisions``)."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        run_id = self.run["run_id"]
        rows = [
            {
                "decision_id": uuid.uuid4().hex,
                "customer_id": cid,
                "created_at": now,
                "score_run": run_id,
                "suggestions": json.dumps(items),
            }
            for cid, items in suggestions.items()
            if items
        ]
        self.decisions.add(rows)
        return {r["customer_id"]: r["decision_id"] for r in rows}

    REASONS_OF_KIND = {"retention": "churn", "win_back": "winback"}

    def reasons(self, customer_id: str, score: str) -> list[dict]:
        """The stored top SHAP reasons of one score (churn, winback, value) of a customer."""
        run = self.current
        texts = run.reason_texts.get(score)
        row = run.candidates.position(customer_id)
        if texts is None or row is None:
            return []
        text = texts[row]
        return json.loads(text) if isinstance(text, str) else []

    def reasons_for(self, customer_id: str, kind: str) -> list[dict]:
        """The reasons behind an action of ``kind``: churn risk for retention, win-back chance for
        win-back, otherwise what drives the customer's value."""
        return self.reasons(customer_id, self.REASONS_OF_KIND.get(kind, "value"))

    def profile(self, customer_id: str) -> dict | None:
        """The scores of one customer (None when not scored)."""
        scores = self.current.scores
        if customer_id not in scores.index:
            return None
        row = scores.loc[customer_id]
        out = {}
        for k, v in row.items():
            if str(k).startswith("reasons_"):
                continue
            v = v.item() if isinstance(v, np.generic) else v  # JSON-ready Python values
            out[k] = None if isinstance(v, float) and np.isnan(v) else v
        return out


def explain_reason(code: str) -> str:
    return EXPLAINED.get(code, code)


def settle_heap() -> None:
    """Collect once, then leave everything alive now (the run's frames and arrays: hundreds of
    thousands of objects) out of the cyclic garbage collector's scans. Without this a full
    collection walks the whole run every few thousand requests: pauses of 40-130 ms measured
    under load. Objects are still freed by reference counting when a later run replaces them."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
