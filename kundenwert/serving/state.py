"""What the service holds in memory, and the decisions it makes from it.

The precomputed scores of the current scoring run (``kundenwert score``) and the catalog are held
in memory, with everything about a decision that does not change between requests worked out once
per run (``Candidates``: eligibility, propensity, value, score). Consent, contact pressure and
ignored offers are as the store holds them at the moment of each request, so a consent withdrawn
a second ago counts: for one customer from ``LiveCache`` (rows held in memory, dropped when the
store's change log names the customer; plain Python), for a batch read through pandas. Every
answer with suggestions is recorded as a decision (``kw_decisions``) so that feedback can refer
to it.
"""

from __future__ import annotations

import gc
import json
import os
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa

from kundenwert.db.store import Store
from kundenwert.models.specs import stored_scores
from kundenwert.serving.arbitration import Candidates, Decisions, Live, decide, decide_one
from kundenwert.serving.catalog import Catalog
from kundenwert.serving.decisions import DecisionLog
from kundenwert.serving.kinds import ACTION_KINDS
from kundenwert.serving.live import (
    LiveCache,
    LiveReader,
    Prepared,
    consent_now,
    contact_pressure,
    ignored_offers,
    live_of_prepared,
)
from kundenwert.serving.rules import explanation
from kundenwert.serving.scores_store import read_scores
from kundenwert.serving.scoring import category_margins, missing_models, score_customers


@dataclass(frozen=True)
class Block:
    """Scored customers with their candidates: the whole run, or a few scored online."""

    scores: pd.DataFrame
    candidates: Candidates
    reason_texts: dict[str, np.ndarray]  # score -> JSON text per customer, in candidates' order

    @classmethod
    def build(
        cls,
        catalog: Catalog,
        scores: pd.DataFrame,
        propensity: pd.DataFrame,
        margins,
        unavailable: dict[str, str] | None = None,
    ) -> Block:
        candidates = Candidates(catalog, scores, propensity, margins, unavailable=unavailable)
        candidates.after(pd.Timestamp.now(tz="UTC").strftime("%Y-%m"))  # not in a request
        texts = {
            c.removeprefix("reasons_"): scores[c].to_numpy(dtype=object)
            for c in scores.columns
            if str(c).startswith("reasons_")
        }
        return cls(scores, candidates, texts)


@dataclass(frozen=True)
class Run:
    """One scoring run as served, with the models that made it: swapped as a whole, so a
    request sees the old or the new."""

    info: dict
    margins: dict[str, float]
    main: Block
    models: dict[str, object]
    spec: object  # SnapshotSpec of the store: the columns the models were trained on
    online: dict = field(default_factory=dict)  # customer -> (time scored, Block or None)
    # the catalog actions this run cannot serve, and why (a model it has none of)
    unavailable: dict[str, str] = field(default_factory=dict)
    # the run's customers whose rows left its table since it was loaded (erased: a customer
    # imported again under the same id is someone new, scored online), and whether that must be
    # read again (the change log named anyone: a bulk write or an erasure)
    held: dict = field(default_factory=lambda: {"stale": False, "lost": frozenset()})

    def holds(self, customer_id: str) -> bool:
        """The run's scores are this customer's (``lost`` as last read)."""
        return self.main.candidates.position(customer_id) is not None and customer_id not in self.held["lost"]

    @property
    def cutoff(self) -> pd.Timestamp:
        return pd.Timestamp(self.info["cutoff"])

    @property
    def missing_models(self) -> list[str]:
        """The registered models the run had no champion of (their scores are absent)."""
        return missing_models(self.info["models"])


@dataclass(frozen=True)
class Standing:
    """Customers as the store holds them at one moment: who ``exists``, who is ``objecting``
    (GDPR Art. 21: no profiling, no direct marketing) and the consent per channel (``consent_now``;
    customers without records are missing)."""

    exists: set[str]
    objecting: set[str]
    consent: pd.DataFrame

    def permitted(self, channel: str) -> set[str]:
        """The customers who may be contacted on ``channel`` now."""
        c = self.consent
        if channel not in c.columns:
            return set()
        return set(c.index[c[channel].to_numpy(dtype=bool)].astype(str))


NO_REASONS = orjson.Fragment(b"[]")
ONLINE_TTL = 600.0  # seconds an online score is reused before it is computed again
ONLINE_KEPT = 10_000


def decides_on_loop(setting: str, dialect: str) -> bool:
    """Whether next-best-action requests read the store on the event loop (``decide_on_loop``
    setting): ``auto`` does for SQLite, whose WAL readers never wait, not for a server that may hang."""
    return setting == "always" or (setting == "auto" and dialect == "sqlite")


class ServingState:
    """Scores, models, catalog and the store; ``decide`` answers for many customers,
    ``decide_one`` for one. Customers the current run does not hold (registered since) are
    scored online with the run's own models and kept for ``ONLINE_TTL`` seconds."""

    def __init__(self, store: Store, catalog: Catalog) -> None:
        self.store, self.catalog = store, catalog
        from kundenwert.serving.exploration import of_catalog

        # which eligible candidate each decision shows first, with the probability it logs
        self.explorer = of_catalog(catalog)
        self.reader = LiveReader(store.engine)
        self.live = LiveCache(self.reader)
        self.live.listeners.append(self._changed)  # online scores follow the change log too
        from kundenwert.settings import get_settings

        settings = get_settings()
        self.decisions = DecisionLog(store.engine, max_lag=settings.decision_lag)
        # where next-best-action requests read the store (the route's comment says why)
        self.decide_on_loop = decides_on_loop(settings.decide_on_loop, store.engine.dialect.name)
        from kundenwert.serving.results import OverviewCache

        self.campaigns = OverviewCache()  # the campaigns overview, recomputed when the store changes
        self._models: dict[tuple[str, str], object] = {}
        try:
            self.load()
        except BaseException:
            self.decisions.close()  # no writer thread left behind by a state that never served
            raise

    def load(self) -> None:
        """Read the current scoring run, load its models (exactly the versions it used), verify
        them and work out the candidates; swapped in at once. Any failure raises and leaves the
        serving run as it was (a store that cannot be read: ``StoreUnavailable``/``StoreError``)."""
        from kundenwert.db.errors import map_exceptions

        with map_exceptions("loading the scoring run"):
            self._load()

    def _load(self) -> None:
        from kundenwert.db.store import spec_from_store
        from kundenwert.experiments.registry import load_version

        scores, propensity, info = read_scores(self.store.engine)
        margins = category_margins(self.store.read_table("purchases", ["amount", "margin", "category"]))
        self.catalog.check_names(sorted(margins))
        models = {}
        for name, version in sorted(info["models"].items()):
            key = (name, str(version))
            if key not in self._models:
                self._models[key] = load_version(name, str(version))
            models[name] = self._models[key]
        unavailable = self.catalog.unavailable(info["models"], margins)
        wide = propensity.unstack(["action_id", "channel"])
        main = Block.build(self.catalog, scores, wide, margins, unavailable)
        run = Run(info, margins, main, models, spec_from_store(self.store), unavailable=unavailable)
        verify(self.store, self.catalog, run)
        self.current = run
        self._models = {k: m for k, m in self._models.items() if models.get(k[0]) is m}
        settle_heap()

    def warm(self, at: pd.Timestamp) -> None:
        """Work out the control draws of ``at``'s month now, off the event loop (0.25 s for
        20,000 customers), so the first request of that month finds them."""
        self.current.main.candidates.after(at.strftime("%Y-%m"))

    def close(self) -> None:
        """Commit the queued decisions and stop the writer."""
        self.decisions.close()
        self.live.close()

    @property
    def scores(self) -> pd.DataFrame:
        """The run's precomputed scores (online scores not included)."""
        return self.current.main.scores

    def held_scores(self) -> pd.DataFrame:
        """The run's scores of the customers it still holds (``settle_held`` first): what
        target lists and analytics start from."""
        run = self.settle_held()
        scores = run.main.scores
        lost = run.held["lost"]
        return scores[~scores.index.isin(list(lost))] if lost else scores

    def settle_held(self) -> Run:
        """Read which of the run's customers its table still holds, when the change log said
        anyone may have changed (one read of the table's ids; off the event loop)."""
        run = self.current
        if run.held["stale"]:
            from kundenwert.db.errors import map_exceptions

            table = sa.table(run.info["table_name"], sa.column("customer_id"))
            with (
                map_exceptions("reading the scoring run", run.info["table_name"]),
                self.store.engine.connect() as conn,
            ):
                present = set(conn.execute(sa.select(table.c.customer_id)).scalars())
            ids = run.main.scores.index
            run.held["lost"] = frozenset(str(i) for i in ids[~ids.isin(list(present))])
            run.held["stale"] = False
        return run

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
        """The ids the store holds now (an erased customer is gone at once, whatever the run
        holds)."""
        customers = self.store.read_for_customers("customers", ids, ["customer_id"])
        return set(customers["customer_id"].astype(str))

    def standing(self, ids: list[str], now: pd.Timestamp | None = None) -> Standing:
        """Who of ``ids`` exists and who objects, as the store says at this moment: what every
        output of a customer's data checks first."""
        consent = self.consent_of(ids, now)
        objecting = set(consent.index[consent["objection"].to_numpy(dtype=bool)].astype(str))
        return Standing(self.known(ids), objecting, consent)

    def _changed(self, ids: list[str] | None) -> None:
        """The change log named ``ids`` (None: anyone): their online scores are scored again."""
        run = getattr(self, "current", None)
        if run is None:
            return
        if ids is None:
            run.online.clear()
            run.held["stale"] = True  # an erasure may have taken customers out of the run's table
        else:
            for cid in ids:
                run.online.pop(cid, None)

    # ------------------------------------------------------------------ scores, online if need be

    def online_at(self, now: pd.Timestamp | None = None) -> pd.Timestamp:
        """When an online score looks from: the run's cutoff moved on by the time since it ran
        (on live data: now; on a sample world, whose clock stopped, just after its end)."""
        run = self.current
        now = now or pd.Timestamp.now(tz="UTC")
        return run.cutoff + (now - pd.Timestamp(run.info["scored_at"]))

    def blocks(self, ids: list[str], online: bool = True) -> dict[str, Block | None]:
        """The block holding each customer's scores: the run's, or one scored online now (None:
        not registered, objecting (never profiled) or ``online`` is off)."""
        run = self.current
        out: dict[str, Block | None] = {}
        todo = []
        # online scores of customers the change log names since are dropped first, and the scores
        # made now are newer than the log's position (a later change drops them)
        self.live.sync()
        run = self.settle_held()
        clock = time.monotonic()
        for cid in ids:
            if run.holds(cid):
                out[cid] = run.main
                continue
            hit = run.online.get(cid)
            if hit is not None and clock - hit[0] < ONLINE_TTL:
                out[cid] = hit[1]
            elif online:
                todo.append(cid)
            else:
                out[cid] = None
        if todo:
            scores, propensity = score_customers(
                self.store, todo, run.models, self.catalog, run.spec, self.online_at()
            )
            block = (
                Block.build(self.catalog, scores, propensity, run.margins, run.unavailable)
                if len(scores)
                else None
            )
            if len(run.online) + len(todo) > ONLINE_KEPT:
                run.online.clear()
            for cid in todo:
                found = block if block is not None and block.candidates.position(cid) is not None else None
                run.online[cid] = (clock, found)
                out[cid] = found
        return out

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
        online: bool = True,
    ) -> Decisions:
        """The funnel for ``ids`` with their live state now. Customers the run does not hold
        are scored online (``online``); those without scores (objecting: never profiled) keep
        no suggestion."""
        now = now or pd.Timestamp.now(tz="UTC")
        period = now.strftime("%Y-%m")
        main = self.current.main
        held = self.blocks(ids, online=online)
        groups: dict[int, tuple[Block, list[str]]] = {}
        for cid in ids:
            block = held.get(cid) or main  # no block: the main block's no-scores row
            groups.setdefault(id(block), (block, []))[1].append(cid)
        parts = []
        for block, members in groups.values():
            cands = block.candidates
            live = self._live_frames(cands, members, now)
            parts.append(decide(cands, members, live, period=period, channels=channels, actions=actions))
        return parts[0] if len(parts) == 1 else Decisions.concat(parts, ids)

    def decide_one(
        self,
        customer_id: str,
        channels: list[str] | None = None,
        now: pd.Timestamp | None = None,
        block: Block | None = None,
        rows: Prepared | None = None,
    ) -> Decisions:
        """The funnel for one customer: the same rules as ``decide`` on their rows, read fast
        (``block``: the one holding the customer, ``rows``: their live rows, when the caller
        has them)."""
        now_us = time.time_ns() // 1000 if now is None else pd.Timestamp(now).value // 1000
        block = block or self.blocks([customer_id]).get(customer_id) or self.current.main
        cands = block.candidates
        rows = rows if rows is not None else self.live.rows(customer_id)
        live = live_of_prepared(rows, now_us, cands.channels, cands.action_id_list)
        month = datetime.fromtimestamp(now_us / 1e6, UTC)
        period = f"{month.year:04d}-{month.month:02d}"  # pandas' strftime costs 10 us
        return decide_one(cands, customer_id, live, period=period, channels=channels)

    def record(
        self, suggestions: dict[str, list[dict]], candidates: dict[str, dict] | None = None
    ) -> dict[str, str]:
        """One decision per customer with suggestions, queued for the decision log (``flush`` it
        before reading ``kw_decisions``). ``candidates``: per customer, what each channel could
        have shown and with what exploration share (``kw_decisions.candidates``). While the log
        cannot commit, ``StoreUnavailable`` (a 503) before any id is made: an id handed out is
        always stored."""
        self.decisions.check()
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        run_id = self.run["run_id"]
        candidates = candidates or {}
        rows = [
            {
                "decision_id": decision_id(),
                "customer_id": cid,
                "created_at": now,
                "score_run": run_id,
                "suggestions": orjson.dumps(items).decode(),
                "candidates": orjson.dumps(candidates[cid]).decode() if cid in candidates else None,
            }
            for cid, items in suggestions.items()
            if items
        ]
        self.decisions.add(rows)
        return {r["customer_id"]: r["decision_id"] for r in rows}

    # the score whose reasons explain an action of a kind (``ActionKind.reasons``)
    REASONS_OF_KIND = {k.name: k.reasons for k in ACTION_KINDS}

    def reasons_text(self, block: Block | None, customer_id: str, score: str) -> orjson.Fragment:
        """The top SHAP reasons of one score of a customer of ``block`` as the stored JSON text,
        to embed in an answer as it is."""
        if block is None or score not in block.reason_texts:
            return NO_REASONS
        text = block.reason_texts[score][block.candidates.position(customer_id)]
        return orjson.Fragment(text) if isinstance(text, str) else NO_REASONS

    def reasons(self, customer_id: str, score: str) -> list[dict]:
        """The top SHAP reasons of one score (churn, winback, value) of a scored customer."""
        block = self.blocks([customer_id], online=False).get(customer_id)
        if block is None or score not in block.reason_texts:
            return []
        text = block.reason_texts[score][block.candidates.position(customer_id)]
        return json.loads(text) if isinstance(text, str) else []

    def profile(self, customer_id: str) -> dict | None:
        """The scores of one customer, online if the run does not hold them (None: not scored).
        Callers check ``standing`` first: an objecting customer is never shown profiled."""
        block = self.blocks([customer_id]).get(customer_id)
        if block is None:
            return None
        row = block.scores.loc[customer_id]
        out = {}
        for k, v in row.items():
            if str(k).startswith("reasons_"):
                continue
            v = v.item() if isinstance(v, np.generic) else v  # JSON-ready Python values
            out[k] = None if isinstance(v, float) and np.isnan(v) else v
        return out


_IDS = random.Random(os.urandom(32))  # seeded once from the OS: no system call per decision


def decision_id() -> str:
    """32 hex digits: the time in microseconds, then 72 random bits. Time-ordered, so the
    decision log's key index grows at its end instead of taking random inserts. Unique, not
    secret: feedback quoting an id is only taken from a key with the campaign role."""
    return f"{time.time_ns() // 1000:014x}{_IDS.getrandbits(72):018x}"


def explain_reason(code: str) -> str:
    return explanation(code)


def settle_heap() -> None:
    """Collect once, then leave everything alive now (the run's frames and arrays: hundreds of
    thousands of objects) out of the cyclic garbage collector's scans. Without this a full
    collection walks the whole run every few thousand requests: pauses of 40-130 ms measured
    under load. Objects are still freed by reference counting when a later run replaces them."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


VERIFY_PROBES = 20


def verify(store: Store, catalog: Catalog, run: Run) -> None:
    """The run's models, loaded, must reproduce the run's stored scores: a few of its customers
    are scored again from the store at the run's cutoff and compared (CLV, churn, win-back,
    affinities, response per action and channel). A model that does not load, does not fit the
    store's columns or answers differently is refused (``ConfigurationError``), so a reload
    keeps the old run serving."""
    from kundenwert.errors import ConfigurationError

    stored = run.main.scores
    if stored.empty:
        return
    step = max(1, len(stored) // VERIFY_PROBES)
    probes = [str(i) for i in stored.index[::step][:VERIFY_PROBES]]
    try:
        again, propensity = score_customers(
            store, probes, run.models, catalog, run.spec, run.cutoff, reasons=False
        )
    except Exception as exc:  # noqa: BLE001  any failure of a model is a failed verification
        raise ConfigurationError(
            f"model verification failed: scoring {len(probes)} customers again raised "
            f"{type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    both = [i for i in probes if i in again.index]
    names, prefixes = stored_scores()  # every model's stored scores, as the specs say
    columns = [c for c in stored.columns if c in names or str(c).startswith(prefixes)]
    for c in columns:
        a = stored.loc[both, c].to_numpy(dtype="float64")
        b = again.loc[both, c].to_numpy(dtype="float64")
        same = np.isclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True)
        if len(both) < max(1, len(probes) // 2) or same.mean() < 0.9:
            raise ConfigurationError(
                f"model verification failed: {c} of {int(same.sum())} of {len(both)} probe customers "
                f"matches the stored run ({len(probes)} probes)"
            )
    main = run.main.candidates
    rows = main.positions(both)
    mine = Candidates(catalog, again.loc[both], propensity, run.margins)
    a, b = main.propensity[rows], mine.propensity[: len(both)]
    asked = ~np.isnan(b)  # the pairs scored again (a run may hold more: older runs scored all)
    if not asked.any() and np.isnan(a).all() and run.unavailable:
        return  # no pair of the probes is servable in this run (its models serve few actions)
    same = np.isclose(a[asked], b[asked], rtol=1e-6, atol=1e-9)
    if not asked.any() or same.mean() < 0.9:
        raise ConfigurationError(
            f"model verification failed: response propensities match for {same.mean() if asked.any() else 0:.0%} "
            "of the probes' pairs"
        )
