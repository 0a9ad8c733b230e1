"""A store as kundenwert wrote it before migrations (main at 045e594), for the upgrade tests.

The schema comes from frozen DDL (``legacy_v0_sql/<backend>.sql``, dumped from a store that the
code of that time created: ``Store()`` plus the serving modules' ``create_all``), not from the
current code, so the test keeps meaning "a store written by the old version" when the code moves
on. The rows are a small sample world plus a few rows in every service table, inserted with
plain SQLAlchemy on the reflected tables (no kundenwert store code).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

SQL = Path(__file__).parent / "legacy_v0_sql"
ORDER = ("customers", "products", "purchases", "complaints", "contacts", "consents", "offers")
SCORES = "kw_scores_0123456789ab"


def _value(v: object, sqlite: bool) -> object:
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, float) and np.isnan(v):
        return None
    if isinstance(v, pd.Timestamp):
        ts = v.tz_localize("UTC") if v.tz is None else v.tz_convert("UTC")
        return int(ts.value // 1000) if sqlite else ts.to_pydatetime()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _rows(frame: pd.DataFrame, table: sa.Table, sqlite: bool) -> list[dict]:
    cols = [c for c in frame.columns if c in table.c]
    return [
        {c: _value(v, sqlite) for c, v in zip(cols, r, strict=True)}
        for r in frame[cols].astype(object).itertuples(index=False, name=None)
    ]


def create_legacy_store(url: str, n: int = 400, seed: int = 3) -> None:
    """Create the old schema at ``url`` (an empty database) and fill it."""
    from kundenwert.datasets.sample import generate_world

    engine = sa.create_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    ddl = (SQL / f"{engine.dialect.name}.sql").read_text()
    raw = engine.raw_connection()
    try:
        if sqlite:
            raw.driver_connection.executescript(ddl)
        else:
            with raw.cursor() as cur:
                cur.execute(ddl)
            raw.commit()
    finally:
        raw.close()
    md = sa.MetaData()
    md.reflect(engine)
    world = generate_world(n, seed)
    with engine.begin() as conn:
        for name in ORDER:
            frame = world.tables[name]
            if name != "customers":
                frame = frame.assign(extra=None)
            conn.execute(md.tables[name].insert(), _rows(frame, md.tables[name], sqlite))
        customers = world.tables["customers"]
        conn.execute(
            md.tables["attribute_definitions"].insert(),
            [{"name": "household_size", "kind": "number"}, {"name": "income_band", "kind": "text"}],
        )
        attrs = [
            {"customer_id": c, "name": "household_size", "number": float(h), "text": None}
            for c, h in zip(customers["customer_id"], customers["household_size"], strict=True)
            if h is not pd.NA
        ] + [
            {"customer_id": c, "name": "income_band", "number": None, "text": t}
            for c, t in zip(customers["customer_id"], customers["income_band"], strict=True)
            if isinstance(t, str)
        ]
        conn.execute(md.tables["customer_attributes"].insert(), attrs)
        now = pd.Timestamp("2025-12-31T12:00:00Z")
        conn.execute(
            md.tables["imports"].insert(),
            [{"imported_at": _value(now, sqlite), "mode": "replace", "rows": json.dumps({"customers": n})}],
        )
        ids = customers["customer_id"].tolist()[:50]
        conn.execute(
            md.tables["kw_api_keys"].insert(),
            [
                {
                    "key_id": "a1b2c3d4e5f6",
                    "secret_sha256": hashlib.sha256(b"s").hexdigest(),
                    "role": "sales",
                    "name": "old",
                    "created_at": "2025-12-01T00:00:00+00:00",
                    "revoked": False,
                }
            ],
        )
        conn.exec_driver_sql(
            f'CREATE TABLE "{SCORES}" (customer_id TEXT, churn FLOAT, clv FLOAT, status TEXT, open_complaint BOOLEAN)'
        )
        conn.execute(
            sa.table(
                SCORES, *[sa.column(c) for c in ("customer_id", "churn", "clv", "status", "open_complaint")]
            ).insert(),
            [
                {
                    "customer_id": c,
                    "churn": i / 50,
                    "clv": 10.0 * i,
                    "status": "active",
                    "open_complaint": i % 7 == 0,
                }
                for i, c in enumerate(ids)
            ],
        )
        conn.execute(
            md.tables["kw_score_runs"].insert(),
            [
                {
                    "run_id": "0123456789ab" + "0" * 20,
                    "scored_at": "2025-12-31T12:00:00.000000+00:00",
                    "cutoff": "2026-01-01T00:00:00+00:00",
                    "customers": len(ids),
                    "models": json.dumps({"churn": "1"}),
                    "table_name": SCORES,
                }
            ],
        )
        decisions = [
            {
                "decision_id": f"{i:032x}",
                "customer_id": c,
                "created_at": "2025-12-31T12:00:00",
                "score_run": "0123456789ab" + "0" * 20,
                "suggestions": json.dumps(
                    [{"action_id": "retention_voucher", "channel": "email", "rank": 1}]
                ),
            }
            for i, c in enumerate(ids)
        ]
        conn.execute(md.tables["kw_decisions"].insert(), decisions)
        conn.execute(
            md.tables["kw_feedback"].insert(),
            [
                {
                    "event_id": f"ev-{i}",
                    "payload_sha256": hashlib.sha256(str(i).encode()).hexdigest(),
                    "decision_id": d["decision_id"],
                    "action_id": "retention_voucher",
                    "channel": "email",
                    "outcome": "opened",
                    "occurred_at": "2025-12-31T13:00:00+00:00",
                    "received_at": "2025-12-31T13:00:01+00:00",
                }
                for i, d in enumerate(decisions[:20])
            ],
        )
        conn.execute(
            md.tables["kw_target_lists"].insert(),
            [{"list_id": "f" * 32, "created_at": "2025-12-31T12:00:00", "request": "{}", "summary": "{}"}],
        )
        conn.execute(
            md.tables["kw_target_list_members"].insert(),
            [
                {
                    "list_id": "f" * 32,
                    "position": i + 1,
                    "customer_id": c,
                    "group": "control" if i % 10 == 0 else "target",
                    "action_id": "retention_voucher",
                    "score": 1.0 - i / 100,
                    "propensity": 0.1,
                    "expected_value": 2.5,
                    "cost": 0.05,
                }
                for i, c in enumerate(ids)
            ],
        )
    engine.dispose()


def checksums(url: str, columns: dict[str, list[str]] | None = None) -> dict[str, tuple[int, str]]:
    """Rows and a checksum of their contents per table (every column, or the ``columns`` given
    per table: those a store had before a migration added more, in a fixed order)."""
    engine = sa.create_engine(url)
    out = {}
    try:
        with engine.connect() as conn:
            for name in sorted(sa.inspect(conn).get_table_names()):
                if name == "alembic_version":
                    continue
                t = sa.Table(name, sa.MetaData(), autoload_with=conn)
                cols = sorted(c.name for c in t.c if columns is None or c.name in columns.get(name, [c.name]))
                rows = conn.execute(
                    sa.select(*[t.c[c] for c in cols]).order_by(*[t.c[c] for c in cols])
                ).all()
                h = hashlib.sha256(repr([tuple(r) for r in rows]).encode()).hexdigest()[:16]
                out[name] = (len(rows), h)
    finally:
        engine.dispose()
    return out


def column_names(url: str) -> dict[str, list[str]]:
    """The columns of every table of the database at ``url``."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            return {t: [c["name"] for c in insp.get_columns(t)] for t in insp.get_table_names()}
    finally:
        engine.dispose()
