"""`--engine spark` on the command line: plain errors without Spark, and the snapshot command
giving the local command's snapshot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


def _run(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUNDENWERT_HOME": str(home), "COLUMNS": "200"}
    env.pop("KUNDENWERT_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "kundenwert.cli", *args], capture_output=True, text=True, env=env
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["snapshot", "--cutoff", "2025-01-01", "--out", "x", "--engine", "spark"],
            "a folder of Parquet tables or a JDBC URL: give it with --source",
        ),
        (
            ["snapshot", "--cutoff", "2025-01-01", "--out", "x", "--engine", "dask"],
            "--engine must be local or spark",
        ),
        (["score", "--engine", "spark", "--source", "."], "give a folder with --out DIR"),
        (["score", "--engine", "spark", "--source", "no-such-folder", "--out", "o"], "does not exist"),
        (["score", "--out", "o"], "--out and --store are for --engine spark"),
    ],
)
def test_engine_options_are_checked_before_any_work(tmp_path, args, message):
    r = _run(args, tmp_path)
    assert r.returncode == 2 and message in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_the_package_imports_and_refuses_the_engine_plainly_without_pyspark(tmp_path):
    code = (
        "import sys; sys.modules['pyspark'] = None\n"  # as if the extra were not installed
        "import kundenwert.cli, kundenwert.features.spark, kundenwert.serving.spark\n"
        "from kundenwert.errors import EngineUnavailable\n"
        "from kundenwert.features.spark import spark_session\n"
        "try:\n    spark_session()\nexcept EngineUnavailable as e:\n    print(e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "the spark engine needs pyspark: pip install 'kundenwert[spark]'" in r.stdout


def test_an_old_or_missing_java_is_named_with_the_fix(monkeypatch):
    pytest.importorskip("pyspark", reason="pyspark is not installed: pip install 'kundenwert[spark]'")
    from kundenwert.errors import EngineUnavailable
    from kundenwert.features import spark

    for found, said in ((None, "no java found"), (11, "found Java 11")):
        monkeypatch.setattr(spark, "java_major", lambda found=found: found)
        with pytest.raises(
            EngineUnavailable, match=f"Java 17\\+ not found for Spark \\({said}.*default-jre-headless"
        ):
            spark.spark_session()


@pytest.mark.spark
@pytest.mark.slow
def test_snapshot_command_on_spark_writes_the_local_commands_snapshot(tmp_path):
    pytest.importorskip("pyspark", reason="pyspark is not installed: pip install 'kundenwert[spark]'")
    from kundenwert.features.spark import java_major

    if (java_major() or 0) < 17:
        pytest.skip("Java 17+ not found (`make test` runs scripts/install-java.sh)")
    world = tmp_path / "world"
    assert (
        _run(["sample", str(world), "-n", "600", "--seed", "4", "--format", "parquet"], tmp_path).returncode
        == 0
    )
    assert _run(["import", str(world), "--mode", "replace"], tmp_path).returncode == 0
    local = _run(["snapshot", "--cutoff", "2025-09-01", "--out", str(tmp_path / "local.parquet")], tmp_path)
    assert local.returncode == 0, local.stderr
    args = ["snapshot", "--cutoff", "2025-09-01", "--out", str(tmp_path / "spark"), "--engine", "spark"]
    r = _run([*args, "--source", str(world), "--master", "local[1]"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    expected = pd.read_parquet(tmp_path / "local.parquet")
    got = pd.read_parquet(tmp_path / "spark").set_index("customer_id").sort_index()
    assert "customers x 82 features" in r.stdout and len(got) == len(expected) > 400
    pd.testing.assert_frame_equal(got, expected, rtol=1e-9, check_dtype=False, check_index_type=False)
