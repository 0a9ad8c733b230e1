"""The snapshot on Spark: contract tables from a folder of Parquet files, the snapshot's shard
function run through ``groupBy(shard).applyInPandas``, Parquet out.

The steps, each a Spark job that never brings the input to the driver:

1. ``read_parquet_tables``: the contract tables of a folder as ``kundenwert sample --format parquet``
   writes it (``customers.parquet``, ...; a file or a folder of part files each);
2. ``typed_tables``: every column parsed by the contract's own parser (``parse_column``, in
   ``mapInArrow`` over record batches), so values are exactly what ``kundenwert import`` stores;
   timestamps travel as integer microseconds (UTC), purchases without a category take their
   product's (as the import does);
3. ``spec_of``: the column sets fixed for every shard (categories, channels, attributes) from small
   distinct queries, as ``spec_for`` computes them locally;
4. ``snapshot_spark``: all rows of each customer brought together by a stable hash of
   ``customer_id`` into shards (one long frame of typed slots, tagged by table), and per shard
   ``snapshot_shard``; the output schema comes from the local snapshot's own dtypes.

The result equals the local engine's for every customer (``tests/features/test_spark.py``).
pyspark is imported only inside these functions: the package imports without it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from kundenwert.errors import EngineUnavailable, InputFileError
from kundenwert.features.contract import MARKETING_CHANNELS, TABLES
from kundenwert.features.parsing import as_text, missing_column, number_from_text, parse_column
from kundenwert.features.snapshot import FEATURE_COLUMNS, snapshot_shard
from kundenwert.features.snapshot_spec import Frames, SnapshotConfig, SnapshotSpec, _utc

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkFrame
    from pyspark.sql import SparkSession

SPARK_EXTRA = "pip install 'kundenwert[spark]'"
READ_TABLES = ("customers", "purchases", "contacts", "consents", "complaints", "offers")
_KIND_SLOT = {"id": "s", "text": "s", "timestamp": "t", "number": "d", "int": "i", "bool": "b"}


# ------------------------------------------------------------------------------------------ session


def java_major(java: str | None = None) -> int | None:
    """The major version of the ``java`` Spark would start (``JAVA_HOME`` first), or None."""
    home = os.environ.get("JAVA_HOME")
    exe = java or (str(Path(home) / "bin" / "java") if home else None) or shutil.which("java")
    if not exe or not Path(exe).exists():
        return None
    try:
        done = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def spark_session(
    master: str | None = None, app_name: str = "kundenwert", conf: dict[str, str] | None = None
) -> SparkSession:
    """A Spark session on ``master`` (default: ``KUNDENWERT_SPARK_MASTER``, ``local[2]``), with
    ``conf`` (Spark settings, e.g. ``spark.driver.memory``; before the session starts).

    Raises ``EngineUnavailable`` when pyspark or Java 17+ is missing. The session reads times in
    UTC and its Python workers run this interpreter (unless ``PYSPARK_PYTHON`` says otherwise).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise EngineUnavailable(f"the spark engine needs pyspark: {SPARK_EXTRA}") from None
    major = java_major()
    if major is None or major < 17:
        found = "no java found" if major is None else f"found Java {major}"
        raise EngineUnavailable(
            f"Java 17+ not found for Spark ({found}; JAVA_HOME or java on PATH): install Debian's "
            "default-jre-headless (scripts/install-java.sh does) or set JAVA_HOME"
        )
    from kundenwert.settings import get_settings

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = (
        builder.master(master or get_settings().spark_master)
        .appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.python.worker.reuse", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


# -------------------------------------------------------------------------------------------- input


def _check_required(name: str, df: SparkFrame, what: str) -> None:
    """``InputFileError`` naming ``what`` when ``df`` lacks a required column of table ``name``."""
    missing = [c.name for c in TABLES[name].columns if c.required and c.name not in df.columns]
    if missing:
        raise InputFileError(
            f"{what} lacks the required column(s) {', '.join(missing)}: add them (see the CRM data contract)"
        )


def read_parquet_tables(spark: SparkSession, folder: Path | str) -> dict[str, SparkFrame]:
    """The contract tables in ``folder`` (``<table>.parquet``, a file or a folder of parts), as
    Spark frames of the file's own columns; checks that ``customers`` and every required column
    are there."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"input folder {str(folder)!r} does not exist or is not a folder")
    found = {n: folder / f"{n}.parquet" for n in (*READ_TABLES, "products")}
    found = {n: p for n, p in found.items() if p.exists()}
    if "customers" not in found:
        csv = " (it holds CSV files: write them with --format parquet)" if any(folder.glob("*.csv")) else ""
        raise InputFileError(
            f"{folder} has no customers.parquet{csv}: the spark engine reads the contract tables as "
            "Parquet, one <table>.parquet per table as `kundenwert sample DIR --format parquet` writes"
        )
    tables = {}
    for name, path in found.items():
        df = spark.read.parquet(str(path))
        _check_required(name, df, f"{path.name} (table {name})")
        tables[name] = df
    return tables


JDBC_DRIVERS = {  # the JDBC URL's scheme -> (driver class, Debian's jar of it)
    "postgresql": ("org.postgresql.Driver", "/usr/share/java/postgresql.jar"),
}


def is_jdbc(source: Path | str) -> bool:
    return str(source).startswith("jdbc:")


def jdbc_conf(source: Path | str) -> dict[str, str]:
    """Spark settings a JDBC ``source`` needs before its session starts: the driver's jar
    (``KUNDENWERT_SPARK_JARS``, else Debian's ``libpostgresql-jdbc-java`` one); none for a folder."""
    if not is_jdbc(source):
        return {}
    from kundenwert.settings import get_settings

    scheme = str(source)[len("jdbc:") :].split(":", 1)[0]
    if scheme not in JDBC_DRIVERS:
        raise InputFileError(
            f"--source {_redacted(str(source))}: JDBC sources of {scheme!r} are not supported "
            f"(supported: {', '.join(sorted(JDBC_DRIVERS))})"
        )
    jars = get_settings().spark_jars or JDBC_DRIVERS[scheme][1]
    missing = [j for j in jars.split(",") if j and not Path(j).exists()]
    if missing:
        raise EngineUnavailable(
            f"the JDBC driver {', '.join(missing)} is missing: install Debian's libpostgresql-jdbc-java "
            "(scripts/install-java.sh does) or name the jar in KUNDENWERT_SPARK_JARS"
        )
    return {"spark.jars": jars}


def _redacted(url: str) -> str:
    """A JDBC URL without its password (user=..&password=.. in the query string)."""
    import re

    return re.sub(r"(password=)[^&;]*", r"\1***", url, flags=re.IGNORECASE)


def read_tables(spark: SparkSession, source: Path | str) -> dict[str, SparkFrame]:
    """The contract tables of ``source``: a folder of Parquet files (``read_parquet_tables``) or
    a JDBC URL of a database holding them (``read_jdbc_tables``)."""
    return read_jdbc_tables(spark, str(source)) if is_jdbc(source) else read_parquet_tables(spark, source)


def read_jdbc_tables(spark: SparkSession, url: str) -> dict[str, SparkFrame]:
    """The contract tables of the database at the JDBC ``url`` (tables named as the contract's:
    ``customers``, ``purchases``, ...; any column types the contract's parser reads: text as in
    CSV files, or typed), read by Spark's JDBC source; the password may come from
    ``KUNDENWERT_JDBC_PASSWORD`` instead of the URL. Checks ``customers`` and every required column."""
    scheme = url[len("jdbc:") :].split(":", 1)[0]
    props = {"driver": JDBC_DRIVERS[scheme][0]}
    password = os.environ.get("KUNDENWERT_JDBC_PASSWORD")
    if password:
        props["password"] = password
    shown = _redacted(url)
    tables = {}
    for name in (*READ_TABLES, "products"):
        try:
            df = spark.read.jdbc(url, name, properties=props)
            df.schema  # noqa: B018  resolved here: a missing table or a refused connection raise now
        except Exception as e:  # py4j's Java exception: its message says what
            text = str(e)
            if "does not exist" in text or "not found" in text.lower():
                if name == "customers":
                    raise InputFileError(
                        f"{shown} has no table customers: the contract's tables are needed"
                    ) from None
                continue
            lines = text.splitlines() or [type(e).__name__]
            first = next((line for line in lines if "Exception" in line), lines[0])
            raise EngineUnavailable(
                f"reading table {name} from {shown}: {_redacted(first.strip())}"
            ) from None
        _check_required(name, df, f"table {name} of {shown}")
        tables[name] = df
    return tables


@dataclass(frozen=True)
class Layout:
    """How the typed tables travel in one long frame: per table, column -> (slot, kind).

    Columns of one kind share slots across tables (``s0`` text, ``t0`` times in microseconds,
    ``d0`` numbers, ``i0`` integers, ``b0`` booleans), so a row carries few empty cells.
    """

    columns: dict[str, dict[str, tuple[str, str]]]
    attribute_kinds: dict[str, str] = field(default_factory=dict)

    @property
    def slots(self) -> dict[str, str]:
        """Every slot with its kind, in a fixed order."""
        out: dict[str, str] = {}
        for cols in self.columns.values():
            for slot, kind in cols.values():
                out.setdefault(slot, _KIND_SLOT[kind])
        return dict(sorted(out.items()))


def _spark_type(kind: str) -> str:
    return {"s": "string", "t": "bigint", "d": "double", "i": "bigint", "b": "boolean"}[_KIND_SLOT[kind]]


def _table_columns(name: str, present: list[str], attribute_kinds: dict[str, str]) -> dict[str, str]:
    """column -> kind of what a snapshot reads of ``name`` (customers: every contract column
    and the custom attributes)."""
    table = TABLES[name]
    wanted = (
        table.column_names if name == "customers" else FEATURE_COLUMNS.get(name, ("product_id", "category"))
    )
    kinds: dict[str, str] = {c: table.column(c).kind for c in wanted}
    if name == "customers":
        kinds |= {a: ("number" if k == "number" else "text") for a, k in sorted(attribute_kinds.items())}
    return kinds


def attribute_kinds(customers: SparkFrame) -> dict[str, str]:
    """The kind of each custom attribute column, decided as the import decides it (a number when
    every value of the whole column is one and none has a leading zero), from one pass whose
    partitions report three flags per text column."""
    from pyspark.sql.types import BooleanType, StringType, StructField, StructType

    contract = set(TABLES["customers"].column_names)
    fields = {f.name: f.dataType for f in customers.schema.fields if f.name not in contract}
    kinds = {
        n: "number"
        for n, t in fields.items()
        if t.typeName() in ("integer", "long", "short", "byte", "float", "double")
    }
    texts = [n for n in fields if n not in kinds]
    if not texts:
        return kinds

    def flags(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for name in texts:
                col = as_text(pa.chunked_array([batch.column(name)]))
                numbers, bad = number_from_text(col)
                zero = bool(pc.any(pc.match_substring_regex(col, r"^\s*[-+]?0\d")).as_py() or False)
                yield pa.record_batch(
                    [
                        pa.array([name]),
                        pa.array([bool(bad.any())]),
                        pa.array([bool(numbers.notna().any())]),
                        pa.array([zero]),
                    ],
                    names=["name", "bad", "number", "zero"],
                )

    schema = StructType(
        [
            StructField("name", StringType()),
            *(StructField(c, BooleanType()) for c in ("bad", "number", "zero")),
        ]
    )
    rows = (
        customers.select(*texts)
        .mapInArrow(flags, schema)
        .groupBy("name")
        .agg({"bad": "max", "number": "max", "zero": "max"})
        .collect()
    )
    seen = {r["name"]: r for r in rows}
    for name in texts:
        r = seen.get(name)
        number = r is not None and not r["max(bad)"] and r["max(number)"] and not r["max(zero)"]
        kinds[name] = "number" if number else "text"
    return kinds


def _typed_batch(batch: pa.RecordBatch, kinds: dict[str, str]) -> dict[str, pa.Array]:
    """One record batch parsed column by column into the contract types, as Arrow arrays of
    the slot types (missing columns: missing values, or the contract's default)."""
    out: dict[str, pa.Array] = {}
    n = batch.num_rows
    for name, kind in kinds.items():
        if name in batch.schema.names:
            series, _, _ = parse_column(
                pa.chunked_array([batch.column(name)], type=batch.schema.field(name).type), kind
            )
        else:
            series = missing_column(_column(name, kind), n)
        out[name] = _to_arrow(series.reset_index(drop=True), kind)
    return out


def _column(name: str, kind: str):  # a contract column, or a custom attribute's stand-in
    from kundenwert.features.contract import Column

    for t in TABLES.values():
        if name in t.column_names:
            return t.column(name)
    return Column(name, kind)  # type: ignore[arg-type]


def _to_arrow(s: pd.Series, kind: str) -> pa.Array:
    arr = _arrow_of(s, kind)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr  # Arrow-backed text


def _arrow_of(s: pd.Series, kind: str) -> pa.Array | pa.ChunkedArray:
    if kind == "timestamp":
        na = s.isna().to_numpy()
        return pa.array(
            np.where(na, 0, s.array.asi8 if len(s) else np.zeros(0, np.int64)), pa.int64(), mask=na
        )
    if kind in ("number",):
        return pa.array(s.to_numpy(dtype="float64", na_value=np.nan), pa.float64(), from_pandas=True)
    if kind == "int":
        return pa.array(s.astype("Int64"), pa.int64(), from_pandas=True)
    if kind == "bool":
        return pa.array(s.astype("boolean"), pa.bool_(), from_pandas=True)
    return pa.array(s.astype("str"), pa.string(), from_pandas=True)


def typed_tables(tables: dict[str, SparkFrame]) -> tuple[dict[str, SparkFrame], Layout]:
    """Every table with the columns a snapshot reads, typed by the contract's parser; purchases
    with their product's category where they have none; and the ``Layout`` of the shard frames."""
    from pyspark.sql import functions as F

    kinds_attr = attribute_kinds(tables["customers"])
    typed: dict[str, SparkFrame] = {}
    columns: dict[str, dict[str, tuple[str, str]]] = {}
    for name, df in tables.items():
        kinds = _table_columns(name, df.columns, kinds_attr)
        schema = ", ".join(f"`{c}` {_spark_type(k)}" for c, k in kinds.items())
        keep = [c for c in kinds if c in df.columns]
        if name == "purchases" and "product_id" in df.columns and "product_id" not in kinds:
            keep.append("product_id")
            kinds_read = {**kinds, "product_id": "id"}
            schema += ", `product_id` string"
        else:
            kinds_read = kinds

        def parse(batches: Iterator[pa.RecordBatch], kinds_read=kinds_read) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                cols = _typed_batch(batch, kinds_read)
                yield pa.record_batch(list(cols.values()), names=list(cols))

        typed[name] = df.select(*[F.col(f"`{c}`") for c in keep]).mapInArrow(parse, schema)
        if name != "products":
            counters: dict[str, int] = {}
            slots = {}
            for c, k in kinds.items():
                prefix = _KIND_SLOT[k]
                slots[c] = (f"{prefix}{counters.get(prefix, 0)}", k)
                counters[prefix] = counters.get(prefix, 0) + 1
            columns[name] = slots
    if "purchases" in typed:
        p = typed["purchases"]
        if "products" in typed and "product_id" in p.columns:
            prod = typed["products"].select(F.col("product_id"), F.col("category").alias("_product_category"))
            p = p.join(prod, on="product_id", how="left").withColumn(
                "category", F.coalesce(F.col("category"), F.col("_product_category"))
            )
        typed["purchases"] = p.select(*columns["purchases"])
    typed.pop("products", None)
    return typed, Layout(columns, kinds_attr)


@dataclass(frozen=True)
class Facts:
    """What the driver needs of the whole data, from one aggregation per table: the categories
    with their margin and amount sums (positive purchases with a margin), the outbound contact
    channels and the latest purchase and contact (microseconds, None when none)."""

    categories: dict[str, tuple[float, float]]
    channels: tuple[str, ...]
    latest: dict[str, int | None]


def facts_of(typed: dict[str, SparkFrame]) -> Facts:
    """``Facts`` of the typed tables: one pass over purchases, one over contacts."""
    from pyspark.sql import functions as F

    cats: dict[str, tuple[float, float]] = {}
    latest: dict[str, int | None] = {"purchases": None, "contacts": None}
    if "purchases" in typed:
        p = typed["purchases"]
        counted = (F.col("amount") > 0) & F.col("margin").isNotNull()
        rows = (
            p.groupBy("category")
            .agg(
                F.max("purchased_at").alias("latest"),
                F.sum(F.when(counted, F.col("margin"))).alias("margin"),
                F.sum(F.when(counted, F.col("amount"))).alias("amount"),
            )
            .collect()
        )
        stamps = [r["latest"] for r in rows if r["latest"] is not None]
        latest["purchases"] = max(stamps) if stamps else None
        cats = {r["category"]: (r["margin"], r["amount"]) for r in rows if r["category"] is not None}
    chans: set[str] = set()
    if "contacts" in typed:
        k = typed["contacts"]
        outbound = (F.col("direction") == "outbound").alias("outbound")
        rows = k.groupBy("channel", outbound).agg(F.max("contacted_at").alias("latest")).collect()
        stamps = [r["latest"] for r in rows if r["latest"] is not None]
        latest["contacts"] = max(stamps) if stamps else None
        chans = {r["channel"] for r in rows if r["outbound"] and r["channel"] is not None}
    return Facts(cats, tuple(sorted(chans)), latest)


def spec_of(
    typed: dict[str, SparkFrame],
    layout: Layout,
    config: SnapshotConfig | None = None,
    facts: Facts | None = None,
) -> SnapshotSpec:
    """``spec_for`` of the whole data, from ``facts_of`` (only distinct values reach the driver)."""
    facts = facts or facts_of(typed)
    return SnapshotSpec(
        config=config or SnapshotConfig(),
        categories=tuple(sorted(facts.categories)),
        channels=tuple(sorted(set(MARKETING_CHANNELS) | set(facts.channels))),
        attributes=tuple(sorted(layout.attribute_kinds)),
    )


def without_customers(typed: dict[str, SparkFrame], ids: SparkFrame) -> dict[str, SparkFrame]:
    """Every table without the rows of the customers in ``ids`` (one column ``customer_id``)."""
    from pyspark.sql import functions as F

    return {name: df.join(F.broadcast(ids), on="customer_id", how="left_anti") for name, df in typed.items()}


# ------------------------------------------------------------------------------------------- shards


def shard_rows(typed: dict[str, SparkFrame], layout: Layout, shards: int) -> SparkFrame:
    """All rows of all tables in one frame: ``_shard`` (a stable hash of ``customer_id``), ``_table``
    and the typed slots."""
    from pyspark.sql import functions as F

    slots = layout.slots
    parts = []
    for i, (name, cols) in enumerate(layout.columns.items()):
        if name not in typed:
            continue
        by_slot = {slot: c for c, (slot, _) in cols.items()}
        parts.append(
            typed[name].select(
                F.pmod(F.xxhash64(F.col("customer_id")), F.lit(shards)).alias("_shard"),
                F.lit(i).cast("int").alias("_table"),
                *[
                    (F.col(f"`{by_slot[s]}`") if s in by_slot else F.lit(None))
                    .cast(_spark_slot_type(k))
                    .alias(s)
                    for s, k in slots.items()
                ],
            )
        )
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out


def _spark_slot_type(slot_kind: str) -> str:
    return {"s": "string", "t": "bigint", "d": "double", "i": "bigint", "b": "boolean"}[slot_kind]


def frames_of(pdf: pd.DataFrame, layout: Layout) -> Frames:
    """The typed tables of one shard, as ``Store.read_tables`` gives them, from its long frame."""
    table = pdf["_table"].to_numpy()
    frames: Frames = {}
    for i, (name, cols) in enumerate(layout.columns.items()):
        part = pdf[table == i]
        frames[name] = pd.DataFrame({c: _from_slot(part[slot], kind) for c, (slot, kind) in cols.items()})
    return frames


def _from_slot(s: pd.Series, kind: str) -> pd.Series:
    s = s.reset_index(drop=True)
    if kind == "timestamp":
        v = s.to_numpy(dtype="float64", na_value=np.nan) if len(s) else np.zeros(0)
        na = np.isnan(v)
        us = np.where(na, 0, v).astype(np.int64)  # exact: microseconds stay below 2**53
        out = pd.Series(us.astype("datetime64[us]")).dt.tz_localize("UTC")
        return out.mask(na)
    if kind == "number":
        return pd.Series(s.to_numpy(dtype="float64", na_value=np.nan), dtype="float64")
    if kind == "int":
        v = s.to_numpy(dtype="float64", na_value=np.nan)
        return pd.Series(pd.array(np.where(np.isnan(v), 0, v).astype(np.int64), dtype="Int64")).mask(
            np.isnan(v)
        )
    if kind == "bool":
        return s.astype("boolean")
    return s.astype("str")


def empty_shard(layout: Layout) -> pd.DataFrame:
    """A shard frame without rows (to derive output schemas on the driver)."""
    cols: dict[str, Any] = {"_shard": pd.Series([], dtype="int64"), "_table": pd.Series([], dtype="int32")}
    for slot, k in layout.slots.items():
        cols[slot] = pd.Series(
            [], dtype={"s": "str", "t": "float64", "d": "float64", "i": "float64", "b": "object"}[k]
        )
    return pd.DataFrame(cols)


def spark_schema(frame: pd.DataFrame) -> str:
    """A DDL schema for the columns and dtypes of ``frame`` (the local engine's output)."""
    parts = []
    for c, t in frame.dtypes.items():
        if pd.api.types.is_bool_dtype(t):
            kind = "boolean"
        elif pd.api.types.is_integer_dtype(t):
            kind = "bigint"
        elif pd.api.types.is_float_dtype(t):
            kind = "double"
        elif pd.api.types.is_datetime64_any_dtype(t):
            kind = "timestamp"
        else:
            kind = "string"
        parts.append(f"`{c}` {kind}")
    return ", ".join(parts)


def for_spark(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its text columns as Python objects: pyspark's pandas conversion cannot take
    pandas' Arrow-backed strings (it gets chunked arrays back)."""
    text = [c for c, t in frame.dtypes.items() if isinstance(t, pd.StringDtype)]
    if not text:
        return frame
    return frame.assign(**{c: frame[c].astype(object).where(frame[c].notna(), None) for c in text})


def as_dtypes(frame: pd.DataFrame, dtypes: pd.Series) -> pd.DataFrame:
    """``frame`` with the columns and dtypes of ``dtypes`` (read back from Spark: nullable
    booleans as objects, text as objects)."""
    out = {}
    for c, t in dtypes.items():
        s = frame[c]
        if pd.api.types.is_bool_dtype(t) and not isinstance(t, pd.BooleanDtype):
            s = s.astype("boolean").fillna(False).astype(bool)
        elif pd.api.types.is_float_dtype(t):
            s = s.astype("float64")
        else:
            s = s.astype(t)
        out[c] = s.to_numpy() if not isinstance(s.dtype, pd.api.extensions.ExtensionDtype) else s.array
    return pd.DataFrame(out, index=frame.index)


def shard_function(
    layout: Layout, cutoff: pd.Timestamp, spec: SnapshotSpec
) -> tuple[Callable[[pd.DataFrame], pd.DataFrame], pd.Series]:
    """The ``applyInPandas`` function of the snapshot and the dtypes of its output (the local
    snapshot's own, ``customer_id`` first)."""

    def run(pdf: pd.DataFrame) -> pd.DataFrame:
        return for_spark(snapshot_shard(frames_of(pdf, layout), cutoff, spec).reset_index())

    dtypes = snapshot_shard(frames_of(empty_shard(layout), layout), cutoff, spec).reset_index().dtypes
    return run, dtypes


def default_shards(spark: SparkSession, customers: SparkFrame, per_shard: int = 50_000) -> int:
    """Shards of about ``per_shard`` customers, at least two per core of the session."""
    n = customers.count()
    return max(2 * spark.sparkContext.defaultParallelism, -(-n // per_shard))


def snapshot_spark(
    spark: SparkSession,
    folder: Path | str,
    cutoff: pd.Timestamp | str,
    config: SnapshotConfig | None = None,
    *,
    shards: int | None = None,
    drop_objecting: pd.Timestamp | None = None,
) -> tuple[SparkFrame, pd.Series, int]:
    """The snapshot of every customer in the Parquet folder at ``cutoff``, as a Spark frame with
    ``customer_id`` and the local engine's columns; its pandas dtypes; and how many customers
    were left out for objecting to profiling at ``drop_objecting`` (None: nobody left out).

    As ``kundenwert snapshot`` does locally, the column sets are those of the data without the
    objecting customers."""
    t = _utc(cutoff)
    typed, layout = typed_tables(read_tables(spark, folder))
    left_out = 0
    if drop_objecting is not None and "consents" in typed:
        ids = objecting_ids(typed, layout, drop_objecting, shards or 8)
        left_out = ids.count()
        typed = without_customers(typed, ids)
    spec = spec_of(typed, layout, config)
    shards = shards or default_shards(spark, typed["customers"])
    run, dtypes = shard_function(layout, t, spec)
    spark.conf.set("spark.sql.shuffle.partitions", str(shards))
    rows = shard_rows(typed, layout, shards)
    return (
        rows.groupBy("_shard").applyInPandas(
            run, spark_schema(pd.DataFrame(columns=dtypes.index).astype(dtypes))
        ),
        dtypes,
        left_out,
    )


def objecting_ids(typed: dict[str, SparkFrame], layout: Layout, now: pd.Timestamp, shards: int) -> SparkFrame:
    """The customers who object (``*`` record) at ``now``, from their consent records, as a frame
    of ``customer_id`` (the consent rule per customer, in ``applyInPandas``)."""
    from kundenwert.features.consent import consent_state

    only = Layout({"consents": layout.columns["consents"]}, {})
    rows = shard_rows({"consents": typed["consents"]}, only, shards)
    at = _utc(now)

    def objecting(pdf: pd.DataFrame) -> pd.DataFrame:
        consents = frames_of(pdf, only)["consents"]
        state = consent_state(consents, at)
        ids = state.index[state["objection"].to_numpy(dtype=bool)]
        return pd.DataFrame({"customer_id": pd.Series(ids, dtype=object)})

    return rows.groupBy("_shard").applyInPandas(objecting, "customer_id string")


def read_snapshot(path: Path | str, dtypes: pd.Series | None = None) -> pd.DataFrame:
    """A snapshot written by the spark engine, as the local engine gives it: indexed by
    ``customer_id`` in id order (with ``dtypes``: exactly the local dtypes)."""
    frame = pd.read_parquet(path)
    if dtypes is not None:
        frame = as_dtypes(frame, dtypes)
    frame = frame.set_index("customer_id").sort_index()
    frame.index = pd.Index(frame.index, name="customer_id", dtype="str")
    return frame
