"""Campaign results end to end on a served sample world: a target list is made, sent (feedback
naming its members), its outcomes arrive (feedback and later purchases), and the CLI and the API
show its lift against its control group, with intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats import proportion as smp
from typer.testing import CliRunner

from kundenwert.cli import app
from tests.serving.conftest import own_world

# a private trained world served, sent and measured: minutes, so with the slow suites (CI runs them)
pytestmark = pytest.mark.slow

SENT = pd.Timestamp("2026-10-01T09:00:00Z")


@pytest.fixture(scope="module")
def sent_list(imported_world, trained_small, small_config, tmp_path_factory):
    """A world with one list sent: every target member got the e-mail; 40% of them and 10% of
    the control group bought within a week (purchases imported), and 30% of the treated
    converted (feedback). Yields (world, list id, members, the ids of the buyers)."""
    with own_world(imported_world, trained_small, small_config, tmp_path_factory, "kw-results") as w:
        c, keys = w["client"], w["keys"]
        made = c.post(
            "/v1/target-lists",
            headers={"X-API-Key": keys["marketing"]},
            json={
                "name": "autumn newsletter",
                "objective": "action",
                "action_id": "newsletter",
                "channel": "email",
                "size": 800,
                "control_share": 0.3,
                "detect_lift": 0.05,
            },
        )
        assert made.status_code == 201, made.text
        list_id = made.json()["list_id"]
        got = c.get(
            f"/v1/target-lists/{list_id}?limit=10000", headers={"X-API-Key": keys["marketing"]}
        ).json()
        members = pd.DataFrame(got["members"])
        target = members[members["group"] == "target"]
        rng = np.random.default_rng(5)
        events = []
        for cid in target["customer_id"]:
            events.append(_event(f"{list_id}-{cid}-sent", list_id, cid, "sent", SENT))
            if rng.random() < 0.3:
                events.append(
                    _event(f"{list_id}-{cid}-conv", list_id, cid, "converted", SENT + pd.Timedelta(days=2))
                )
        for i in range(0, len(events), 1_000):
            r = c.post(
                "/v1/feedback", headers={"X-API-Key": keys["campaign"]}, json={"events": events[i : i + 1000]}
            )
            assert r.status_code == 200, r.text
        bought = [
            cid
            for cid, g in zip(members["customer_id"], members["group"], strict=True)
            if rng.random() < (0.4 if g == "target" else 0.1)
        ]
        folder = w["home"] / "later"
        folder.mkdir()
        pd.DataFrame(
            {
                "purchase_id": [f"later-{i}" for i in range(len(bought))],
                "customer_id": bought,
                "purchased_at": (SENT + pd.Timedelta(days=3)).isoformat(),
                "category": "fashion",
                "amount": 50.0,
                "margin": 20.0,
            }
        ).to_csv(folder / "purchases.csv", index=False)
        from kundenwert.db.store import Store
        from kundenwert.features.importer import import_folder

        import_folder(folder, Store(w["url"]), mode="append")
        yield w, list_id, members, bought


def _event(event_id: str, list_id: str, customer_id: str, outcome: str, at: pd.Timestamp) -> dict:
    return {
        "event_id": event_id,
        "list_id": list_id,
        "customer_id": customer_id,
        "action_id": "newsletter",
        "channel": "email",
        "outcome": outcome,
        "occurred_at": at.isoformat(),
    }


def test_the_list_answer_plans_the_control_group(sent_list):
    w, list_id, members, _ = sent_list
    r = w["client"].get(f"/v1/target-lists/{list_id}", headers={"X-API-Key": w["keys"]["marketing"]}).json()
    plan = r["summary"]["planning"]
    assert 0 < plan["base_rate"] < 1 and plan["lift"] == 0.05
    assert plan["minimum_detectable_lift"] > 0 and plan["list_size_needed"] > 0
    # the list's own sizes detect exactly the MDE at 80% power
    from kundenwert.models.lift import power_diff_proportions

    n0 = int((members["group"] == "control").sum())
    n1 = len(members) - n0
    assert power_diff_proportions(
        plan["base_rate"], plan["minimum_detectable_lift"], n1, n0
    ) == pytest.approx(0.8, abs=1e-6)


def test_feedback_naming_a_list_member_goes_into_the_contact_history_under_the_list(sent_list):
    w, list_id, members, _ = sent_list
    contacts = w["store"].read_table("contacts")
    mine = contacts[contacts["campaign_id"].astype("object") == list_id]
    target = members[members["group"] == "target"]
    assert set(mine["customer_id"]) == set(target["customer_id"])  # one contact per target member
    assert len(mine) == len(target) and (mine["direction"] == "outbound").all()
    assert not mine["is_control"].astype(bool).any()
    assert (mine["outcome"] == "converted").sum() > 0


def test_feedback_for_a_control_member_or_a_stranger_is_refused(sent_list):
    w, list_id, members, _ = sent_list
    control = members.loc[members["group"] == "control", "customer_id"].iloc[0]
    target = members.loc[members["group"] == "target", "customer_id"].iloc[0]
    stranger = next(c for c in w["customers"] if c not in set(members["customer_id"]))
    h = {"X-API-Key": w["keys"]["campaign"]}
    post = lambda e: w["client"].post("/v1/feedback", headers=h, json={"events": [e]})  # noqa: E731
    r = post(_event("x-control", list_id, control, "sent", SENT))
    assert r.status_code == 409 and "control group" in r.json()["detail"]
    assert post(_event("x-stranger", list_id, stranger, "sent", SENT)).status_code == 404
    assert post(_event("x-nolist", "f" * 32, target, "sent", SENT)).status_code == 404
    wrong = {**_event("x-sms", list_id, target, "sent", SENT), "channel": "sms"}
    assert post(wrong).status_code == 409
    both = {**_event("x-both", list_id, target, "sent", SENT), "decision_id": "0" * 32}
    assert post(both).status_code == 422
    # a repeat of a stored event is a no-op
    again = post(_event(f"{list_id}-{target}-sent", list_id, target, "sent", SENT))
    assert again.status_code == 200 and again.json()["stored"] == 0


def test_cli_results_show_the_lift_of_the_list_with_its_interval(sent_list):
    w, list_id, members, bought_ids = sent_list
    env = {"KUNDENWERT_HOME": str(w["home"]), "KUNDENWERT_DATABASE_URL": w["url"]}
    run = CliRunner().invoke(app, ["results", "--list", list_id, "--by", "", "--format", "json"], env=env)
    assert run.exit_code == 0, run.output
    report = json.loads(run.output)
    [cell] = report["cells"]
    n0 = int((members["group"] == "control").sum())
    assert (cell["treated"], cell["control"]) == (len(members) - n0, n0)
    # 40% of the targets against 10% of the control were made to buy (the world ends before the
    # send, so these are the only purchases in the window). Whether one interval holds the planted
    # 30 points is chance (95%; coverage is measured over many worlds in test_results.py and
    # test_lift.py); here the report must equal the reference statistics of the counts as sent.
    buyers = set(bought_ids)
    got = members.assign(bought=members["customer_id"].isin(buyers))
    x1 = int(got.loc[got["group"] == "target", "bought"].sum())
    x0 = int(got.loc[got["group"] == "control", "bought"].sum())
    n1 = len(members) - n0
    bought = cell["metrics"]["bought"]
    assert (bought["treated_rate"], bought["control_rate"]) == pytest.approx((x1 / n1, x0 / n0))
    low, high = smp.confint_proportions_2indep(
        np.float64(x1), np.float64(n1), np.float64(x0), np.float64(n0), method="newcomb", compare="diff"
    )
    assert (bought["lift"]["low"], bought["lift"]["high"]) == pytest.approx((low, high), abs=1e-9)
    assert bought["lift"]["low"] > 0 and bought["significant"]  # 30 points on 800: ten standard errors
    revenue = cell["metrics"]["revenue"]
    y1 = 50.0 * got.loc[got["group"] == "target", "bought"].to_numpy(dtype=float)
    y0 = 50.0 * got.loc[got["group"] == "control", "bought"].to_numpy(dtype=float)
    welch = stats.ttest_ind(y1, y0, equal_var=False).confidence_interval()
    assert (revenue["lift"]["low"], revenue["lift"]["high"]) == pytest.approx((welch.low, welch.high))
    assert revenue["lift"]["low"] > 0
    # feedback records the treated only: the response lift is flagged, and judged by purchases
    assert "control_unmeasured" in [x["check"] for x in cell["warnings"]]
    assert cell["cost"] == pytest.approx(0.01 * cell["treated"])  # the newsletter's e-mail cost
    table = CliRunner().invoke(app, ["results", "--list", list_id], env={**env, "COLUMNS": "200"})
    assert table.exit_code == 0 and "newsletter" in table.output and "[" in table.output


def test_api_results_of_the_list_and_the_campaigns_overview(sent_list):
    w, list_id, _, _ = sent_list
    c, keys = w["client"], w["keys"]
    r = c.get(f"/v1/target-lists/{list_id}/results?by=channel", headers={"X-API-Key": keys["data_science"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [cell["keys"] for cell in body["cells"]] == [{"channel": "email"}]
    assert body["scope"] == {"list_id": list_id}
    # the uplift predicted when the list was made, against what happened: the outcomes above
    # were drawn at random within each group, so the model ranks no better than chance. Its 95%
    # interval misses zero in one run of twenty (the draw of the control group changes with the
    # list id); zero within two widths of the interval (about six standard errors) does not.
    model = body["model"]
    qini = model["qini"]
    assert model["metric"] == "bought" and qini["low"] <= qini["estimate"] <= qini["high"]
    width = qini["high"] - qini["low"]
    assert width > 0 and qini["low"] - width < 0 < qini["high"] + width
    assert [row["fraction"] for row in model["top"]] == [0.1, 0.2, 0.3]
    assert model["curve"]["fraction"][0] == 0.0 and model["curve"]["fraction"][-1] == 1.0
    overview = c.get("/v1/campaigns", headers={"X-API-Key": keys["marketing"]}).json()["campaigns"]
    mine = [x for x in overview if x["campaign_id"] == list_id]
    assert mine and mine[0]["kind"] == "target_list" and mine[0]["headline"]["metric"] == "bought"
    # the contact history's campaigns are there too, with their headline lift of responses
    history = [x for x in overview if x["kind"] == "contact_history" and not x.get("suppressed")]
    assert history and all(x["headline"]["metric"] == "responded" for x in history)
    one = history[0]["campaign_id"]
    r = c.get(f"/v1/campaigns/{one}/results", headers={"X-API-Key": keys["marketing"]})
    assert r.status_code == 200 and r.json()["cells"]
    png = c.get(
        f"/v1/target-lists/{list_id}/results/lift_bought.png", headers={"X-API-Key": keys["marketing"]}
    )
    assert (
        png.status_code == 200
        and png.headers["content-type"] == "image/png"
        and png.content[:4] == b"\x89PNG"
    )
    curve = c.get(
        f"/v1/campaigns/{one}/results/cumulative_revenue.png", headers={"X-API-Key": keys["marketing"]}
    )
    assert curve.status_code == 200 and curve.content[:4] == b"\x89PNG"


def test_results_refuse_the_wrong_role_and_unknown_campaigns(sent_list):
    w, list_id, _, _ = sent_list
    c, keys = w["client"], w["keys"]
    assert c.get("/v1/campaigns", headers={"X-API-Key": keys["sales"]}).status_code == 403
    r = c.get("/v1/campaigns/no-such-campaign/results", headers={"X-API-Key": keys["marketing"]})
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    r = c.get(f"/v1/target-lists/{list_id}/results?by=weekday", headers={"X-API-Key": keys["marketing"]})
    assert r.status_code == 422


def test_cli_writes_the_plots_and_logs_the_results_to_mlflow(sent_list, tmp_path):
    w, list_id, _, _ = sent_list
    env = {"KUNDENWERT_HOME": str(w["home"]), "KUNDENWERT_DATABASE_URL": w["url"]}
    run = CliRunner().invoke(
        app, ["results", "--list", list_id, "--plots", str(tmp_path), "--mlflow"], env=env
    )
    assert run.exit_code == 0, run.output
    assert {p.name for p in tmp_path.iterdir()} == {"lift.png", "lift_bought.png", "cumulative_revenue.png"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in tmp_path.iterdir())
    import mlflow

    from kundenwert.experiments.registry import RESULTS_EXPERIMENT, _tracking

    (tmp_path / "mlflow").mkdir()
    with _tracking():
        client = mlflow.MlflowClient()
        [found] = client.search_runs([client.get_experiment_by_name(RESULTS_EXPERIMENT).experiment_id])
        names = {a.path for a in client.list_artifacts(found.info.run_id)}
        plots = {a.path for a in client.list_artifacts(found.info.run_id, "plots")}
        path = client.download_artifacts(found.info.run_id, "results.json", str(tmp_path / "mlflow"))
    report = json.loads(Path(path).read_text())
    assert "results.json" in names and "plots/lift_bought.png" in plots
    # aggregates only: no member of the list appears in what MLflow keeps
    text = json.dumps(report)
    assert not any(f'"{cid}"' in text for cid in sent_list[2]["customer_id"])
    assert found.data.metrics["cell0_bought_lift"] > 0
