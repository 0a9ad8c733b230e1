"""Faults of the store: a database locked by another writer gives 503 with Retry-After (never a
500, never a hung request), and no decision id is handed out that is not stored."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from kundenwert.db.schema import DECISIONS, TABLE_DEFS
from kundenwert.serving.state import decides_on_loop
from tests.serving.conftest import own_world

BUSY = 2.0  # the served store's busy timeout (seconds) in these tests

_HOLD = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def hold_write_lock(path: Path, seconds: float) -> subprocess.Popen:
    """Another process (an import, ``kundenwert score``) holding the SQLite write lock."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


@pytest.fixture(scope="module")
def world(imported_world, trained_small, small_config, tmp_path_factory):
    """A served world of its own (these tests lock its store and write feedback into it)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("KUNDENWERT_BUSY_TIMEOUT", str(BUSY))
    try:
        with own_world(imported_world, trained_small, small_config, tmp_path_factory, "kw-faults") as w:
            yield w
    finally:
        mp.undo()


def _stored(store, ids: set[str]) -> set[str]:
    with store.engine.connect() as conn:
        return set(
            conn.execute(
                sa.select(DECISIONS.c.decision_id).where(DECISIONS.c.decision_id.in_(list(ids)))
            ).scalars()
        )


def _event(n: int, result: dict) -> dict:
    s = result["suggestions"][0]
    return {
        "event_id": f"fault-{n}",
        "decision_id": result["decision_id"],
        "action_id": s["action_id"],
        "channel": s["channel"],
        "outcome": "opened",
        "occurred_at": "2026-11-30T09:00:00Z",
    }


def test_a_locked_store_gives_503_with_retry_after_and_every_served_decision_is_stored(world) -> None:
    """The SQLite write lock held by another process for 10 s: feedback, score and target lists
    answer 503 with Retry-After meanwhile (never 500, each within the busy timeout and a little),
    and every decision id served before or during the lock is in ``kw_decisions`` after it."""
    c, keys = world["client"], world["keys"]
    campaign, marketing = {"X-API-Key": keys["campaign"]}, {"X-API-Key": keys["marketing"]}
    everyone = [str(i) for i in world["customers"]]
    served: set[str] = set()

    def score(ids: list[str]):
        r = c.post("/v1/score", headers=campaign, json={"customer_ids": ids})
        if r.status_code == 200:
            results = [x for x in r.json()["results"] if x["decision_id"]]
            served.update(x["decision_id"] for x in results)
            return r, results
        return r, []

    r, before = score(everyone[:300])
    assert r.status_code == 200 and len(before) > 50
    # ids the feedback below reports on: decisions served before the lock
    events = iter(_event(n, x) for n, x in enumerate(before))

    lock = hold_write_lock(world["home"] / "kw.db", 10.0)
    start = time.monotonic()
    # per route: the statuses of the answers that came while the lock was still held
    statuses: dict[str, list[int]] = {"score": [], "feedback": [], "target-lists": []}
    during: list[dict] = []  # decisions served while the writer could not commit
    try:
        k = 0
        while time.monotonic() - start < 6.0:  # the last round ends before the lock does
            k += 1
            for name in statuses:
                t0 = time.monotonic()
                if name == "score":
                    r, got = score(everyone[300 + 10 * k : 310 + 10 * k])
                elif name == "feedback":
                    r = c.post("/v1/feedback", headers=campaign, json={"events": [next(events)]})
                else:
                    body = {"objective": "churn_prevention", "channel": "email", "size": 50}
                    r = c.post("/v1/target-lists", headers=marketing, json=body)
                took = time.monotonic() - t0
                assert r.status_code in (200, 201, 503), (name, r.status_code, r.text)
                assert took < BUSY + 2.0, (name, took)
                if r.status_code == 503:
                    assert int(r.headers["Retry-After"]) > 0, name
                    assert "retry later" in r.json()["detail"], r.text
                if lock.poll() is None:
                    statuses[name].append(r.status_code)
                    if name == "score":
                        during += got
    finally:
        lock.wait(timeout=30)
    # writes wait for the lock and give up: always 503; decisions are made (and stored later)
    # until the writer has waited ``decision_lag`` seconds, then refused before any id is made
    assert statuses["feedback"] and set(statuses["feedback"]) == {503}, statuses
    assert statuses["target-lists"] and set(statuses["target-lists"]) == {503}, statuses
    assert statuses["score"][-1] == 503, statuses
    assert during, "no decision was served during the lock: nothing to prove stored"
    # the writer commits what it holds once the lock is gone; no id handed out is missing
    state = c.app.state.serving
    deadline = time.monotonic() + 30
    while not state.decisions.healthy or state.decisions.lag:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    state.decisions.flush()
    assert _stored(world["store"], served) == served
    assert state.decisions.lost == 0
    # and the service serves again: a decision from during the lock takes feedback
    r, _ = score(everyone[:20])
    assert r.status_code == 200
    r = c.post("/v1/feedback", headers=campaign, json={"events": [_event(10_000, during[0])]})
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text


def test_the_decision_log_keeps_trying_until_it_commits_and_gives_up_only_at_shutdown(tmp_path) -> None:
    """A batch that cannot commit is tried again until it does (never dropped); while it waits
    the log is not healthy (new decisions are refused); ``close`` under a lock that never ends
    returns after its timeout and counts what it gave up."""
    import pandas as pd

    from kundenwert.db.store import Store
    from kundenwert.errors import StoreUnavailable
    from kundenwert.serving.decisions import DecisionLog
    from kundenwert.serving.state import decision_id

    mp = pytest.MonkeyPatch()
    mp.setenv("KUNDENWERT_BUSY_TIMEOUT", "0.5")
    try:
        store = Store(f"sqlite:///{tmp_path / 'kw.db'}")
    finally:
        mp.undo()
    with store.engine.begin() as conn:
        conn.execute(
            TABLE_DEFS["customers"].insert(),
            [
                {
                    "customer_id": f"C{i}",
                    "created_at": pd.Timestamp("2025-01-01", tz="UTC"),
                    "customer_type": "consumer",
                }
                for i in range(20)
            ],
        )

    def rows(n: int) -> list[dict]:
        return [
            {
                "decision_id": decision_id(),
                "customer_id": f"C{i}",
                "created_at": "2026-11-22T18:00:00.000+00:00",
                "score_run": "run",
                "suggestions": "[]",
            }
            for i in range(n)
        ]

    log = DecisionLog(store.engine, max_lag=1.0)
    lock = hold_write_lock(tmp_path / "kw.db", 4.0)
    first = rows(10)
    log.add(first)
    time.sleep(2.0)
    assert not log.healthy and log.failures >= 1
    with pytest.raises(StoreUnavailable):
        log.check()
    with pytest.raises(StoreUnavailable):
        log.flush()  # at once, not after its timeout
    lock.wait(timeout=30)
    deadline = time.monotonic() + 30
    while not log.healthy:  # the next try (after its back-off of at most 2 s) commits
        assert time.monotonic() < deadline
        time.sleep(0.05)
    log.flush(timeout=30)
    assert log.healthy and _stored(store, {r["decision_id"] for r in first}) == {
        r["decision_id"] for r in first
    }

    lock = hold_write_lock(tmp_path / "kw.db", 30.0)
    try:
        log.add(rows(5))
        t0 = time.monotonic()
        log.close(timeout=1.5)
        assert time.monotonic() - t0 < 10 and not log._thread.is_alive()
        assert log.lost == 5
    finally:
        lock.kill()
        lock.wait()
        store.dispose()


def _live_answers_while(c, in_flight: threading.Semaphore, n: int) -> list[float]:
    """Wait until ``n`` requests are inside the stalled store, then time three ``/health/live``."""
    for _ in range(n):
        assert in_flight.acquire(timeout=30), "the slow requests never reached the store"
    took = []
    for _ in range(3):
        t0 = time.monotonic()
        r = c.get("/health/live")
        took.append(time.monotonic() - t0)
        assert r.status_code == 200 and r.json() == {"status": "live"}
    return took


def test_health_live_answers_while_the_store_stalls_under_next_best_actions(world, monkeypatch) -> None:
    """A store that stops answering (PostgreSQL hung, a disk stall): next-best-action requests
    wait on it, and meanwhile ``/health/live`` still answers at once (the event loop is free), so
    a liveness probe does not kill a service that only waits for its database."""
    c = world["client"]
    state = c.app.state.serving
    # this world is SQLite, whose reads are made on the event loop; a store that may stall
    # (PostgreSQL: `auto` chooses this there, see the test below) is read in the thread pool
    assert state.decide_on_loop
    state.decide_on_loop = False
    try:
        _stalled_reads_leave_the_loop_free(c, world, state, monkeypatch)
    finally:
        state.decide_on_loop = True


def _stalled_reads_leave_the_loop_free(c, world, state, monkeypatch) -> None:
    keys = world["keys"]
    sales = {"X-API-Key": keys["sales"]}
    in_flight, release = threading.Semaphore(0), threading.Event()
    real_rows = state.live.rows

    def stalled_rows(customer_id: str):
        in_flight.release()
        release.wait(timeout=20)  # the database answers again only when the test says so
        return real_rows(customer_id)

    monkeypatch.setattr(state.live, "rows", stalled_rows)
    ids = [str(i) for i in world["customers"][:4]]
    with ThreadPoolExecutor(len(ids)) as pool:
        slow = [pool.submit(c.get, f"/v1/customers/{i}/next-best-actions", headers=sales) for i in ids]
        try:
            took = _live_answers_while(c, in_flight, len(ids))
            assert not any(f.done() for f in slow), "the slow requests did not wait on the store"
        finally:
            release.set()
        answers = [f.result(timeout=30) for f in slow]
    assert max(took) < 1.0, took
    assert [r.status_code for r in answers] == [200] * len(ids), [r.text for r in answers]


@pytest.mark.parametrize(
    ("setting", "dialect", "on_loop"),
    [
        ("auto", "sqlite", True),
        ("auto", "postgresql", False),
        ("always", "postgresql", True),
        ("never", "sqlite", False),
    ],
)
def test_next_best_actions_leave_the_loop_for_a_store_that_may_stall(setting, dialect, on_loop) -> None:
    assert decides_on_loop(setting, dialect) is on_loop


def test_health_live_answers_while_another_process_holds_the_write_lock(world) -> None:
    """The SQLite write lock held by another process: feedback requests wait for it (up to the
    busy timeout) in worker threads while ``/health/live`` answers at once."""
    c, keys = world["client"], world["keys"]
    campaign = {"X-API-Key": keys["campaign"]}
    r = c.post(
        "/v1/score", headers=campaign, json={"customer_ids": [str(i) for i in world["customers"][:50]]}
    )
    decided = [x for x in r.json()["results"] if x["decision_id"]]
    assert r.status_code == 200 and len(decided) >= 4
    c.app.state.serving.decisions.flush()
    lock = hold_write_lock(world["home"] / "kw.db", 10.0)
    try:
        with ThreadPoolExecutor(4) as pool:
            t0 = time.monotonic()
            slow = [
                pool.submit(
                    c.post, "/v1/feedback", headers=campaign, json={"events": [_event(20_000 + n, x)]}
                )
                for n, x in enumerate(decided[:4])
            ]
            time.sleep(0.3)  # they are waiting for the lock now (the busy timeout is 2 s)
            took = []
            while time.monotonic() - t0 < BUSY - 0.5:
                t1 = time.monotonic()
                assert c.get("/health/live").status_code == 200
                took.append(time.monotonic() - t1)
                time.sleep(0.1)
            waiting = sum(not f.done() for f in slow)
            answers = [f.result(timeout=30) for f in slow]
    finally:
        lock.kill()
        lock.wait()
    assert waiting, "no feedback request was waiting for the lock while /health/live was asked"
    assert took and max(took) < 1.0, took
    assert {a.status_code for a in answers} <= {200, 503}, [a.text for a in answers]
