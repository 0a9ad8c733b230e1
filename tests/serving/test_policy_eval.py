"""Off-policy evaluation on the decision log (``kundenwert evaluate-policy``): decisions made by
the service with exploration, outcomes reported as feedback from a known truth (each action's
conversion probability), and the estimates of policies that were not run set against the truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from kundenwert.serving.catalog import load_catalog
from kundenwert.serving.exploration import Explorer
from kundenwert.serving.policy_eval import evaluate_log, evaluate_store, read_log, target_scores
from tests.serving.conftest import own_world

# a world of its own with 3,000 decisions and their feedback (about a minute): with the slow suites, which CI runs; `make test` stays under 15 minutes
pytestmark = pytest.mark.slow

SHARE = 0.4


def _truth(action_ids: list[str]) -> dict[str, float]:
    """A conversion probability per action, far apart, so that which action a policy shows
    matters: 0.05, 0.25, 0.45, 0.15, 0.35, ... in catalog order."""
    return {a: 0.05 + 0.1 * ((2 * i) % 5) for i, a in enumerate(action_ids)}


@pytest.fixture(scope="module")
def logged(imported_world, trained_small, small_config, tmp_path_factory):
    """A world whose every customer got one email decision with exploration at ``SHARE``; nine in
    ten shown suggestions reported sent, and converted with the truth's probability."""
    with own_world(imported_world, trained_small, small_config, tmp_path_factory, "kw-ope") as world:
        c, state = world["client"], world["client"].app.state.serving
        truth = _truth(state.catalog.ids)
        state.explorer = Explorer({}, SHARE, seed=5)
        rng = np.random.default_rng(9)
        sales, campaign = {"X-API-Key": world["keys"]["sales"]}, {"X-API-Key": world["keys"]["campaign"]}
        events, reported, skipped = [], {}, 0
        for n, cid in enumerate(world["customers"]):
            body = c.get(
                f"/v1/customers/{cid}/next-best-actions", headers=sales, params={"channel": "email"}
            ).json()
            if not body["suggestions"]:
                continue
            shown = body["suggestions"][0]
            if n % 10 == 0:
                skipped += 1  # never reported: left out of the evaluation
                continue
            converted = bool(rng.random() < truth[shown["action_id"]])
            reported[body["decision_id"]] = (shown["action_id"], converted)
            for outcome in ("sent", "converted") if converted else ("sent",):
                events.append(
                    {
                        "event_id": f"{body['decision_id']}-{outcome}",
                        "decision_id": body["decision_id"],
                        "action_id": shown["action_id"],
                        "channel": "email",
                        "outcome": outcome,
                        "occurred_at": "2026-01-02T10:00:00Z",
                    }
                )
        for start in range(0, len(events), 1000):
            r = c.post("/v1/feedback", headers=campaign, json={"events": events[start : start + 1000]})
            assert r.status_code == 200, r.text
        state.decisions.flush()
        world.update(truth=truth, reported=reported, skipped=skipped)
        yield world


def test_the_log_holds_every_reported_slot_with_its_candidates_and_probabilities(logged) -> None:
    log = read_log(logged["store"].engine)
    long = log.long
    assert log.slots == len(logged["reported"]) >= 300
    assert log.left_out == {"slots without a report on what was shown": logged["skipped"]}
    sums = long.groupby("slot")["logging_prob"].sum()
    assert np.allclose(sums, 1.0)
    shown = long[long["shown"]]
    assert len(shown) == log.slots
    for _, row in shown.iterrows():
        action, converted = logged["reported"][row["decision_id"]]
        assert row["action_id"] == action and row["reward"] == float(converted)
    explored = shown[shown["position"] > 0]
    assert 0 < len(explored) < len(shown) * SHARE  # some explored (never more than the share)


def _true_value(log, target: np.ndarray, truth: dict[str, float]) -> float:
    """The truth's conversion rate of the policy that shows each slot's best target candidate."""
    long = log.long.assign(target=target)
    long = long[long.groupby("slot")["target"].transform(lambda s: s.notna().any()).astype(bool)]
    best = long.loc[long["target"].fillna(-np.inf).groupby(long["slot"]).idxmax()]
    return float(best["action_id"].map(truth).mean())


def test_the_greedy_policy_of_the_logged_catalog_is_estimated_as_the_truth_says(logged) -> None:
    store, truth = logged["store"], logged["truth"]
    report = evaluate_store(store, load_catalog(), n_boot=500, seed=1)
    ev = report.evaluation
    # the same catalog on the same run: the target shows each slot's best-scored candidate
    log = read_log(store.engine)
    long = log.long
    first = long[long["position"] == 0].set_index("slot")
    shown = long[long["shown"]].set_index("slot")
    w = (shown["position"] == 0) / first["logging_prob"].reindex(shown.index)
    assert ev.ips.estimate == pytest.approx(float((w * shown["reward"]).mean()), rel=1e-9)
    assert ev.snips.estimate == pytest.approx(float((w * shown["reward"]).sum() / w.sum()), rel=1e-9)
    assert ev.logged.estimate == pytest.approx(float(shown["reward"].mean()), rel=1e-12)
    true = float(first["action_id"].map(truth).mean())
    for e in (ev.ips, ev.snips, ev.dr):
        assert abs(e.estimate - true) < 4 * e.se, (e.name, e.estimate, true, e.se)
    assert report.slots == len(logged["reported"])
    assert {r["estimator"] for r in report.rows()} == {"logged", "ips", "snips", "dr", "dm"}


def test_a_catalog_that_was_not_run_is_estimated_as_the_truth_says(logged, tmp_path) -> None:
    """A candidate catalog that prizes the action the truth rates worst (lever 50): the estimates
    must find it worse than what was logged, within their intervals' reach of its true value."""
    from kundenwert.serving.catalog import DEFAULT_CATALOG
    from kundenwert.serving.scores_store import read_scores
    from kundenwert.serving.scoring import category_margins

    store, truth = logged["store"], logged["truth"]
    log = read_log(store.engine)
    offered = log.long["action_id"].value_counts()
    worst = min((a for a in offered.index if offered[a] >= 100), key=truth.get)
    text = DEFAULT_CATALOG.read_text(encoding="utf-8")
    at = text.index(f'id = "{worst}"')
    end = text.find("[[actions]]", at)
    block = "\n".join(
        line for line in text[at : end if end >= 0 else None].splitlines() if not line.startswith("lever")
    )
    block = block.replace(f'id = "{worst}"', f'id = "{worst}"\nlever = 50.0', 1)
    path = tmp_path / "prize-the-worst.toml"
    path.write_text(text[:at] + block + "\n\n" + (text[end:] if end >= 0 else ""))
    candidate = load_catalog(path)
    scores, propensity, _ = read_scores(store.engine)
    margins = category_margins(store.read_table("purchases", ["amount", "margin", "category"]))
    target = target_scores(log.long, candidate, scores, propensity, margins)
    true = _true_value(log, target, truth)
    report = evaluate_log(log, target, n_boot=500, seed=2)
    ev = report.evaluation
    assert true < ev.logged.estimate  # the truth: the candidate is worse
    for e in (ev.ips, ev.snips, ev.dr):
        assert abs(e.estimate - true) < 4 * e.se, (e.name, e.estimate, true, e.se)
    assert report.difference["dr"]["high"] < 0  # and the estimate says so
    # the CLI gives the same numbers
    runner = CliRunner()
    from kundenwert.cli import app

    env = {"KUNDENWERT_DATABASE_URL": logged["url"], "KUNDENWERT_HOME": str(logged["home"])}
    r = runner.invoke(
        app,
        ["evaluate-policy", "--catalog", str(path), "--format", "json", "--n-boot", "500", "--seed", "2"],
        env=env,
    )
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    by = {e["estimator"]: e for e in shown["estimates"]}
    assert by["dr"]["estimate"] == pytest.approx(ev.dr.estimate, rel=1e-9)
    assert shown["slots"] == report.slots and shown["left_out"] == report.left_out
    table = runner.invoke(
        app, ["evaluate-policy", "--catalog", str(path), "--n-boot", "200"], env={**env, "COLUMNS": "250"}
    )
    assert table.exit_code == 0 and "doubly robust" in table.stdout and "left out" in table.stdout


def test_bad_requests_get_a_clear_refusal(logged) -> None:
    from kundenwert.cli import app

    runner = CliRunner()
    env = {"KUNDENWERT_DATABASE_URL": logged["url"], "KUNDENWERT_HOME": str(logged["home"])}
    r = runner.invoke(app, ["evaluate-policy", "--models", "response=999"], env=env)
    assert r.exit_code != 0 and "no scoring run the store keeps used response=999" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["evaluate-policy", "--models", "response"], env=env)
    assert r.exit_code != 0 and "model=version pairs" in r.output
    r = runner.invoke(app, ["evaluate-policy", "--reward", "love"], env=env)
    assert r.exit_code != 0 and "reward must be one of" in r.output
    r = runner.invoke(app, ["evaluate-policy", "--since", "2999-01-01"], env=env)
    assert r.exit_code != 0 and "no logged decision to evaluate on" in r.output
