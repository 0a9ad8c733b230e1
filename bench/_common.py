"""Helpers shared by the benchmarks: timing (median after a warm-up), peak memory, Markdown tables."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def timed(fn: Callable[[], object], repeat: int, warmup: bool = True) -> tuple[float, object]:
    """Median seconds over ``repeat`` runs (after one warm-up run when asked) and the last result."""
    if warmup:
        fn()
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def run_child(code: str) -> dict:
    """Run a benchmark in a fresh interpreter (its peak memory is its own); it prints one JSON line."""
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def world_store(customers: int, db: str | None, prefix: str, seed: int = 2) -> Path:
    """``db`` when given, else a new sample world imported into SQLite (through the CLI, as a user
    would), returned as the database file."""
    if db:
        return Path(db)
    work = Path(tempfile.mkdtemp(prefix=prefix))
    path = work / "kw.db"
    cmd = [sys.executable, "-m", "kundenwert.cli"]
    world = str(work / "world")
    subprocess.run(
        [*cmd, "sample", world, "-n", str(customers), "--seed", str(seed)], check=True, capture_output=True
    )
    subprocess.run(
        [*cmd, "import", world, "--mode", "replace"],
        check=True,
        capture_output=True,
        env={**os.environ, "KUNDENWERT_DATABASE_URL": f"sqlite:///{path}"},
    )
    return path


class Neighbour:
    """A second kundenwert job beside the benchmark (``shared/benchmarks.md``, "A busy neighbour"):
    ``cmd`` run over and over in its own process group from ``start()`` until ``stop()``, which
    ends that group (only the processes it started). ``warmup`` seconds after the start let it
    reach its steady work before anything is timed."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None, warmup: float = 5.0) -> None:
        self.cmd, self.env, self.warmup = cmd, env, warmup
        self.proc: subprocess.Popen | None = None

    def start(self) -> Neighbour:
        loop = "while true; do " + " ".join(_quoted(c) for c in self.cmd) + " >/dev/null 2>&1; done"
        self.proc = subprocess.Popen(
            ["bash", "-c", loop], env={**os.environ, **(self.env or {})}, start_new_session=True
        )
        time.sleep(self.warmup)
        return self

    def stop(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the loop and its job only
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Neighbour:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _quoted(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
