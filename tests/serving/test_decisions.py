"""Decisions on a whole sample world: consent and objections hold for every customer and channel,
and the live state (pressure, ignored offers) is computed as the contract defines it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from kundenwert.features.contract import MARKETING_CHANNELS
from kundenwert.serving.arbitration import arbitrate
from kundenwert.serving.catalog import load_catalog
from kundenwert.serving.live import consent_now, contact_pressure, ignored_offers
from kundenwert.serving.scoring import decision_inputs, score_snapshot, status_at


@pytest.fixture(scope="module")
def world(imported_world, trained_small):
    from kundenwert.features.snapshot import snapshot

    frames, _ = imported_world(3_000, 5)
    models = {n: r.model for n, r in trained_small.items()}
    now = frames["contacts"]["contacted_at"].max() + pd.Timedelta(days=1)
    catalog = load_catalog()
    X = snapshot(frames, now)
    consent = consent_now(frames["consents"], now)
    objecting = consent.index[consent["objection"].to_numpy()]
    scores, propensity = score_snapshot(X, status_at(frames, now), models, catalog, objecting)
    inputs = decision_inputs(scores, propensity, frames, now)
    decisions = arbitrate(catalog, inputs, period=now.strftime("%Y-%m"))
    return {
        "frames": frames,
        "now": now,
        "X": X,
        "scores": scores,
        "propensity": propensity,
        "decisions": decisions,
        "objecting": objecting,
    }


def _valid_consent(consents: pd.DataFrame, now: pd.Timestamp) -> tuple[pd.DataFrame, set]:
    """The contract's rules, written out independently of kundenwert.features.consent."""
    rec = consents[consents["recorded_at"] <= now].sort_values("recorded_at", kind="stable")
    latest = rec.groupby(["customer_id", "channel"]).tail(1)
    objecting = set(latest.loc[(latest["channel"] == "*") & ~latest["granted"].astype(bool), "customer_id"])
    ok = latest["granted"].astype(bool) & (
        (latest["channel"] != "email") | latest["double_opt_in"].astype("boolean").fillna(False).astype(bool)
    )
    valid = latest[ok & ~latest["customer_id"].isin(objecting)]
    return valid[["customer_id", "channel"]], objecting


def test_no_suggestion_without_consent_and_none_for_an_objecting_customer(world) -> None:
    """Every customer, every channel, every action of the world: the kept suggestions use only
    channels with valid consent; objecting customers have no scores and no suggestion."""
    d = world["decisions"]
    valid, objecting = _valid_consent(world["frames"]["consents"], world["now"])
    assert len(objecting) > 10 and set(objecting) == set(world["objecting"])
    assert not set(world["scores"].index) & objecting  # not even profiled
    assert world["scores"].index.size == world["X"].index.size - len(objecting & set(world["X"].index))
    kept = d[d["reason"] == ""]
    assert len(kept) > 1_000 and set(kept["channel"]) == set(MARKETING_CHANNELS)
    pairs = set(zip(valid["customer_id"], valid["channel"], strict=True))
    offending = [p for p in zip(kept["customer_id"], kept["channel"], strict=True) if p not in pairs]
    assert not offending, offending[:5]
    assert not set(kept["customer_id"]) & objecting
    # and the funnel says so for the candidates without consent
    no = d[[p not in pairs for p in zip(d["customer_id"], d["channel"], strict=True)]]
    assert len(no) > 1_000 and set(no["reason"]) == {"no_consent"}


def test_every_dropped_candidate_has_a_known_reason_and_kept_ones_are_ranked(world) -> None:
    d = world["decisions"]
    dropped = d[d["reason"] != ""]
    assert (dropped["rank"] == 0).all()
    kept = d[d["reason"] == ""]
    assert (kept["score"] > 0).all() and (kept["rank"] >= 1).all()
    best = kept[kept["rank"] == 1]
    assert not best.duplicated(["customer_id", "channel"]).any()
    top = kept.groupby(["customer_id", "channel"])["score"].max()
    assert np.allclose(best.set_index(["customer_id", "channel"])["score"].reindex(top.index), top)
    counts = d["reason"].value_counts()
    for reason in ("no_consent", "status", "control_group", "complaint_required"):
        assert counts.get(reason, 0) > 0, reason


def test_pressure_and_ignored_offers_follow_the_contract() -> None:
    t = pd.Timestamp("2026-01-31", tz="UTC")
    day = pd.Timedelta(days=1)
    contacts = pd.DataFrame(
        {
            "customer_id": ["a"] * 7 + ["b"],
            "contacted_at": [
                t - 40 * day,
                t - 35 * day,
                t - 25 * day,
                t - 20 * day,
                t - 5 * day,
                t - 1 * day,
                t - 2 * day,
                t - 3 * day,
            ],
            "channel": ["email"] * 6 + ["sms", "email"],
            "direction": ["outbound"] * 6 + ["outbound", "inbound"],
            "action_id": ["x", "x", "x", "x", "x", "x", "y", None],
            "is_control": [False, False, False, False, False, True, False, False],
            "outcome": ["converted", None, "none", "opened", None, "none", "clicked", None],
        }
    )
    p = contact_pressure(contacts, t)
    assert p.loc[("a", "email")].to_dict() == {"contacts_7d": 1, "contacts_30d": 3, "days_since_last": 5.0}
    assert p.loc[("a", "sms")]["contacts_7d"] == 1 and ("b", "email") not in p.index  # inbound: not pressure
    ign = ignored_offers(contacts, t, response_window=14)
    # after the conversion 40 days ago: 35 (missing), 25 (none), 20 (opened) days ago ignored;
    # 5 days ago is not matured; the control contact was never sent
    assert ign.loc[("a", "x"), "ignored_in_a_row"] == 3 and ("a", "y") not in ign.index


def test_scores_round_trip_through_the_store_and_a_failed_write_leaves_the_last_run(world, tmp_path) -> None:

    from kundenwert.serving import scores_store as S

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'kw.db'}")
    scores = world["scores"]
    props = world["propensity"]
    first = S.write_scores(engine, scores, props, world["now"], {"churn": "1"})
    got, got_props, run = S.read_scores(engine)
    assert run["run_id"] == first and run["customers"] == len(scores) and run["models"] == {"churn": "1"}
    pd.testing.assert_frame_equal(got, scores, check_dtype=False, check_index_type=False)
    pd.testing.assert_frame_equal(
        got_props.sort_index(), props.sort_index(), check_dtype=False, check_index_type=False
    )

    class Broken(Exception):
        pass

    def boom(*_a, **_k):
        raise Broken("disk full")

    bad = scores.assign(clv=scores["clv"] * 2)
    original = pd.DataFrame.to_sql
    try:
        pd.DataFrame.to_sql = boom
        with pytest.raises(Broken):
            S.write_scores(engine, bad, props, world["now"], {"churn": "2"})
    finally:
        pd.DataFrame.to_sql = original
    assert S.latest_run(engine)["run_id"] == first  # still the complete one
    tables = set(sa.inspect(engine).get_table_names())
    assert tables == {"kw_score_runs", run["table_name"]}


def test_the_decision_log_writes_every_row_of_large_batches(store) -> None:
    """Queued decisions end in ``kw_decisions`` as given, also when one commit holds more rows
    than one SQLite statement takes (many rows per INSERT there); a decision whose customer is
    not in the store when its batch commits (erased while it waited) is not stored."""
    from kundenwert.db.schema import TABLE_DEFS
    from kundenwert.serving.decisions import DECISIONS, DecisionLog
    from kundenwert.serving.state import decision_id

    with store.engine.begin() as conn:
        conn.execute(
            TABLE_DEFS["customers"].insert(),
            [
                {
                    "customer_id": f"C{i}",
                    "created_at": pd.Timestamp("2025-01-01", tz="UTC"),
                    "customer_type": "consumer",
                }
                for i in range(401)
            ],
        )
    log = DecisionLog(store.engine)
    gone = {
        "decision_id": decision_id(),
        "customer_id": "erased-meanwhile",
        "created_at": "2026-11-22T18:00:00.000+00:00",
        "score_run": "run",
        "suggestions": "[]",
    }
    log.add([gone])
    rows = [
        {
            "decision_id": decision_id(),
            "customer_id": f"C{i}",
            "created_at": "2026-11-22T18:00:00.000+00:00",
            "score_run": "run",
            "suggestions": f'[{{"rank": {i}}}]',
            # every other row with the candidates each channel had; a row without them stores none
            **({"candidates": f'{{"email": {{"epsilon": 0.05, "shown": {i % 3}}}}}'} if i % 2 else {}),
        }
        for i in range(401)
    ]
    log.add(rows[:7])
    log.add(rows[7:])
    log.close()
    with store.engine.connect() as conn:
        stored = [dict(r) for r in conn.execute(sa.select(DECISIONS)).mappings()]
    given = [{"candidates": None, **r} for r in rows]
    assert sorted(stored, key=lambda r: r["decision_id"]) == sorted(given, key=lambda r: r["decision_id"])
    assert len({r["decision_id"] for r in rows}) == len(rows)


def test_the_decision_log_closes_once_refuses_later_rows_and_loses_no_id_it_took(store) -> None:
    """``close`` while other threads keep adding decisions: every ``add`` that returned is
    stored, every later one is refused at once (a 503 with a clear message, nothing queued); a
    second (and a concurrent) ``close`` returns as the first; ``flush`` after it does not hang."""
    import threading
    import time

    from kundenwert.db.schema import TABLE_DEFS
    from kundenwert.errors import StoreUnavailable
    from kundenwert.serving.decisions import DECISIONS, DecisionLog
    from kundenwert.serving.state import decision_id

    with store.engine.begin() as conn:
        conn.execute(
            TABLE_DEFS["customers"].insert(),
            [
                {
                    "customer_id": f"C{i}",
                    "created_at": pd.Timestamp("2025-01-01", tz="UTC"),
                    "customer_type": "consumer",
                }
                for i in range(10)
            ],
        )
    log = DecisionLog(store.engine, interval=0.005)
    taken: list[list[str]] = [[] for _ in range(4)]
    refused: list[StoreUnavailable] = []
    started = threading.Barrier(len(taken) + 1)

    def keep_adding(mine: list[str]) -> None:
        started.wait()
        for n in range(100_000):
            row = {
                "decision_id": decision_id(),
                "customer_id": f"C{n % 10}",
                "created_at": "2026-11-22T18:00:00.000+00:00",
                "score_run": "run",
                "suggestions": "[]",
            }
            try:
                log.add([row])
            except StoreUnavailable as exc:
                refused.append(exc)
                return
            mine.append(row["decision_id"])  # handed out: the add returned
        raise AssertionError("the log was never closed")

    adders = [threading.Thread(target=keep_adding, args=(mine,)) for mine in taken]
    for t in adders:
        t.start()
    started.wait()
    time.sleep(0.2)
    closers = [threading.Thread(target=log.close) for _ in range(2)]
    for t in closers:
        t.start()
    for t in closers + adders:
        t.join(timeout=60)
        assert not t.is_alive()
    t0 = time.monotonic()
    log.close()  # and once more: returns at once
    assert time.monotonic() - t0 < 1.0 and log.closed and not log._thread.is_alive()

    assert len(refused) == len(taken) and all("closed" in str(e) for e in refused)
    assert all(e.http_status == 503 for e in refused)
    with pytest.raises(StoreUnavailable, match="closed"):
        log.flush()  # at once, not after its timeout
    handed_out = {i for mine in taken for i in mine}
    assert len(handed_out) > 100
    with store.engine.connect() as conn:
        stored = set(conn.execute(sa.select(DECISIONS.c.decision_id)).scalars())
    assert stored == handed_out and log.lost == 0
