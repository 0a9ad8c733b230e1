"""``kundenwert serve --workers 2`` (issue 16): two processes, each with its own models and state,
on one store; feedback stays exactly-once across them."""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pandas as pd
import pytest

from tests.serving.conftest import own_world
from tests.serving.test_api import _events

pytestmark = pytest.mark.slow  # about 1.5 minutes on 2 cores: two workers load their models


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _workers_ready(base: str, want: int, server: subprocess.Popen, seconds: float = 180) -> set[str]:
    """The pids of the workers that answered ready; waits until ``want`` of them have. A fresh
    connection per probe, so the kernel hands them to either worker."""
    ready: set[str] = set()
    deadline = time.monotonic() + seconds
    while len(ready) < want:
        assert server.poll() is None, f"the server exited: {server.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, f"only {len(ready)} of {want} workers ready"
        try:
            r = httpx.get(f"{base}/health/ready", timeout=5)
            if r.status_code == 200:
                ready.add(r.headers["x-kundenwert-worker"])
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return ready


@pytest.fixture(scope="module")
def two_workers(imported_world, trained_small, small_config, tmp_path_factory):
    """A trained, scored copy of the sample store served by ``kundenwert serve --workers 2``."""
    with own_world(imported_world, trained_small, small_config, tmp_path_factory, "kw-workers") as world:
        port = _port()
        env = {
            **os.environ,
            "KUNDENWERT_HOME": str(world["home"]),
            "KUNDENWERT_DATABASE_URL": world["url"],
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "KUNDENWERT_BENCH_ENDPOINTS": "1",  # the worker's pid on every answer
            "KUNDENWERT_RELOAD_SECONDS": "0",
            # sales keys: a burst of 5 per worker (test_each_worker_keeps_its_own_rate_limit_buckets)
            "KUNDENWERT_RATE_LIMITS": '{"sales": [0.001, 5]}',
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        server = subprocess.Popen(
            [sys.executable, "-m", "kundenwert.cli", "serve", "--workers", "2", "--port", str(port)],
            env=env,
            stderr=subprocess.PIPE,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            world["ready_pids"] = _workers_ready(base, 2, server)
            world["base"] = base
            yield world
        finally:
            server.terminate()
            server.wait(timeout=60)


def test_two_workers_store_10000_feedback_events_once_with_30_percent_concurrent_duplicates(
    two_workers,
) -> None:
    """Decisions from ``/v1/score``, then 13,000 events (10,000 distinct + 3,000 repeats with the
    same payload) in shuffled batches of 100 from 8 threads, a new connection per batch so both
    workers take them: every batch answers 200 (no "database is locked" between the processes),
    exactly 10,000 are stored, the answers add up, each contact carries its furthest outcome,
    and both workers served feedback."""
    w = two_workers
    base, key = w["base"], w["keys"]["campaign"]
    assert len(w["ready_pids"]) == 2
    r = httpx.post(
        f"{base}/v1/score", headers={"X-API-Key": key}, json={"customer_ids": w["customers"]}, timeout=120
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    suggested = [(x["decision_id"], s["action_id"], s["channel"]) for x in results for s in x["suggestions"]]
    assert len(suggested) > 500
    decision_ids = {d for d, _, _ in suggested}
    path = w["url"].removeprefix("sqlite:///")
    deadline = time.monotonic() + 30  # the decision log commits in the background, within ms
    while True:
        with sqlite3.connect(path) as conn:
            stored = conn.execute("SELECT count(*) FROM kw_decisions").fetchone()[0]
        if stored >= len(decision_ids) or time.monotonic() > deadline:
            break
        time.sleep(0.05)

    events = _events(suggested, 10_000, "workers", seed=11)
    rng = random.Random(12)
    sent = events + [dict(e) for e in rng.sample(events, 3_000)]
    rng.shuffle(sent)
    batches = [sent[i : i + 100] for i in range(0, len(sent), 100)]

    def post(batch):
        r = httpx.post(f"{base}/v1/feedback", headers={"X-API-Key": key}, json={"events": batch}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json(), r.headers["x-kundenwert-worker"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, batches))
    assert sum(a["stored"] for a, _ in answers) == 10_000
    assert sum(a["duplicates"] for a, _ in answers) == 3_000
    assert {pid for _, pid in answers} == w["ready_pids"]  # both workers took feedback

    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT count(*) FROM kw_feedback WHERE event_id LIKE 'workers-%'").fetchone()[
            0
        ]
        contacts = pd.read_sql("SELECT contact_id, outcome FROM contacts WHERE contact_id LIKE 'kw-%'", conn)
    assert stored == 10_000
    from kundenwert.serving.feedback import OUTCOMES, STAGE, contact_id_of

    want: dict[str, str] = {}
    for e in events:  # the furthest outcome per contact
        cid = contact_id_of(e["decision_id"], e["action_id"], e["channel"])
        o = OUTCOMES[e["outcome"]]
        if cid not in want or STAGE[o] > STAGE[want[cid]]:
            want[cid] = o
    got = dict(zip(contacts["contact_id"], contacts["outcome"], strict=True))
    assert {k: got.get(k) for k in want} == want


def test_each_worker_keeps_its_own_rate_limit_buckets(two_workers) -> None:
    """The service runs with sales keys limited to a burst of 5 (and almost no refill): each
    worker serves one sales key 5 times and then answers 429 with Retry-After, so the key's
    effective limit is per worker (documented in the README)."""
    w = two_workers
    base, key = w["base"], w["keys"]["sales"]
    ok: dict[str, int] = {}
    asked: dict[str, int] = {}
    for i in range(400):
        cid = w["customers"][i % 50]
        r = httpx.get(f"{base}/v1/customers/{cid}/next-best-actions", headers={"X-API-Key": key}, timeout=30)
        pid = r.headers["x-kundenwert-worker"]
        asked[pid] = asked.get(pid, 0) + 1
        assert r.status_code in (200, 429), r.text
        if r.status_code == 200:
            ok[pid] = ok.get(pid, 0) + 1
        else:
            assert int(r.headers["Retry-After"]) >= 1
        if len(asked) == 2 and min(asked.values()) > 5:
            break
    assert set(asked) == w["ready_pids"]
    assert ok == {pid: 5 for pid in asked}
