"""The main job end to end on each backend: sample -> import -> train -> score -> serve, then next
best actions, batch scoring, a target list and feedback through the API. PostgreSQL answers exactly
what SQLite answers for the same world."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kundenwert.cli import app

pytestmark = pytest.mark.integration

FAST = "".join(
    f"[models.{m}]\nparams = {{ max_iter = 30 }}\n" for m in ("clv", "churn", "winback", "affinity")
)
CONFIG = f'name = "main-job"\n[data]\nmax_train_cutoffs = 2\n{FAST}[models.response]\nparams = {{ max_iter = 30 }}\n'
VOLATILE = {"decision_id", "run_id", "score_run", "list_id", "url", "created_at"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("main-job-world")
    done = CliRunner().invoke(app, ["sample", str(folder), "--customers", "2000", "--seed", "3"])
    assert done.exit_code == 0, done.output
    return folder


def _cli(*args: str) -> str:
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, f"kundenwert {' '.join(args)} failed:\n{done.output[-3000:]}"
    return done.output


def _stable(value: object) -> object:
    """The answer without what differs between any two runs (ids, times), floats to 9 digits."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in sorted(value.items()) if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 9)
    return value


def _main_job(url: str, home: Path, world: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Run the main job on the store at ``url`` and ask the service what every user asks."""
    from kundenwert.db.store import Store
    from kundenwert.serving.app import create_app
    from kundenwert.serving.keys import create_key

    monkeypatch.setenv("KUNDENWERT_DATABASE_URL", url)
    monkeypatch.setenv("KUNDENWERT_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = home / "exp.toml"
    config.write_text(CONFIG)
    _cli("import", str(world), "--mode", "replace")
    _cli("train", "--config", str(config))
    _cli("score")
    store = Store(url)
    keys = {role: create_key(store.engine, role) for role in ("sales", "campaign", "marketing")}
    ids = sorted(store.read_table("customers", ["customer_id"])["customer_id"])
    answers: dict[str, object] = {}
    with TestClient(create_app(store)) as client:
        from kundenwert.serving.exploration import of_catalog

        # the catalog's exploration, drawn from the same seed on both stores: the same requests
        # in the same order explore the same decisions, so the answers can be compared
        state = client.app.state.serving
        state.explorer = of_catalog(state.catalog, seed=7)
        assert state.explorer.active
        sales, campaign, marketing = ({"X-API-Key": keys[r]} for r in ("sales", "campaign", "marketing"))
        assert client.get("/health/ready").status_code == 200
        nba = [client.get(f"/v1/customers/{cid}/next-best-actions", headers=sales) for cid in ids[:60]]
        assert all(r.status_code == 200 for r in nba)
        answers["next_best_actions"] = [r.json() for r in nba]
        views = [client.get(f"/v1/customers/{cid}", headers=sales) for cid in ids[:30]]
        assert all(r.status_code == 200 for r in views)
        answers["customer_views"] = [r.json() for r in views]
        batch = client.post("/v1/score", headers=campaign, json={"customer_ids": [*ids[:500], "nobody"]})
        assert batch.status_code == 200, batch.text
        answers["score"] = batch.json()
        suggested = [
            (x["decision_id"], s["action_id"], s["channel"])
            for x in batch.json()["results"]
            for s in x["suggestions"]
        ]
        assert suggested, "the batch suggested nothing: the comparison would say little"
        events = [
            {
                "event_id": f"ev-{i}",
                "decision_id": d,
                "action_id": a,
                "channel": ch,
                "outcome": ("sent", "opened", "converted")[i % 3],
                "occurred_at": "2026-11-02T10:00:00Z",
            }
            for i, (d, a, ch) in enumerate(suggested[:200])
        ]
        fed = client.post("/v1/feedback", headers=campaign, json={"events": events})
        assert fed.status_code == 200, fed.text
        again = client.post("/v1/feedback", headers=campaign, json={"events": events[:50]})
        assert again.status_code == 200, again.text
        answers["feedback"] = [fed.json(), again.json()]
        body = {"name": "main job", "objective": "churn_prevention", "channel": "email", "size": 100}
        made = client.post("/v1/target-lists", headers=marketing, json=body)
        assert made.status_code == 201, made.text
        listed = client.get(made.json()["url"], headers=marketing)
        as_csv = client.get(made.json()["url"], headers=marketing, params={"format": "csv"})
        assert listed.status_code == 200 and as_csv.status_code == 200
        target_list = listed.json()
        # The control group is a stable draw keyed by the list's (random) id, so it differs from
        # list to list on any backend: compared are the members, their order and numbers.
        answers["target_list"] = {
            "request": target_list["request"],
            "summary": {k: target_list["summary"][k] for k in ("actions", "candidates", "customers")},
            "members": [{k: v for k, v in m.items() if k != "group"} for m in target_list["members"]],
        }
        groups = [m["group"] for m in target_list["members"]]
        assert set(groups) <= {"target", "control"} and 0 < groups.count("control") < 30
        answers["target_list_csv_rows"] = len(as_csv.text.strip().splitlines())
    store.dispose()
    return answers


def test_the_main_job_answers_the_same_on_postgresql_as_on_sqlite(
    world: Path, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sqlite").mkdir()
    (tmp_path / "pg").mkdir()
    on_sqlite = _main_job(
        f"sqlite:///{tmp_path / 'sqlite' / 'kw.db'}", tmp_path / "sqlite", world, monkeypatch
    )
    on_pg = _main_job(postgres_url, tmp_path / "pg", world, monkeypatch)
    assert on_pg["score"]["unknown_customer_ids"] == ["nobody"]  # type: ignore[index]
    assert on_pg["feedback"][0]["stored"] > 0  # type: ignore[index]
    for part in on_sqlite:
        assert _stable(on_pg[part]) == _stable(on_sqlite[part]), (
            f"{part} differs between PostgreSQL and SQLite"
        )
