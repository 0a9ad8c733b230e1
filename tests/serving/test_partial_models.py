"""Scoring and serving with the models that exist (issue 14): a registry where only some models
have a champion (training skips the models the data does not support), and a store without
purchases. The run scores with the champions there are, the service serves the actions whose
scores exist and says why the others are not suggested."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from kundenwert.db.store import Store
from kundenwert.errors import ConfigurationError
from kundenwert.serving.app import create_app
from kundenwert.serving.catalog import load_catalog
from kundenwert.serving.keys import create_key
from tests.serving.conftest import serving

NEED_CHURN = "needs churn: no churn model in this scoring run"


def _home(imported_world, tmp_path_factory, name: str) -> tuple[Path, str]:
    """A fresh home (registry and store) holding a copy of the small world's store."""
    _, folder = imported_world(3_000, 5)
    home = tmp_path_factory.mktemp(name)
    shutil.copy(folder / "kw.db", home / "kundenwert.db")  # where the CLI looks for it
    return home, f"sqlite:///{home / 'kundenwert.db'}"


@pytest.fixture(scope="module")
def partial(imported_world, trained_small, small_config, tmp_path_factory):
    """The small world scored with champions of clv and response only, and served."""
    home, url = _home(imported_world, tmp_path_factory, "kw-partial")
    results = {m: trained_small[m] for m in ("clv", "response")}
    with serving(home, url, results, small_config) as world:
        yield world


def _get(p, path: str, role: str = "sales", **params):
    return p["client"].get(path, headers={"X-API-Key": p["keys"][role]}, params=params)


def test_score_uses_the_champions_there_are_and_names_the_others(partial) -> None:
    done = partial["done"]
    assert set(done["models"]) == {"clv", "response"}
    assert done["missing_models"] == ["churn", "winback", "affinity"]
    unavailable = done["unavailable_actions"]
    assert NEED_CHURN in unavailable["retention_voucher"]
    assert "needs affinity_fashion: no affinity model in this scoring run" in unavailable["xsell_fashion"]
    assert not {"winback_voucher", "upsell_premium", "newsletter"} & set(unavailable)
    # the run records the versions it used, and stores only the scores it has
    engine = partial["store"].engine
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT models, table_name FROM kw_score_runs")).mappings().one()
        columns = {c["name"] for c in sa.inspect(conn).get_columns(row["table_name"])}
    assert json.loads(row["models"]) == done["models"]
    assert {"clv", "reasons_value", "p_alive"} <= columns
    assert not {"churn", "winback", "reasons_churn"} & columns
    assert not any(c.startswith("affinity_") for c in columns)


def test_ready_names_the_missing_models_and_the_unservable_actions(partial) -> None:
    r = partial["client"].get("/health/ready")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["models"]) == {"clv", "response"}
    assert body["missing_models"] == ["churn", "winback", "affinity"]
    assert body["unavailable_actions"] == partial["done"]["unavailable_actions"]


def test_only_servable_actions_are_suggested_and_the_others_say_why(partial) -> None:
    unavailable = partial["done"]["unavailable_actions"]
    ids = partial["customers"][:400]
    r = partial["client"].post(
        "/v1/score",
        headers={"X-API-Key": partial["keys"]["campaign"]},
        json={"customer_ids": ids, "explain": True},
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    suggested = {s["action_id"] for o in results for s in o["suggestions"]}
    assert suggested and not suggested & set(unavailable)
    dropped = [f for o in results for f in o["funnel"] if f["action_id"] in unavailable]
    missing = [f for f in dropped if f["reason"] == "model_missing"]
    assert missing and {f["detail"] for f in missing} <= set(unavailable.values())
    assert all(f["detail"] == unavailable[f["action_id"]] for f in missing)
    assert missing[0]["explanation"].startswith("the action needs a score no model")
    # the rules before it (consent) still come first; no unavailable pair is dropped for another reason
    assert {f["reason"] for f in dropped} <= {"model_missing", "objection", "no_consent", "no_score"}


def test_the_fast_path_of_one_customer_says_the_same(partial) -> None:
    unavailable = partial["done"]["unavailable_actions"]
    scores = partial["client"].app.state.serving.scores
    cid = str(scores.index[(scores["status"] == "active").to_numpy()][0])
    r = _get(partial, f"/v1/customers/{cid}/next-best-actions", explain=True, limit=50)
    assert r.status_code == 200, r.text
    body = r.json()
    assert not {s["action_id"] for s in body["suggestions"]} & set(unavailable)
    batch = (
        partial["client"]
        .post(
            "/v1/score",
            headers={"X-API-Key": partial["keys"]["campaign"]},
            json={"customer_ids": [cid], "explain": True, "limit": 50},
        )
        .json()["results"][0]
    )
    key = lambda f: (f["action_id"], f["channel"], f["reason"], f["detail"])  # noqa: E731
    assert sorted(map(key, body["funnel"])) == sorted(map(key, batch["funnel"]))


def test_the_sales_view_answers_with_nulls_for_missing_scores(partial) -> None:
    scores = partial["client"].app.state.serving.scores
    for status in ("active", "lapsed"):
        cid = str(scores.index[(scores["status"] == status).to_numpy()][0])
        r = _get(partial, f"/v1/customers/{cid}")
        assert r.status_code == 200, r.text
        view = r.json()
        assert view["scored"] and view["clv"] is not None
        assert view["churn_risk"] is None and view["winback_chance"] is None
        assert view["top_affinities"] == []
        assert view["reasons"]["churn"] == [] and view["reasons"]["winback"] == []
        assert set(view["model_versions"]) == {"clv", "response"}


def test_target_lists_and_analytics_work_with_missing_scores(partial) -> None:
    headers = {"X-API-Key": partial["keys"]["marketing"]}
    c = partial["client"]
    ok = c.post(
        "/v1/target-lists",
        headers=headers,
        json={"objective": "win_back", "channel": "email", "size": 50, "filters": {"min_clv": 0}},
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["summary"]["actions"] == ["winback_voucher"]
    refused = c.post(
        "/v1/target-lists",
        headers=headers,
        json={"objective": "churn_prevention", "channel": "email", "size": 50},
    )
    assert refused.status_code == 409 and NEED_CHURN in refused.json()["detail"]
    r = c.get("/v1/analytics/affinity-by-age-group", headers=headers)
    assert r.status_code == 200 and r.json()["rows"] == []
    assert c.get("/v1/analytics/kpis", headers=headers).status_code == 200


def test_scoring_refuses_without_any_champion_or_without_the_response_model(
    imported_world, trained_small, small_config, tmp_path_factory, monkeypatch
) -> None:
    from kundenwert.serving.scoring import run_scoring
    from kundenwert.training.run import publish

    home, url = _home(imported_world, tmp_path_factory, "kw-none")
    monkeypatch.setenv("KUNDENWERT_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = Store(url)
    with pytest.raises(ConfigurationError, match="no champion for any model") as none:
        run_scoring(store, load_catalog())
    assert "\n" not in str(none.value)
    publish({"churn": trained_small["churn"]}, small_config)
    with pytest.raises(ConfigurationError, match="no champion for response") as no_response:
        run_scoring(store, load_catalog())
    assert "\n" not in str(no_response.value)
    store.dispose()


@pytest.fixture(scope="module")
def no_purchases(imported_world, small_config, tmp_path_factory):
    """The small world without its purchases (products sold elsewhere): `train` fits the only
    model it can, response, on this store itself; scoring and serving see no single purchase."""
    from kundenwert.training.run import run_training

    home, url = _home(imported_world, tmp_path_factory, "kw-no-purchases")
    mp = pytest.MonkeyPatch()
    mp.setenv("KUNDENWERT_HOME", str(home))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv("KUNDENWERT_DATABASE_URL", raising=False)
    store = Store(url)
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM purchases"))
    results, decisions = run_training(small_config, store=store)
    assert set(results) == {"response"} and decisions["response"]["promoted"]
    assert set(results.skipped) == {"clv", "churn", "winback", "affinity"}
    yield {"home": home, "url": url, "store": store}
    store.dispose()
    mp.undo()


def test_as_of_without_purchases_is_the_day_after_the_latest_contact(no_purchases) -> None:
    from kundenwert.features.snapshot import load_frames
    from kundenwert.serving.scoring import as_of, category_margins

    frames = load_frames(no_purchases["store"])
    assert frames["purchases"].empty and category_margins(frames["purchases"]) == {}
    last = frames["contacts"]["contacted_at"].max()
    assert as_of(frames) == min(pd.Timestamp.now(tz="UTC"), (last + pd.Timedelta(days=1)).normalize())
    nothing = {**frames, "contacts": frames["contacts"].iloc[:0]}
    assert as_of(nothing) == pd.Timestamp.now(tz="UTC").normalize()


def test_a_store_without_purchases_is_scored_and_served_by_the_response_model(no_purchases) -> None:
    from kundenwert.serving.scoring import run_scoring

    store = no_purchases["store"]
    done = run_scoring(store, load_catalog())
    assert set(done["models"]) == {"response"}
    assert done["missing_models"] == ["clv", "churn", "winback", "affinity"]
    unavailable = done["unavailable_actions"]
    assert set(unavailable) == set(load_catalog().ids)  # every default action needs clv or affinity
    assert "needs margin_fashion: no purchases of fashion in the store" in unavailable["xsell_fashion"]
    keys = {role: create_key(store.engine, role) for role in ("sales", "marketing")}
    with TestClient(create_app(Store(no_purchases["url"]))) as c:
        ready = c.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["missing_models"] == ["clv", "churn", "winback", "affinity"]
        scores = c.app.state.serving.scores
        cid = str(scores.index[0])
        view = c.get(f"/v1/customers/{cid}", headers={"X-API-Key": keys["sales"]})
        assert view.status_code == 200, view.text
        assert view.json()["clv"] is None and view.json()["reasons"]["value"] == []
        nba = c.get(
            f"/v1/customers/{cid}/next-best-actions",
            headers={"X-API-Key": keys["sales"]},
            params={"explain": True},
        )
        assert nba.status_code == 200 and nba.json()["suggestions"] == []
        assert {f["reason"] for f in nba.json()["funnel"]} <= {"model_missing", "no_consent", "objection"}
        lists = c.post(
            "/v1/target-lists",
            headers={"X-API-Key": keys["marketing"]},
            json={"objective": "win_back", "channel": "email", "size": 10},
        )
        assert lists.status_code == 409 and "no clv model" in lists.json()["detail"]


def test_the_score_command_names_the_models_it_had_none_for(partial) -> None:
    env = {**os.environ, "KUNDENWERT_HOME": str(partial["home"]), "COLUMNS": "250"}
    env.pop("KUNDENWERT_DATABASE_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    r = subprocess.run(
        [sys.executable, "-m", "kundenwert.cli", "score"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "clv v1, response v1" in r.stdout
    assert "no champion for churn, winback, affinity" in r.stdout
    assert "retention_voucher" in r.stdout


def test_with_every_model_nothing_is_unavailable(partial) -> None:
    from kundenwert.models.specs import SPECS

    margins = partial["client"].app.state.serving.margins
    assert load_catalog().unavailable(list(SPECS), margins) == {}
    assert load_catalog().unavailable(list(SPECS)) == {}


def test_a_champion_that_does_not_load_is_an_error_not_a_missing_model(monkeypatch) -> None:
    import kundenwert.experiments.registry as registry
    from kundenwert.serving.scoring import load_champions

    monkeypatch.setattr(
        registry, "alias_version", lambda name, alias="champion": "3" if name == "clv" else None
    )

    def broken(name: str, version: str):
        raise ConfigurationError(f"cannot load kundenwert-{name} version {version}")

    monkeypatch.setattr(registry, "load_version", broken)
    with pytest.raises(ConfigurationError, match="cannot load kundenwert-clv version 3"):
        load_champions()
    monkeypatch.setattr(registry, "load_version", lambda name, version: f"{name}@{version}")
    assert load_champions() == ({"clv": "clv@3"}, {"clv": "3"})


def test_a_store_without_categories_passes_the_catalog_check_and_cannot_serve_cross_sell() -> None:
    from kundenwert.datasets.design import CATEGORIES

    catalog = load_catalog()
    catalog.check_names([])  # nothing to check category names against
    catalog.check_names(list(CATEGORIES))
    with pytest.raises(ConfigurationError, match="unknown category 'fashion'"):
        catalog.check_names([c for c in CATEGORIES if c != "fashion"])
    models = ["clv", "churn", "winback", "affinity", "response"]
    unavailable = catalog.unavailable(models, {})
    assert set(unavailable) == {a.id for a in catalog.actions if a.kind == "cross_sell"}
    assert unavailable["xsell_toys_kids"] == "needs margin_toys_kids: no purchases of toys_kids in the store"
    only = catalog.unavailable(["response", "churn"])
    assert only["service_call"] == (
        "needs clv: no clv model in this scoring run; needs winback: no winback model in this scoring run"
    )
