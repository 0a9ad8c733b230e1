"""Precomputed scores in the store: one table per scoring run, a pointer row per run.

``kundenwert score`` writes every customer's scores and the response propensities (wide: one
column ``response__<action>__<channel>`` and ``uplift__...`` per pair) into a new table
``kw_scores_<run>``, then records the run in ``kw_score_runs``, all in one transaction: readers
only ever see complete runs, and a failed write leaves the previous run current. Older tables than
the last ``KEEP`` runs are dropped. The rows go through the backend's bulk write (``COPY`` on
PostgreSQL: a run is too many values for one multi-row INSERT there).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa

from kundenwert.db.backends import backend_for
from kundenwert.db.errors import map_exceptions
from kundenwert.db.migrate import ensure_tables
from kundenwert.db.schema import SCORE_RUNS as RUNS
from kundenwert.errors import ConfigurationError

KEEP = 2
SEP = "__"


def _wide(propensity: pd.DataFrame) -> pd.DataFrame:
    wide = propensity.unstack(["action_id", "channel"])
    wide.columns = [SEP.join(map(str, c)) for c in wide.columns.to_flat_index()]
    return wide


def _long(frame: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in frame.columns if c.startswith(("response" + SEP, "uplift" + SEP))]
    if not cols:
        return pd.DataFrame(
            columns=["response", "uplift"],
            index=pd.MultiIndex.from_tuples([], names=["customer_id", "action_id", "channel"]),
        )
    part = frame[cols]
    part.columns = pd.MultiIndex.from_tuples(
        [tuple(c.split(SEP)) for c in cols], names=[None, "action_id", "channel"]
    )
    return part.stack(["action_id", "channel"], future_stack=True).dropna(how="all")


def write_scores(
    engine: sa.Engine,
    scores: pd.DataFrame,
    propensity: pd.DataFrame,
    cutoff: pd.Timestamp,
    models: dict[str, str],
) -> str:
    """Store a scoring run; returns its id. The run becomes current only once complete."""
    ensure_tables(engine, RUNS)
    run_id = uuid.uuid4().hex
    table = f"kw_scores_{run_id[:12]}"
    frame = scores.join(_wide(propensity), how="left")
    frame.index.name = "customer_id"
    with map_exceptions("writing the scoring run", table), engine.begin() as conn:
        # pandas makes the table (its column types, as before); the rows go in through the backend
        frame.head(0).to_sql(table, conn, index=True)
        target = sa.Table(table, sa.MetaData(), autoload_with=conn)
        rows = frame.reset_index()
        backend_for(conn).bulk_write(conn, target, rows, list(rows.columns))
        conn.execute(
            RUNS.insert().values(
                run_id=run_id,
                scored_at=datetime.now(UTC).isoformat(
                    timespec="microseconds"
                ),  # two runs in a second: still ordered
                cutoff=pd.Timestamp(cutoff).isoformat(),
                customers=len(frame),
                models=json.dumps(models, sort_keys=True),
                table_name=table,
            )
        )
    _drop_old(engine)
    return run_id


def _drop_old(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(RUNS.c.run_id, RUNS.c.table_name).order_by(RUNS.c.scored_at.desc(), RUNS.c.run_id)
        ).all()
        for run_id, table in rows[KEEP:]:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
            conn.execute(RUNS.delete().where(RUNS.c.run_id == run_id))


def latest_run(engine: sa.Engine) -> dict | None:
    """The current (latest complete) run's record, or None."""
    ensure_tables(engine, RUNS)
    with map_exceptions("reading the scoring runs", RUNS.name), engine.connect() as conn:
        row = conn.execute(sa.select(RUNS).order_by(RUNS.c.scored_at.desc()).limit(1)).mappings().first()
    if row is None:
        return None
    out = dict(row)
    out["models"] = json.loads(out["models"])
    return out


def runs(engine: sa.Engine) -> list[dict]:
    """The records of the runs the store keeps (newest first; the first is the current one)."""
    ensure_tables(engine, RUNS)
    with map_exceptions("reading the scoring runs", RUNS.name), engine.connect() as conn:
        rows = conn.execute(sa.select(RUNS).order_by(RUNS.c.scored_at.desc())).mappings().all()
    inspector = sa.inspect(engine)
    out = []
    for row in rows:
        if inspector.has_table(row["table_name"]):  # older runs' tables are dropped (KEEP)
            out.append({**row, "models": json.loads(row["models"])})
    return out


def read_scores(engine: sa.Engine, run: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(scores, propensity, run record) of ``run`` (a record of ``runs``), by default the current
    run; ``ConfigurationError`` when there is none."""
    run = run or latest_run(engine)
    if run is None:
        raise ConfigurationError("no precomputed scores in the store: run `kundenwert score` first")
    with map_exceptions("reading the scores", run["table_name"]):
        frame = pd.read_sql_table(run["table_name"], engine, index_col="customer_id")
    frame.index = frame.index.astype(str)
    if "open_complaint" in frame.columns:
        frame["open_complaint"] = frame["open_complaint"].astype(bool)
    propensity = _long(frame)
    scores = frame[[c for c in frame.columns if not c.startswith(("response" + SEP, "uplift" + SEP))]]
    numbers = [
        c for c in scores.columns if c not in _TEXT and c != "open_complaint" and not c.startswith("reasons_")
    ]
    scores = scores.astype({c: "float64" for c in numbers})  # an all-missing column reads back as None
    return scores, propensity.astype("float64"), run


_TEXT = ("status", "customer_type", "age_group", "region")
