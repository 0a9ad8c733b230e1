"""``kundenwert score --engine spark``: the snapshot on Spark, then scoring through ``mapInPandas``
with the champion models broadcast, scores and propensities written as Parquet (and, when asked,
the store's scoring run).

What in ``score_snapshot`` is not per customer: P(alive) comes from a BG/NBD fitted over all
scored customers. Its fit needs only the distinct ``(frequency, recency, T, monetary_value)`` rows
with their counts (the sufficient statistics): one ``groupBy`` brings those to the driver, the
model is fitted there with the counts as ``sample_weight`` (the same parameters as the local fit,
which fits on the same sorted distinct rows) and broadcast with the champions. Everything else
(status, objection, the models' scores, reasons, eligibility and propensities) is per customer.

The champions are loaded once on the driver exactly as ``kundenwert score`` loads them (the
registry's skops files, trusted types only); Spark pickles them to its own workers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kundenwert.errors import ConfigurationError, ModelFitError
from kundenwert.features.labels import customer_status
from kundenwert.features.snapshot import snapshot_shard
from kundenwert.features.snapshot_spec import _utc
from kundenwert.features.spark import (
    Facts,
    as_dtypes,
    default_shards,
    empty_shard,
    facts_of,
    for_spark,
    frames_of,
    read_tables,
    shard_rows,
    spark_schema,
    spec_of,
    typed_tables,
)
from kundenwert.serving.catalog import Catalog
from kundenwert.serving.scoring import (
    as_of,
    fit_p_alive_model,
    load_champions,
    missing_models,
    objecting_then_or_now,
    pairs_of,
    per_action_spec,
    score_snapshot,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

STATUS, OBJECTING = "_status", "_objecting"
BTYD_KEYS = ("frequency", "recency", "T", "monetary_value")


def _latest(facts: Facts) -> dict[str, pd.DataFrame]:
    """The latest purchase and contact in the shape ``as_of`` reads."""
    out = {}
    for name, col in (("purchases", "purchased_at"), ("contacts", "contacted_at")):
        us = facts.latest[name]
        t = pd.NaT if us is None else pd.Timestamp(int(us), unit="us", tz="UTC")
        out[name] = pd.DataFrame({col: pd.Series([t], dtype="datetime64[us, UTC]")})
    return out


def _margins(facts: Facts) -> dict[str, float]:
    """``category_margins`` from the sums of ``facts_of`` (only its names are checked here)."""
    return {c: float(m / a) for c, (m, a) in facts.categories.items() if m is not None and a}


def score_spark(
    spark: SparkSession,
    folder: Path | str,
    out: Path | str,
    catalog: Catalog,
    at: Any = None,
    *,
    shards: int | None = None,
    models: tuple[dict[str, object], dict[str, str]] | None = None,
    progress: Any = None,
) -> dict:
    """Score every customer of the Parquet ``folder`` with the registry's champions on Spark:
    ``out/scores`` (one row per scored customer) and ``out/propensity`` (per customer, action and
    channel the customer is eligible for) as Parquet. Returns what ``run_scoring`` returns but the
    run id, with the local dtypes of both outputs (``dtypes``) to read them back exactly."""
    say = progress or (lambda _m: None)
    say("reading the Parquet tables")
    typed, layout = typed_tables(read_tables(spark, folder))
    facts = facts_of(typed)
    t = as_of(_latest(facts), at)
    margins = _margins(facts)
    catalog.check_names(sorted(margins))
    say("loading the champion models")
    models_, versions = models or load_champions()
    missing = missing_models(models_)
    if not models_:
        raise ConfigurationError(
            f"no champion for any model ({', '.join(missing)}): run `kundenwert train` first"
        )
    needed = per_action_spec().name
    if needed not in models_:
        raise ConfigurationError(
            f"no champion for {needed}: every suggestion needs its per-action propensities "
            f"(champions: {', '.join(models_)}); run `kundenwert train` on data with contacts"
        )
    spec = spec_of(typed, layout, facts=facts)
    shards = shards or default_shards(spark, typed["customers"])
    spark.conf.set("spark.sql.shuffle.partitions", str(shards))

    def snap(pdf: pd.DataFrame) -> pd.DataFrame:
        frames = frames_of(pdf, layout)
        X = snapshot_shard(frames, t, spec)
        status = customer_status(frames["customers"], frames["purchases"], t)
        objecting = objecting_then_or_now(frames["consents"], t)
        return X.assign(
            **{
                STATUS: status.reindex(X.index).fillna("new").astype("str").to_numpy(),
                OBJECTING: X.index.isin(objecting),
            }
        ).reset_index()

    snap_dtypes = snap(empty_shard(layout)).dtypes
    run_snap = lambda pdf: for_spark(snap(pdf))  # noqa: E731
    say(f"snapshot at {t:%Y-%m-%d} in {shards} shards")
    X_all = shard_rows(typed, layout, shards).groupBy("_shard").applyInPandas(run_snap, _schema(snap_dtypes))
    X_all = X_all.persist()
    from pyspark.sql import functions as F

    not_profiled = X_all.where(F.col(OBJECTING)).count()
    X = X_all.where(~F.col(OBJECTING))
    say("fitting BG/NBD for P(alive) on the distinct rows")
    counts = X.groupBy(*BTYD_KEYS).count().toPandas()
    p_alive = None  # unknown for everyone when the data supports no fit, as locally
    with contextlib.suppress(ModelFitError):
        p_alive = fit_p_alive_model(counts[list(BTYD_KEYS)].astype("float64"), counts["count"].to_numpy())

    def score_part(
        frame: pd.DataFrame, models: dict[str, object], btyd: object
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        Xp = as_dtypes(frame, snap_dtypes).set_index("customer_id")
        Xp.index = pd.Index(Xp.index, name="customer_id", dtype="str")
        status = Xp.pop(STATUS)
        Xp = Xp.drop(columns=[OBJECTING])
        return score_snapshot(
            Xp, status, models, catalog, reasons=True, fit_p_alive=False, p_alive_model=btyd
        )

    say("scoring (the output schema from a few customers on the driver)")
    s0, p0 = score_part(X.limit(50).toPandas(), models_, p_alive)
    s_dtypes, p_dtypes = s0.reset_index().dtypes, p0.reset_index().dtypes
    width = {f"s__{c}": d for c, d in s_dtypes.items()} | {f"p__{c}": d for c, d in p_dtypes.items()}
    out_dtypes = pd.Series({"_part": np.dtype(object), **width})
    out_dtypes.iloc[0] = pd.StringDtype(na_value=np.nan)
    m_b = spark.sparkContext.broadcast(models_)
    # lifetimes' fitters do not pickle: the workers get the parameters and rebuild the predictor
    pa_b = spark.sparkContext.broadcast(None if p_alive is None else (p_alive.params_, p_alive.get_params()))

    def score_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from kundenwert.models.btyd import BTYDModel

        btyd = None if pa_b.value is None else BTYDModel.from_params(pa_b.value[0], **pa_b.value[1])
        for frame in batches:
            if frame.empty:
                continue
            scores, propensity = score_part(frame, m_b.value, btyd)
            yield _long(scores, propensity, out_dtypes)

    both = X.mapInPandas(score_batches, _schema(out_dtypes)).persist()
    out = str(out)
    say("writing the scores and propensities")
    (
        both.where(F.col("_part") == "s")
        .select(*[F.col(f"`s__{c}`").alias(c) for c in s_dtypes.index])
        .write.mode("overwrite")
        .parquet(f"{out}/scores")
    )
    (
        both.where(F.col("_part") == "p")
        .select(*[F.col(f"`p__{c}`").alias(c) for c in p_dtypes.index])
        .write.mode("overwrite")
        .parquet(f"{out}/propensity")
    )
    customers = both.where(F.col("_part") == "s").count()
    both.unpersist()
    X_all.unpersist()
    return {
        "at": t,
        "customers": customers,
        "not_profiled": not_profiled,
        "pairs": len(pairs_of(catalog)),
        "models": versions,
        "missing_models": missing,
        "unavailable_actions": catalog.unavailable(versions, margins),
        "dtypes": {"scores": s_dtypes, "propensity": p_dtypes},
        "shards": shards,
        "p_alive_params": None if p_alive is None else p_alive.params_,
    }


def _schema(dtypes: pd.Series) -> str:
    return spark_schema(pd.DataFrame(columns=dtypes.index).astype(dtypes))


def _long(scores: pd.DataFrame, propensity: pd.DataFrame, dtypes: pd.Series) -> pd.DataFrame:
    """Scores and propensities of one batch in one frame: ``_part`` says which (``s``, ``p``)."""
    s = scores.reset_index().add_prefix("s__")
    p = propensity.reset_index().add_prefix("p__")
    s.insert(0, "_part", "s")
    p.insert(0, "_part", "p")
    frame = pd.concat([s, p], ignore_index=True)
    for c in dtypes.index:
        if c not in frame.columns:
            frame[c] = None
    return for_spark(frame[list(dtypes.index)])


def read_scores(out: Path | str, dtypes: dict[str, pd.Series]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scores, propensity) written by ``score_spark``, indexed and typed as ``score_snapshot``
    gives them (rows in index order)."""
    scores = (
        as_dtypes(pd.read_parquet(f"{out}/scores"), dtypes["scores"]).set_index("customer_id").sort_index()
    )
    scores.index = pd.Index(scores.index, name="customer_id", dtype="str")
    keys = ["customer_id", "action_id", "channel"]
    prop = as_dtypes(pd.read_parquet(f"{out}/propensity"), dtypes["propensity"])
    prop = prop.set_index(keys).sort_index()
    return scores, prop


def store_run(store: Any, out: Path | str, done: dict) -> str:
    """The scoring run written by ``score_spark`` into the store, as ``kundenwert score`` stores
    one (``write_scores``): the scores come to the driver here, the store being one database."""
    from kundenwert.serving.scores_store import write_scores

    scores, propensity = read_scores(out, done["dtypes"])
    return write_scores(store.engine, scores, propensity, done["at"], done["models"])


__all__ = ["read_scores", "score_spark", "store_run", "_utc"]
