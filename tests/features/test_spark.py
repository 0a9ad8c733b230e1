"""The snapshot on Spark equals the local engine's for every customer of a sample world."""

from __future__ import annotations

import pandas as pd
import pytest

pytestmark = [pytest.mark.spark, pytest.mark.slow]

CUTOFF = "2025-06-01"


@pytest.fixture(scope="module")
def parquet_world(tmp_path_factory):
    """A 2,000-customer sample world as Parquet (the folder the spark engine reads) and its frames
    imported into SQLite through ``kundenwert import`` (what the local engine reads)."""
    from kundenwert.datasets.sample import generate_world, write_world
    from kundenwert.db.store import Store
    from kundenwert.features.importer import import_folder
    from kundenwert.features.snapshot import load_frames

    folder = tmp_path_factory.mktemp("spark-world")
    write_world(generate_world(2_000, seed=3), folder, "parquet")
    store = Store(f"sqlite:///{folder / 'kw.db'}")
    import_folder(folder, store, mode="replace")
    frames = load_frames(store)
    store.dispose()
    return folder, frames


@pytest.mark.parametrize("shards", [3, 7])
def test_spark_snapshot_equals_local_for_every_customer(spark, parquet_world, tmp_path, shards):
    from kundenwert.features.snapshot import snapshot
    from kundenwert.features.spark import read_snapshot, snapshot_spark

    folder, frames = parquet_world
    frame, dtypes, left_out = snapshot_spark(spark, folder, CUTOFF, shards=shards)
    frame.write.parquet(str(tmp_path / "snap"))
    got = read_snapshot(tmp_path / "snap", dtypes)
    expected = snapshot(frames, CUTOFF)
    assert left_out == 0 and len(got) > 1_000
    pd.testing.assert_frame_equal(got, expected, rtol=1e-9)


def test_spark_snapshot_leaves_out_objecting_customers_as_the_local_command(spark, parquet_world, tmp_path):
    from kundenwert.features.snapshot import snapshot, without_objecting
    from kundenwert.features.spark import read_snapshot, snapshot_spark

    folder, frames = parquet_world
    now = pd.Timestamp("2026-01-01", tz="UTC")
    kept, objecting = without_objecting(frames, now)
    assert objecting > 0  # the sample world has customers who object
    frame, dtypes, left_out = snapshot_spark(spark, folder, CUTOFF, shards=4, drop_objecting=now)
    frame.write.parquet(str(tmp_path / "snap"))
    got = read_snapshot(tmp_path / "snap", dtypes)
    assert left_out == objecting
    pd.testing.assert_frame_equal(got, snapshot(kept, CUTOFF), rtol=1e-9)


def test_spark_engine_refuses_a_folder_without_parquet_tables(spark, tmp_path):
    from kundenwert.errors import InputFileError
    from kundenwert.features.spark import snapshot_spark

    (tmp_path / "customers.csv").write_text("customer_id,created_at,customer_type\n")
    with pytest.raises(InputFileError, match="--format parquet"):
        snapshot_spark(spark, tmp_path, CUTOFF)


def test_spark_snapshot_reads_a_jdbc_source_as_the_local_engine_reads_the_store(
    spark, parquet_world, postgres_url, tmp_path
):
    """The contract tables in a PostgreSQL database (typed columns: timestamps, booleans,
    numbers), read through Spark's JDBC source: the snapshot equals the local engine's."""
    from pathlib import Path

    import sqlalchemy as sa

    from kundenwert.features.snapshot import snapshot
    from kundenwert.features.spark import JDBC_DRIVERS, read_snapshot, snapshot_spark

    if not Path(JDBC_DRIVERS["postgresql"][1]).exists():
        pytest.skip("the PostgreSQL JDBC driver is not installed (scripts/install-java.sh installs it)")
    folder, frames = parquet_world
    engine = sa.create_engine(postgres_url)
    for path in sorted(folder.glob("*.parquet")):
        pd.read_parquet(path).to_sql(path.stem, engine, index=False)  # typed columns, as the file's
    engine.dispose()
    url = sa.make_url(postgres_url)
    jdbc = f"jdbc:postgresql://{url.host}:{url.port}/{url.database}?user={url.username}"
    frame, dtypes, _ = snapshot_spark(spark, jdbc, CUTOFF, shards=3)
    frame.write.parquet(str(tmp_path / "snap"))
    got = read_snapshot(tmp_path / "snap", dtypes)
    pd.testing.assert_frame_equal(got, snapshot(frames, CUTOFF), rtol=1e-9)


def test_a_jdbc_source_without_the_contract_tables_is_refused_by_name(spark, postgres_url):
    import sqlalchemy as sa

    from kundenwert.errors import EngineUnavailable, InputFileError
    from kundenwert.features.spark import read_jdbc_tables

    url = sa.make_url(postgres_url)
    jdbc = f"jdbc:postgresql://{url.host}:{url.port}/{url.database}?user={url.username}&password=secret"
    with pytest.raises(InputFileError, match="has no table customers") as refused:
        read_jdbc_tables(spark, jdbc)
    assert "secret" not in str(refused.value) and "password=***" in str(refused.value)
    with pytest.raises(EngineUnavailable, match="reading table customers"):
        read_jdbc_tables(spark, f"jdbc:postgresql://{url.host}:1/{url.database}?user=x")
