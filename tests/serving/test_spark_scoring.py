"""Scoring on Spark equals the local engine's scores and propensities for every customer of the
small trained sample world, and can store its run as ``kundenwert score`` does."""

from __future__ import annotations

import pandas as pd
import pytest

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def scored_locally(imported_world, trained_small, small_config, tmp_path_factory):
    """The small world as Parquet, imported into SQLite, a registry holding its champions, and
    the local engine's (scores, propensity) of it, computed as ``run_scoring`` computes them."""
    from kundenwert.datasets.sample import generate_world, write_world
    from kundenwert.db.store import Store
    from kundenwert.features.importer import import_folder
    from kundenwert.features.snapshot import load_frames, snapshot
    from kundenwert.serving.catalog import load_catalog
    from kundenwert.serving.scoring import (
        as_of,
        load_champions,
        objecting_then_or_now,
        score_snapshot,
        status_at,
    )
    from kundenwert.training.run import publish

    home = tmp_path_factory.mktemp("kw-spark-score")
    folder = home / "world"
    write_world(generate_world(3_000, seed=5), folder, "parquet")  # the world the models learnt
    mp = pytest.MonkeyPatch()
    mp.setenv("KUNDENWERT_HOME", str(home))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv("KUNDENWERT_DATABASE_URL", raising=False)
    store = Store(f"sqlite:///{home / 'kw.db'}")
    import_folder(folder, store, mode="replace")
    publish(trained_small, small_config)
    frames = load_frames(store)
    t = as_of(frames)
    X = snapshot(frames, t)
    models, versions = load_champions()
    catalog = load_catalog()
    objecting = objecting_then_or_now(frames["consents"], t)
    scores, propensity = score_snapshot(X, status_at(frames, t), models, catalog, objecting)
    try:
        yield {
            "folder": folder,
            "store": store,
            "models": (models, versions),
            "catalog": catalog,
            "scores": scores.sort_index(),
            "propensity": propensity.sort_index(),
            "objecting": int(X.index.isin(objecting).sum()),
            "at": t,
        }
    finally:
        store.dispose()
        mp.undo()


@pytest.fixture(scope="module")
def scored_on_spark(spark, scored_locally, tmp_path_factory):
    from kundenwert.serving.spark import score_spark

    out = tmp_path_factory.mktemp("kw-spark-out")
    done = score_spark(spark, scored_locally["folder"], out, scored_locally["catalog"], shards=5)
    return out, done


def test_spark_scores_equal_local_for_every_customer(scored_locally, scored_on_spark):
    from kundenwert.serving.spark import read_scores

    out, done = scored_on_spark
    scores, propensity = read_scores(out, done["dtypes"])
    expected = scored_locally["scores"]
    assert done["at"] == scored_locally["at"] and done["not_profiled"] == scored_locally["objecting"] > 0
    assert len(scores) == done["customers"] == len(expected) > 2_000
    assert expected["p_alive"].notna().mean() > 0.5  # P(alive) from the one BG/NBD fit of all customers
    pd.testing.assert_frame_equal(scores, expected, rtol=1e-9)
    assert len(propensity) > 10_000 and {"response", "uplift"} <= set(propensity.columns)
    pd.testing.assert_frame_equal(propensity, scored_locally["propensity"], rtol=1e-9)


def test_spark_scoring_run_is_stored_as_kundenwert_score_stores_it(scored_locally, scored_on_spark):
    from kundenwert.serving.scores_store import read_scores as stored_scores
    from kundenwert.serving.scores_store import write_scores
    from kundenwert.serving.spark import store_run

    out, done = scored_on_spark
    engine = scored_locally["store"].engine
    run_id = store_run(scored_locally["store"], out, done)
    spark_scores, spark_propensity, run = stored_scores(engine)
    assert run["run_id"] == run_id and run["customers"] == len(scored_locally["scores"])
    assert run["models"] == scored_locally["models"][1]
    write_scores(engine, scored_locally["scores"], scored_locally["propensity"], done["at"], run["models"])
    local_scores, local_propensity, _ = stored_scores(engine)  # the local run, stored the same way
    pd.testing.assert_frame_equal(spark_scores.sort_index(), local_scores.sort_index(), rtol=1e-9)
    pd.testing.assert_frame_equal(spark_propensity.sort_index(), local_propensity.sort_index(), rtol=1e-9)
