"""The closed-loop simulation on a small sample world: the per-candidate truth is the world's own,
the harness reports the true incremental value of the contacts it made, logs what off-policy
evaluation needs, and every policy of a seed sees the same world."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kundenwert.datasets import design as D
from kundenwert.datasets.sample import Variants, generate_world, write_world
from kundenwert.datasets.truth import contact_probabilities, load_contact_truth, load_truth

# a minute of simulated months (several trainings): with the slow suites, which CI runs; `make test` stays under 15 minutes
pytestmark = pytest.mark.slow

CONFIG = {"months": 2, "contacts": 40, "budget": 8.0, "retrain_every": 1, "seed": 3}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim-world")
    write_world(generate_world(1_500, seed=3), folder, fmt="parquet")
    return folder


def _fast():
    """The mechanics, not the models' quality: 30 iterations for every model (the response model
    too), two training cutoffs."""
    from kundenwert.models.specs import SPECS
    from kundenwert.training.config import ExperimentConfig

    return ExperimentConfig.model_validate(
        {
            "models": {m: {"params": {"max_iter": 30}, "gates": {}} for m in SPECS},
            "data": {"max_train_cutoffs": 2},
            "split": {"method": "customer"},
        }
    )


@pytest.fixture(scope="module")
def sim(world):
    from kundenwert.simulation import SimulationConfig, simulate

    return simulate(world, SimulationConfig(**CONFIG), experiment=_fast())


@pytest.mark.parametrize("sure", [0.0, 0.4])
def test_contact_probabilities_are_the_worlds_own(tmp_path, sure):
    """For every campaign contact of the world, the per-candidate truth gives exactly the
    probabilities the world drew its response from (treated and control, left or not)."""
    w = generate_world(800, seed=11, variants=Variants(sure_things=sure))
    write_world(w, tmp_path, fmt="parquet")
    truth, ct = load_truth(str(tmp_path)), load_contact_truth(str(tmp_path))
    at = w.tables["contacts"].set_index("contact_id")["contacted_at"].reindex(ct["contact_id"]).to_numpy()
    p_t, p_c = contact_probabilities(
        truth, ct["customer_id"].to_numpy(), ct["action_id"].astype(str).to_numpy(),
        ct["channel"].astype(str).to_numpy(), at,
    )  # fmt: skip
    assert len(ct) > 1000
    # the world's contact times are rounded to seconds: a death within that second may differ
    np.testing.assert_allclose(p_t, ct["p_response_treated"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(p_c, ct["p_response_control"], rtol=1e-12, atol=0)
    if sure:
        assert truth["sure_thing"].any()


def test_contact_probabilities_by_hand():
    """One customer's probability worked out from the design's numbers."""
    params = pd.DataFrame(
        {
            "customer_id": ["C1"],
            "death_at": [pd.NaT],
            "response_individual": [0.3],
            "price_sensitivity": [0.9],
            "preferred_channel": ["sms"],
            "age_group": ["25-34"],
            **{f"category_share_{c}": [1 / len(D.CATEGORIES)] for c in D.CATEGORIES},
        }
    )
    p_t, p_c = contact_probabilities(params, ["C1"], ["retention_voucher"], ["sms"], "2025-03-01")
    logit = -3.2 + 0.5 + 1.2 + 0.3 + 0.3 + 1.5 * 0.4  # sms base, action, preferred, age 25-34, u, voucher
    assert p_t[0] == pytest.approx(1 / (1 + np.exp(-logit)))
    assert p_c[0] == pytest.approx(1 / (1 + np.exp(-(-4.6 + 0.5 * 0.3))))
    # unknown actions have no truth
    assert np.isnan(contact_probabilities(params, ["C1"], ["other"], ["sms"], "2025-03-01")[0][0])


def test_incremental_value_is_the_truth_of_the_contacts_made(sim, world):
    """Per policy and month, the reported true incremental responders and value are the sums over
    the contacted (not the held out) of ``p_treated - p_control`` and that times the value,
    recomputed here from the truth at each contact's moment."""
    truth = load_truth(str(world))
    shown = sim.log[sim.log["shown"]]
    p_t, p_c = contact_probabilities(
        truth, shown["customer_id"].to_numpy(), shown["action_id"].to_numpy(), shown["channel"].to_numpy(),
        shown["contacted_at"].to_numpy(),
    )  # fmt: skip
    target = (shown["group"] == "target").to_numpy()
    lift = np.where(target, p_t - p_c, 0.0)
    by_hand = (
        pd.DataFrame(
            {
                "policy": shown["policy"].to_numpy(),
                "month": shown["month"].to_numpy(),
                "responders": lift,
                "value": lift * shown["value"].to_numpy(),
                "contacts": target,
            }
        )
        .groupby(["policy", "month"])
        .sum()
    )
    months = sim.months.assign(
        month=sim.months["month"].map({f"{t:%Y-%m}": i for i, t in enumerate(sim.dates)})
    )
    got = months.set_index(["policy", "month"]).loc[by_hand.index]
    np.testing.assert_allclose(got["incremental_responders"], by_hand["responders"], rtol=1e-9)
    np.testing.assert_allclose(got["incremental_value"], by_hand["value"], rtol=1e-9)
    np.testing.assert_array_equal(got["contacts"], by_hand["contacts"])
    assert (got["unvalued"] == 0).all()
    assert np.isfinite(shown["value"]).all()


def test_ranked_and_random_policies_contact_the_same_number(sim):
    m = sim.months.set_index(["policy", "month"])
    for policy in ("random", "response", "uplift"):
        assert (m.loc[policy, "contacts"] == CONFIG["contacts"]).all(), policy
    for policy in ("greedy", "optimised"):  # the budget binds, control rows cost nothing
        assert (m.loc[policy, "cost"] <= CONFIG["budget"] + 1e-9).all()
        assert (m.loc[policy, "contacts"] > 0).all()


def test_logging_probabilities(sim):
    """Random: 1/k on each of a decided customer's k candidates; the deterministic policies: 1 on
    the shown candidate, 0 on the others. Every decision has exactly one shown candidate."""
    log = sim.log
    k = log.groupby("decision_id")["action_id"].transform("size")
    shown = log.groupby("decision_id")["shown"].sum()
    assert (shown == 1).all()
    rnd = log["policy"] == "random"
    np.testing.assert_allclose(log.loc[rnd, "logging_prob"], 1.0 / k[rnd])
    assert (k[rnd] > 1).any()  # some customers have a choice
    det = ~rnd
    np.testing.assert_array_equal(log.loc[det, "logging_prob"], log.loc[det, "shown"].astype(float))
    # OPE-ready: every candidate carries its truth
    assert log[["p_treated", "p_control", "value"]].notna().all().all()
    from kundenwert.models.ope import LoggedDecisions

    one = log[rnd]
    logged, _ = LoggedDecisions.from_long(
        one["decision_id"],
        one["shown"],
        one["logging_prob"],
        one["responded"].astype(float),
        one["logging_prob"],
    )
    assert logged.n == one["decision_id"].nunique()


def test_policies_see_the_same_world(sim):
    """At the first month every policy starts from the same data and models: the policies sharing
    a catalog see the same candidates, the budget-optimised answer is worth at least the greedy
    one by the value both maximise, and the same customer, action, channel and month draws the
    same truth and the same response under every policy."""
    m0 = sim.months[sim.months["month"] == f"{sim.dates[0]:%Y-%m}"].set_index("policy")
    assert m0.loc["uplift", "pool"] == m0.loc["greedy", "pool"] == m0.loc["optimised", "pool"]
    assert m0.loc["optimised", "score"] >= m0.loc["greedy", "score"] - 1e-6
    shown = sim.log[sim.log["shown"]]
    key = ["month", "customer_id", "action_id", "channel", "group"]
    twice = shown[shown.duplicated(key, keep=False)]
    assert twice["policy"].nunique() > 1
    spread = twice.groupby(key)[["p_treated", "p_control", "responded"]].nunique()
    assert (spread == 1).all().all()


def test_feedback_joins_the_history_and_retrains(sim):
    """The recorded contacts (treated and control) carry the drawn outcomes, and the response
    model is retrained on schedule."""
    for policy, rows in sim.contacts.items():
        mine = sim.log[(sim.log["policy"] == policy) & sim.log["shown"]]
        assert len(rows) == len(mine)
        assert rows["contact_id"].is_unique
        assert set(rows["outcome"]) <= {"none", "responded", "converted"}
        responded = rows["outcome"].isin(["responded", "converted"]).to_numpy()
        assert responded.sum() == mine["responded"].sum()
        assert rows["is_control"].sum() == (mine["group"] == "control").sum()
        assert (rows["direction"] == "outbound").all()
    assert sim.months.groupby("month")["retrained"].first().tolist() == [False, True]


def test_simulate_command(world, tmp_path, monkeypatch):
    """``kundenwert simulate`` prints the table per policy and writes the decision log; an unknown
    policy is refused before any work."""
    from typer.testing import CliRunner

    import kundenwert.simulation as simulation
    from kundenwert.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["simulate", str(world), "--policies", "random,best"])
    assert bad.exit_code != 0 and "unknown policies best" in bad.output
    monkeypatch.setattr(simulation, "fast_config", lambda seed=0: _fast())
    log = tmp_path / "log.parquet"
    args = ["simulate", str(world), "--months", "1", "--contacts", "20", "--policies", "random,uplift"]
    r = runner.invoke(app, [*args, "--log", str(log)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "random" in r.output and "uplift" in r.output and "incr. value" in r.output
    assert set(pd.read_parquet(log)["policy"]) == {"random", "uplift"}
