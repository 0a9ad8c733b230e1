"""Benchmark: the next-best-action endpoint under load against a bare endpoint with the same auth
and validation and a constant answer (the reference, same app, same run; ``shared/benchmarks.md``):
wrk on loopback, one thread, 32 connections, 10 s per round, five rounds alternating between the
two routes (the median is kept: this machine's speed drifts from minute to minute); the server is
``kundenwert serve`` (uvicorn, asyncio loop, httptools, one worker, OMP_NUM_THREADS=1), pinned to
core 0 and wrk to core 1 (``--no-pin``: wherever the OS puts them). Customer ids rotate over 2,000
scored customers. Also reported: the mean time inside the app per request, from the service's own
latency histogram.

    python bench/serve.py [--db var/kundenwert.db] [--duration 10] [--connections 32] [--rounds 5]
                          [--no-pin] [--batch-customers 1000000]

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
    port = _port()
    server = subprocess.Popen(
        [*pin_server, sys.executable, "-m", "kundenwert.cli", "serve", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        import httpx

        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        base = f"http://127.0.0.1:{port}"
        work = Path(tempfile.mkdtemp(prefix="kw-bench-serve-"))
        routes = {
            "bare (same auth and validation, constant answer)": "/v1/bench/customers/{id}/bare?limit=3",
            "next best actions": "/v1/customers/{id}/next-best-actions?limit=3",
        }
        for path in routes.values():
            wrk(base, path, key, ids[:50], 2, args.connections, work, pin_wrk)  # warm-up
        # alternating rounds, the median of each: this machine's speed drifts between minutes
        runs: dict[str, list[dict]] = {name: [] for name in routes}
        for _ in range(args.rounds):
            for name, path in routes.items():
                runs[name].append(wrk(base, path, key, ids, args.duration, args.connections, work, pin_wrk))
        results = {
            name: sorted(rs, key=lambda r: r["rps"])[len(rs) // 2] | {"all": [r["rps"] for r in rs]}
            for name, rs in runs.items()
        }
        in_app = _in_app_ms(base)
    finally:
        server.terminate()
        server.wait(timeout=30)
    bare = results["bare (same auth and validation, constant answer)"]
    templates = {name: path.split("?")[0].replace("{id}", "{customer_id}") for name, path in routes.items()}
    rows = [
        [
            name,
            f"{r['rps']:,.0f}",
            " / ".join(f"{x:,.0f}" for x in r["all"]),
            f"{r['p50']:.1f}",
            f"{r['p99']:.1f}",
            r["non2xx"],
            f"{in_app.get(templates[name], float('nan')):.2f}",
            f"{r['rps'] / bare['rps']:.2f}",
        ]
        for name, r in results.items()
    ]
    print(
        f"\n### API under load: wrk -t1 -c{args.connections} -d{args.duration}s x {args.rounds} rounds, {len(scores):,} scored customers, {os.cpu_count()} cores, "
        f"{'server on core 0, wrk on core 1' if pinned else 'not pinned'}\n"
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
                "throughput vs bare",
            ],
            rows,
        )
    )
    print(
        f"\nLittle's law: {args.connections} connections at the bare route's rate keep each request "
        f"{1e3 * args.connections / bare['rps']:.1f} ms in the system on average."
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
