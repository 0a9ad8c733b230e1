"""Benchmark: the next-best-action endpoint under load against two references measured in the same
run (``shared/benchmarks.md``): a bare endpoint in the same app with the same auth and validation
and a constant answer, and a minimal FastAPI app (``bench/minimal_app.py``: a dict lookup of the
API key, a constant answer, uvicorn with uvloop and httptools). wrk on loopback, one thread, 32
connections, 10 s per round, five rounds alternating over every row (the median is kept: this
machine's speed drifts from minute to minute). The service is ``kundenwert serve`` (uvicorn,
asyncio loop, httptools, OMP_NUM_THREADS=1) with one worker and, beside it, with two
(``--workers 2``); one worker and the minimal app are pinned to core 0, two workers to cores 0-1,
wrk to core 1 (``--no-pin``: wherever the OS puts them; on 2 cores, two workers share a core with
wrk, so their row shows what a second worker buys on this machine, not on a larger one). Customer
ids rotate over 2,000 scored customers. Also reported: the mean time inside the app per request,
from the service's own latency histogram (one worker), and each row against both references.

    python bench/serve.py [--db var/kundenwert.db] [--duration 10] [--connections 32] [--rounds 5]
                          [--no-pin] [--no-two-workers] [--batch-customers 1000000]

Then, as the issue asks of this benchmark, it scores ``--batch-customers`` customers for every
action in batch against the models' bare predictions (``bench/batch_score.py``; 0 skips it;
about 13 minutes for a million on 2 cores).

Needs a scored store (``make run``, or ``kundenwert score``) and ``wrk`` (Debian package wrk).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import table  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk(
    base: str,
    path: str,
    key: str,
    ids: list[str],
    duration: int,
    connections: int,
    work: Path,
    pin: list[str],
) -> dict:
    script = work / "rotate.lua"
    listed = ",".join(f'"{i}"' for i in ids)
    script.write_text(
        f"ids = {{{listed}}}\ni = 0\n"
        "request = function()\n  i = i % #ids + 1\n"
        f'  local path = string.gsub("{path}", "{{id}}", ids[i])\n  return wrk.format("GET", path)\nend\n'
    )
    done = subprocess.run(
        [
            *pin,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            "-H",
            f"X-API-Key: {key}",
            base,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = done.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+([\d.]+\w+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+([\d.]+\w+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rate, "p50": p50, "p99": p99, "non2xx": int(errors.group(1)) if errors else 0}


def _in_app_ms(base: str) -> dict[str, float]:
    """Mean time inside the app per route (the service's own histogram: from the first
    middleware to the last byte handed to the server), in ms."""
    import httpx

    text = httpx.get(f"{base}/metrics", timeout=10).text
    sums = dict(re.findall(r'kundenwert_request_seconds_sum\{route="([^"]+)"\} ([\d.e+-]+)', text))
    counts = dict(re.findall(r'kundenwert_request_seconds_count\{route="([^"]+)"\} ([\d.e+-]+)', text))
    return {r: 1e3 * float(sums[r]) / float(counts[r]) for r in sums if float(counts.get(r, 0))}


def _wait_ready(base: str, server: subprocess.Popen, probe: str, key: str, workers: int) -> None:
    """Until ``workers`` distinct processes answered ``probe`` with 200 (a new connection per probe,
    so the kernel hands them to any worker; the kundenwert service names its worker in a header
    under KUNDENWERT_BENCH_ENDPOINTS=1)."""
    import httpx

    seen: set[str] = set()
    for _ in range(1500):
        if server.poll() is not None:
            sys.exit(f"a server exited: {server.stderr.read().decode()[-2000:] if server.stderr else ''}")
        try:
            r = httpx.get(f"{base}{probe}", headers={"X-API-Key": key}, timeout=2)
            if r.status_code == 200:
                seen.add(r.headers.get("x-kundenwert-worker", "one"))
                if len(seen) >= workers:
                    return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit(f"{base} not ready: {len(seen)} of {workers} workers answered")


MINIMAL = "minimal FastAPI app (key check, constant answer, uvloop)"
NBA = "/v1/customers/{id}/next-best-actions?limit=3"
BARE = "/v1/bench/customers/{id}/bare?limit=3"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", default="var/kundenwert.db")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per endpoint (median kept)")
    ap.add_argument(
        "--no-pin",
        action="store_true",
        help="let the OS place server and wrk (default: server on core 0, wrk on core 1, with taskset)",
    )
    ap.add_argument("--no-two-workers", action="store_true", help="leave out the rows of 2 workers")
    ap.add_argument(
        "--batch-customers", type=int, default=1_000_000, help="batch scoring bench size (0: skip)"
    )
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    # One worker is one core: pinned, the server and the load generator do not take turns on the
    # same core (unpinned, the bare route's rate jumped between 1,100 and 2,700 req/s from run to run)
    pinned = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    pin_server, pin_wrk = (["taskset", "-c", "0"], ["taskset", "-c", "1"]) if pinned else ([], [])
    # two workers need two cores: on a 2-core machine they share core 1 with wrk
    pin_two = ["taskset", "-c", "0,1"] if pinned else []
    db = Path(args.db).resolve()
    env = {
        **os.environ,
        "KUNDENWERT_DATABASE_URL": f"sqlite:///{db}",
        "KUNDENWERT_BENCH_ENDPOINTS": "1",
        "OMP_NUM_THREADS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    from kundenwert.db.store import Store
    from kundenwert.serving.keys import create_key
    from kundenwert.serving.scores_store import read_scores

    store = Store(f"sqlite:///{db}")
    scores, _, run = read_scores(store.engine)
    ids = [str(i) for i in scores.index[:2000]]
    key = create_key(store.engine, "sales", "bench")
    store.dispose()
    kundenwert = [sys.executable, "-m", "kundenwert.cli", "serve"]
    # server name -> (command, extra env, readiness probe, workers)
    plans: dict[str, tuple[list[str], dict[str, str], str, int]] = {
        "minimal": (
            [
                *pin_server,
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(Path(__file__).parent),
                "minimal_app:app",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--workers",
                "1",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            {"KW_BENCH_KEY": key},
            NBA.replace("{id}", ids[0]),
            1,
        ),
        "1 worker": ([*pin_server, *kundenwert], {}, "/health/ready", 1),
    }
    if not args.no_two_workers:
        plans["2 workers"] = ([*pin_two, *kundenwert, "--workers", "2"], {}, "/health/ready", 2)
    routes = {MINIMAL: ("minimal", NBA)}
    for name in plans:
        if name != "minimal":
            routes[f"bare route (same auth and validation, constant answer), {name}"] = (name, BARE)
            routes[f"next best actions, {name}"] = (name, NBA)
    servers: dict[str, subprocess.Popen] = {}
    bases: dict[str, str] = {}
    try:
        for name, (cmd, extra, _, _) in plans.items():
            port = _port()
            bases[name] = f"http://127.0.0.1:{port}"
            servers[name] = subprocess.Popen(
                [*cmd, "--port", str(port)], env={**env, **extra}, stderr=subprocess.PIPE
            )
        for name, (_, _, probe, workers) in plans.items():
            _wait_ready(bases[name], servers[name], probe, key, workers)
        work = Path(tempfile.mkdtemp(prefix="kw-bench-serve-"))
        for server, path in routes.values():
            wrk(bases[server], path, key, ids[:50], 2, args.connections, work, pin_wrk)  # warm-up
        # alternating rounds, the median of each: this machine's speed drifts between minutes
        runs: dict[str, list[dict]] = {name: [] for name in routes}
        for _ in range(args.rounds):
            for name, (server, path) in routes.items():
                runs[name].append(
                    wrk(bases[server], path, key, ids, args.duration, args.connections, work, pin_wrk)
                )
        results = {
            name: sorted(rs, key=lambda r: r["rps"])[len(rs) // 2] | {"all": [r["rps"] for r in rs]}
            for name, rs in runs.items()
        }
        in_app = _in_app_ms(bases["1 worker"])  # with 2 workers /metrics is one worker's only
    finally:
        for server in servers.values():
            server.terminate()
        for server in servers.values():
            server.wait(timeout=60)
    minimal = results[MINIMAL]
    template = {
        NBA: "/v1/customers/{customer_id}/next-best-actions",
        BARE: "/v1/bench/customers/{customer_id}/bare",
    }
    rows = []
    for name, r in results.items():
        server, path = routes[name]
        bare = results.get(f"bare route (same auth and validation, constant answer), {server}")
        in_app_ms = in_app.get(template[path]) if server == "1 worker" else None
        rows.append(
            [
                name,
                f"{r['rps']:,.0f}",
                " / ".join(f"{x:,.0f}" for x in r["all"]),
                f"{r['p50']:.1f}",
                f"{r['p99']:.1f}",
                r["non2xx"],
                "-" if in_app_ms is None else f"{in_app_ms:.2f}",
                f"{r['rps'] / minimal['rps']:.2f}",
                "-" if bare is None else f"{r['rps'] / bare['rps']:.2f}",
            ]
        )
    print(
        f"\n### API under load: wrk -t1 -c{args.connections} -d{args.duration}s x {args.rounds} rounds, "
        f"{len(scores):,} scored customers, {os.cpu_count()} cores, "
        f"{'server on core 0 (2 workers: cores 0-1), wrk on core 1' if pinned else 'not pinned'}; "
        "kundenwert on uvicorn's asyncio loop with httptools, the minimal app on uvloop\n"
    )
    print(
        table(
            [
                "endpoint",
                "requests/s (median)",
                "rounds",
                "p50 ms",
                "p99 ms",
                "non-2xx",
                "in-app mean ms",
                "vs minimal app",
                "vs bare route (same workers)",
            ],
            rows,
        )
    )
    one = results["next best actions, 1 worker"]
    aim = one["rps"] >= 0.7 * minimal["rps"] and one["p99"] <= 20
    print(
        f"\nAim of issue 16 (next best actions, 1 worker: >= 0.7x the minimal app, p99 <= 20 ms): "
        f"{one['rps'] / minimal['rps']:.2f}x, p99 {one['p99']:.1f} ms: {'met' if aim else 'not met'}."
    )
    print(
        f"Little's law: {args.connections} connections at the minimal app's rate keep each request "
        f"{1e3 * args.connections / minimal['rps']:.1f} ms in the system on average."
    )

    if args.batch_customers:
        print(flush=True)
        subprocess.run(
            [
                sys.executable,
                str(Path(__file__).with_name("batch_score.py")),
                "--db",
                str(db),
                "--customers",
                str(args.batch_customers),
            ],
            check=True,
        )


if __name__ == "__main__":
    main()
