"""Models in production: the service scores customers its run does not hold with the run's own
models (and they reproduce the stored scores); a new run is picked up on a schedule, and one whose
models fail verification is refused while the old run keeps serving."""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from kundenwert.db.store import Store, spec_from_store
from kundenwert.features.snapshot import load_frames, spec_for
from kundenwert.serving.app import create_app
from kundenwert.serving.scores_store import read_scores, write_scores
from kundenwert.serving.scoring import score_customers

TABLES = ("customers", "customer_attributes", "purchases", "contacts", "consents", "complaints", "offers")
IDS = {
    "purchases": "purchase_id",
    "contacts": "contact_id",
    "complaints": "complaint_id",
    "offers": "offer_id",
}


def _copy_db(served, tmp_path) -> str:
    """A private copy of the served store (SQLite's backup: consistent while the app runs)."""
    src = sqlite3.connect(served["home"] / "kw.db")
    dst = sqlite3.connect(tmp_path / "kw.db")
    src.backup(dst)
    src.close()
    dst.close()
    return f"sqlite:///{tmp_path / 'kw.db'}"


def _clone_customer(path, original: str, clone: str) -> None:
    """Every row of ``original`` again under the customer id ``clone`` (and new row ids)."""
    conn = sqlite3.connect(path)
    with conn:
        for table in TABLES:
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            select = ", ".join(
                "?" if c == "customer_id" else (f"'{clone}-' || {c}" if c == IDS.get(table) else c)
                for c in columns
            )
            conn.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select} FROM {table} WHERE customer_id = ?",
                (clone, original),
            )
    conn.close()


def test_the_spec_from_the_store_is_the_spec_of_the_frames(served) -> None:
    store = served["store"]
    assert spec_from_store(store) == spec_for(load_frames(store))


def test_online_scores_reproduce_the_stored_run(served) -> None:
    """The run's customers scored again one query at a time, at the run's cutoff, with the models
    the service loaded: the same CLV, risks, affinities, propensities and reasons."""
    state = served["client"].app.state.serving
    run = state.current
    stored = run.main.scores
    ids = [str(i) for i in stored.index[:: max(1, len(stored) // 40)][:40]]
    again, propensity = score_customers(state.store, ids, run.models, state.catalog, run.spec, run.cutoff)
    assert list(again.index) == ids
    numbers = ["clv", "churn", "winback", *[c for c in stored.columns if c.startswith("affinity_")]]
    for c in numbers:
        np.testing.assert_allclose(again[c], stored.loc[ids, c], rtol=1e-9, equal_nan=True, err_msg=c)
    for c in ("reasons_churn", "reasons_winback", "reasons_value", "status", "open_complaint"):
        assert again[c].tolist() == stored.loc[ids, c].tolist(), c
    _, stored_propensity, _ = read_scores(state.store.engine)
    mine = stored_propensity.loc[ids].sort_index()
    np.testing.assert_allclose(
        propensity.sort_index().loc[mine.index, "response"], mine["response"], rtol=1e-9
    )


def test_a_customer_registered_after_the_run_is_scored_online(served, tmp_path) -> None:
    url = _copy_db(served, tmp_path)
    original_state = served["client"].app.state.serving
    sales = {"X-API-Key": served["keys"]["sales"]}
    # an active customer with suggestions now, cloned under an id the run does not hold
    for cid in served["customers"]:
        body = (
            served["client"]
            .get(
                f"/v1/customers/{cid}/next-best-actions",
                headers=sales,
                params={"explain": "true", "limit": 50},
            )
            .json()
        )
        if body["suggestions"] and original_state.scores.at[cid, "status"] == "active":
            break
    _clone_customer(tmp_path / "kw.db", cid, "new-1")
    with TestClient(create_app(Store(url), reload_seconds=0)) as c:
        state = c.app.state.serving
        assert state.current.main.candidates.position("new-1") is None  # not in the run
        r = c.get(
            "/v1/customers/new-1/next-best-actions", headers=sales, params={"explain": "true", "limit": 50}
        )
        assert r.status_code == 200
        new = r.json()
        assert new["scored"] and new["suggestions"] and new["decision_id"]

        def offered(decision):  # kept, or held out by the control draw (a hash of the customer id)
            return {(s["action_id"], s["channel"]) for s in decision["suggestions"]} | {
                (d["action_id"], d["channel"]) for d in decision["funnel"] if d["reason"] == "control_group"
            }

        assert offered(new) == offered(body)
        view = c.get("/v1/customers/new-1", headers=sales).json()
        old = c.get(f"/v1/customers/{cid}", headers=sales).json()
        assert view["scored"] and view["clv"] == pytest.approx(old["clv"], rel=1e-3)
        assert view["churn_risk"] == pytest.approx(old["churn_risk"], rel=1e-3)
        assert view["reasons"]["churn"] == old["reasons"]["churn"]
        assert view["p_alive"] is None  # BG/NBD is fitted on a whole run, not on one customer
        # campaign scoring mixes run and online customers in the order asked
        r = c.post(
            "/v1/score",
            headers={"X-API-Key": served["keys"]["campaign"]},
            json={"customer_ids": ["new-1", cid, "nobody"]},
        )
        assert [x["customer_id"] for x in r.json()["results"]] == ["new-1", cid]
        assert r.json()["unknown_customer_ids"] == ["nobody"]
        assert all(x["scored"] for x in r.json()["results"])


def _wait(condition, seconds: float = 30.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_a_new_run_is_picked_up_on_schedule_and_a_bad_one_refused(served, tmp_path) -> None:
    url = _copy_db(served, tmp_path)
    store = Store(url)
    scores, propensity, run = read_scores(store.engine)
    cutoff = pd.Timestamp(run["cutoff"])
    with TestClient(create_app(Store(url), reload_seconds=0.3)) as c:
        first = c.get("/health/ready").json()["score_run"]
        assert first == run["run_id"]
        # stored scores the models do not give: verification refuses the run
        wrong = scores.assign(churn=scores["churn"] * 0.5)
        write_scores(store.engine, wrong, propensity, cutoff, run["models"])
        assert _wait(
            lambda: (c.get("/health/ready").json()["last_reload"]["error"] or "").startswith(
                "model verification failed: churn"
            )
        )
        assert c.get("/health/ready").json()["score_run"] == first
        # a run naming a model version the registry does not hold
        write_scores(store.engine, scores, propensity, cutoff, {**run["models"], "churn": "999"})
        assert _wait(lambda: "version 999" in (c.get("/health/ready").json()["last_reload"]["error"] or ""))
        assert c.get("/health/ready").json()["score_run"] == first
        # a good run: swapped in without a request to reload
        good = write_scores(store.engine, scores, propensity, cutoff, run["models"])
        assert _wait(lambda: c.get("/health/ready").json()["score_run"] == good)
        ready = c.get("/health/ready").json()
        assert ready["last_reload"]["ok"] is True
        cid = served["customers"][0]
        r = c.get(f"/v1/customers/{cid}/next-best-actions", headers={"X-API-Key": served["keys"]["sales"]})
        assert r.status_code == 200


def test_verification_compares_the_pairs_scored_again_and_refuses_wrong_propensities(served) -> None:
    """A run scored before the response model was asked only about eligible pairs holds more
    propensities than a new scoring gives: still verified on the pairs both hold. Propensities
    the models do not give are refused."""
    import copy
    import dataclasses

    from kundenwert.errors import ConfigurationError
    from kundenwert.serving.state import verify

    state = served["client"].app.state.serving
    run = state.current

    def with_propensity(values):
        cands = copy.copy(run.main.candidates)
        cands.propensity = values
        return dataclasses.replace(run, main=dataclasses.replace(run.main, candidates=cands))

    held = run.main.candidates.propensity
    assert np.isnan(held).any()  # ineligible pairs are not scored
    verify(state.store, state.catalog, with_propensity(np.where(np.isnan(held), 0.5, held)))
    with pytest.raises(ConfigurationError, match="response propensities"):
        verify(state.store, state.catalog, with_propensity(held * 1.5))


def test_the_coming_months_control_draw_is_worked_out_ahead(served) -> None:
    """The schedule works out next month's control groups before the month begins; this
    month's stay, so both months' requests find theirs."""
    state = served["client"].app.state.serving
    cands = state.current.main.candidates
    now = pd.Timestamp.now(tz="UTC")
    this, coming = now.strftime("%Y-%m"), (now + pd.offsets.MonthBegin(1)).strftime("%Y-%m")
    held = cands.after(this)
    state.warm(now + pd.offsets.MonthBegin(1))
    assert set(cands._after) == {this, coming}
    assert cands.after(this) is held  # not worked out again
    assert not np.array_equal(cands.after(coming)[0], held[0])  # a new draw, not a copy
