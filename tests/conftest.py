"""Shared fixtures: stores on SQLite and on a private PostgreSQL cluster started for the test run."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

DATA = Path(__file__).parent / "data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb refuses to run as root: run the server as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(cmd)]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A private PostgreSQL cluster on 127.0.0.1 for this test session; yields its base URL."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries not found (Debian package postgresql); `make test` installs "
            "them via scripts/install-postgres.sh"
        )
    base = Path(tempfile.mkdtemp(prefix="kw-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    port = _free_port()
    subprocess.run(
        _as_postgres(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        ),
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    subprocess.run(
        _as_postgres(
            [str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-l", str(base / "log"), "start"]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]), capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    import psycopg

    name = f"kw_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{postgres_server}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    """An empty store on each backend."""
    from kundenwert.db.store import Store

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'kw.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    s = Store(url)
    yield s
    s.dispose()


@pytest.fixture
def sqlite_store(tmp_path: Path):
    from kundenwert.db.store import Store

    s = Store(f"sqlite:///{tmp_path / 'kw.db'}")
    yield s
    s.dispose()


@pytest.fixture(scope="session")
def imported_world(tmp_path_factory):
    """A factory: ``imported_world(n, seed)`` -> (frames, folder) of a sample world imported into
    SQLite, made once per (n, seed) for the whole session. Tests only read the frames."""
    from kundenwert.datasets.sample import generate_world, write_world
    from kundenwert.db.store import Store
    from kundenwert.features.importer import import_folder
    from kundenwert.features.snapshot import load_frames

    made: dict[tuple[int, int], tuple] = {}

    def make(n: int, seed: int):
        if (n, seed) not in made:
            folder = tmp_path_factory.mktemp(f"world-{n}-{seed}")
            write_world(generate_world(n, seed=seed), folder)
            store = Store(f"sqlite:///{folder / 'kw.db'}")
            import_folder(folder, store, mode="replace")
            made[(n, seed)] = (load_frames(store), folder)
            store.dispose()
        return made[(n, seed)]

    return make


# The small trained world: 3,000 customers (seed 5), every model with small boosters (30
# iterations) on the last two training cutoffs. Serving, the registry and the decision tests need a
# trained model of this world; they share one training instead of fitting the same five models
# three times.
@pytest.fixture(scope="session")
def small_config():
    """The experiment of the small trained world."""
    from kundenwert.models.specs import SPECS
    from kundenwert.training.config import ExperimentConfig

    # No gates: these tests need champions of a tiny world, not its quality (tests/models has that).
    return ExperimentConfig.model_validate(
        {
            "models": {m: {"params": {"max_iter": 30}, "gates": {}} for m in SPECS},
            "data": {"max_train_cutoffs": 2},
        }
    )


@pytest.fixture(scope="session")
def trained_small(imported_world, small_config):
    """``train_models`` of the small world with ``small_config``: the results by model (read only)."""
    from kundenwert.training.backtest import train_models

    frames, _ = imported_world(3_000, 5)
    return train_models(frames, small_config)


@pytest.fixture(scope="session")
def spark():
    """A local Spark session (``local[2]``) for the tests marked ``spark``; skipped with the reason
    when pyspark or Java 17+ is missing."""
    pytest.importorskip("pyspark", reason="pyspark is not installed: pip install 'kundenwert[spark]'")
    from kundenwert.errors import EngineUnavailable

    # with the PostgreSQL JDBC driver where installed, for the tests of a jdbc: --source
    from kundenwert.features.spark import JDBC_DRIVERS, spark_session

    jar = JDBC_DRIVERS["postgresql"][1]
    try:
        session = spark_session("local[2]", conf={"spark.jars": jar} if Path(jar).exists() else None)
    except EngineUnavailable as exc:
        pytest.skip(f"{exc} (`make test` runs scripts/install-java.sh)")
    yield session
    session.stop()
