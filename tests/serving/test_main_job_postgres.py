"""The main job on PostgreSQL gives the answers it gives on SQLite: import -> score -> serve ->
next best actions, score, target list, feedback.

Training runs once (the package's ``served`` fixture trains on this sample world, on SQLite);
both stores are then imported from the same files and scored and served with those same champion
models, so any difference comes from the store. ``kundenwert import`` and ``kundenwert score`` run
as a user runs them (the CLI), on the two stores.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kundenwert.cli import app as cli
from kundenwert.db.store import Store
from kundenwert.features.contract import TABLE_ORDER
from kundenwert.serving.app import create_app
from kundenwert.serving.keys import create_key
from kundenwert.serving.scores_store import read_scores

pytestmark = pytest.mark.integration


def _import_and_score(url: str, folder) -> None:
    env = {"KUNDENWERT_DATABASE_URL": url}
    runner = CliRunner()
    done = runner.invoke(cli, ["import", str(folder), "--mode", "replace"], env=env)
    assert done.exit_code == 0, done.output[-2000:]
    done = runner.invoke(cli, ["score"], env=env)
    assert done.exit_code == 0, done.output[-2000:]
    assert len(done.output) < 5_000  # progress lines, never a statement's SQL


def _without(body: dict, *keys: str) -> dict:
    return {k: v for k, v in body.items() if k not in keys}


@pytest.fixture(scope="module")
def both(served, imported_world, tmp_path_factory, postgres_server):
    """A SQLite and a PostgreSQL store imported from the same files, scored with the same models."""
    import uuid

    import psycopg

    _, folder = imported_world(3_000, 5)
    files = tmp_path_factory.mktemp("pg-job")
    for f in folder.iterdir():  # the world's files, without its store
        if f.is_file() and f.suffix in (".csv", ".parquet"):
            shutil.copy(f, files / f.name)
    name = f"kw_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    urls = {"sqlite": f"sqlite:///{files / 'kw.db'}", "postgresql": f"{postgres_server}/{name}"}
    out = {}
    for kind, url in urls.items():
        _import_and_score(url, files)
        store = Store(url)
        out[kind] = {
            "store": store,
            "key": {r: create_key(store.engine, r) for r in ("sales", "campaign", "marketing")},
        }
    yield out
    for v in out.values():
        v["store"].dispose()


def test_the_stores_hold_the_same_data_and_scores(both) -> None:
    lite, pg = both["sqlite"]["store"], both["postgresql"]["store"]
    for name in TABLE_ORDER:  # typed as every reader gets them (raw values differ: instants, booleans)
        pd.testing.assert_frame_equal(lite.read_table(name), pg.read_table(name), check_exact=True, obj=name)
    s1, p1, r1 = read_scores(lite.engine)
    s2, p2, r2 = read_scores(pg.engine)
    assert r1["customers"] == r2["customers"] == len(s1) > 2_000
    assert r1["models"] == r2["models"] and r1["cutoff"] == r2["cutoff"]
    pd.testing.assert_frame_equal(s1.sort_index(), s2.sort_index(), check_exact=True)
    pd.testing.assert_frame_equal(p1.sort_index(), p2.sort_index(), check_exact=True)


def test_the_service_answers_the_same_on_both_stores(both) -> None:
    customers = both["sqlite"]["store"].read_table("customers", ["customer_id"])["customer_id"].tolist()
    sample = customers[:120]
    answers: dict[str, dict] = {}
    for kind, v in both.items():
        with TestClient(create_app(Store(v["store"].url))) as c:
            from kundenwert.serving.exploration import of_catalog

            # the catalog's exploration from the same seed on both stores: the same requests in
            # the same order explore the same decisions (exploration compared too, not chance)
            state = c.app.state.serving
            state.explorer = of_catalog(state.catalog, seed=11)
            assert state.explorer.active
            sales = {"X-API-Key": v["key"]["sales"]}
            campaign = {"X-API-Key": v["key"]["campaign"]}
            marketing = {"X-API-Key": v["key"]["marketing"]}
            got: dict = {"nba": [], "views": [], "after_feedback": []}
            suggested = []
            for cid in sample:
                r = c.get(f"/v1/customers/{cid}/next-best-actions", headers=sales)
                assert r.status_code == 200, r.text
                body = r.json()
                got["nba"].append(_without(body, "decision_id"))
                if body["suggestions"]:
                    suggested.append((cid, body["decision_id"], body["suggestions"][0]))
                got["views"].append(c.get(f"/v1/customers/{cid}", headers=sales).json())
            r = c.post("/v1/score", headers=campaign, json={"customer_ids": sample[:50] + ["nobody"]})
            assert r.status_code == 200, r.text
            got["score"] = [_without(x, "decision_id") for x in r.json()["results"]]
            got["unknown"] = r.json()["unknown_customer_ids"]
            r = c.post(
                "/v1/target-lists",
                headers=marketing,
                json={"objective": "churn_prevention", "channel": "email", "size": 200, "control_share": 0.1},
            )
            assert r.status_code == 201, r.text
            made = r.json()
            listed = c.get(f"/v1/target-lists/{made['list_id']}", headers=marketing)
            assert listed.status_code == 200
            members = listed.json()["members"]
            # the control group is drawn by list id (new each time): compare who and in which order
            got["list"] = (
                {k: made["summary"][k] for k in ("customers", "candidates", "actions")},
                [(m["position"], m["customer_id"], m["action_id"], m["score"]) for m in members],
            )
            events = [
                {
                    "event_id": f"job-{i}",
                    "decision_id": d,
                    "action_id": s["action_id"],
                    "channel": s["channel"],
                    "outcome": "sent",
                    "occurred_at": pd.Timestamp.now(tz="UTC").isoformat(),
                }
                for i, (_, d, s) in enumerate(suggested[:10])
            ]
            r = c.post("/v1/feedback", headers=campaign, json={"events": events})
            assert r.status_code == 200, r.text
            got["feedback"] = r.json()
            again = c.post("/v1/feedback", headers=campaign, json={"events": events})
            got["feedback_again"] = again.json()
            for cid, _, _ in suggested[:10]:  # the new contact counts at once (live change log)
                body = c.get(f"/v1/customers/{cid}/next-best-actions", headers=sales).json()
                got["after_feedback"].append(_without(body, "decision_id"))
        answers[kind] = got
    lite, pg = answers["sqlite"], answers["postgresql"]
    assert len([a for a in lite["nba"] if a["suggestions"]]) >= 10
    assert lite["feedback"] == {"stored": 10, "duplicates": 0}
    assert lite["feedback_again"] == {"stored": 0, "duplicates": 10}
    for part in lite:
        assert pg[part] == lite[part], part
