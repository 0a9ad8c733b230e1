"""The sample world against its own truth: statistics within stated tolerances (about 4 standard errors)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kundenwert.datasets import design as D
from kundenwert.datasets.sample import generate_world, write_world
from kundenwert.datasets.truth import load_truth, values_at
from kundenwert.features.consent import consent_state

END = pd.Timestamp("2025-12-31", tz="UTC")


@pytest.fixture(scope="module")
def world():
    return generate_world(20_000, seed=7)


@pytest.fixture(scope="module")
def positive(world) -> pd.DataFrame:
    p = world.tables["purchases"]
    p = p[p["amount"] > 0].copy()
    p["t"] = pd.to_datetime(p["purchased_at"]).dt.tz_localize("UTC")
    return p


@pytest.fixture(scope="module")
def orders(positive) -> pd.DataFrame:
    """Orders: the lines a customer bought at one moment."""
    return positive.groupby(["customer_id", "t"], as_index=False)["amount"].sum()


def test_same_seed_same_world_other_seed_other_world() -> None:
    a, b, c = generate_world(2_000, 3), generate_world(2_000, 3), generate_world(2_000, 4)
    for name in a.tables:
        pd.testing.assert_frame_equal(a.tables[name], b.tables[name])
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert not a.tables["purchases"]["amount"].equals(c.tables["purchases"]["amount"])


def test_share_alive_matches_bgnbd_posterior_of_the_true_parameters(world, orders) -> None:
    """Sum over buyers of P(alive | true lambda, p, x, t_x, T) = number the truth says is alive."""
    g = orders.groupby("customer_id")
    x = (g.size() - 1).to_numpy()
    t_x = ((g["t"].max() - g["t"].min()).dt.total_seconds() / 86400).to_numpy()
    T = ((END - g["t"].min()).dt.total_seconds() / 86400).to_numpy()
    tr = world.truth.set_index("customer_id").loc[g.size().index]
    p = np.where(tr["complained_at"].notna(), tr["p_dropout_after_complaint"], tr["p_dropout"])
    stay = (1 - p) * np.exp(-tr["lambda_per_day"].to_numpy() * (T - t_x))
    p_alive = np.where(x == 0, 1.0, stay / (stay + p))
    realised = int(tr["alive_at_end"].sum())
    expected, sd = p_alive.sum(), np.sqrt((p_alive * (1 - p_alive)).sum())
    assert abs(realised - expected) < 4 * sd, (realised, expected, sd)
    assert 0.25 < realised / len(world.truth) < 0.6  # a plausible customer base, not a degenerate one


def test_order_values_follow_gamma_gamma(world, orders) -> None:
    """Order value / true mean spend has mean 1 and variance 1/p (Gamma(p, nu) per order)."""
    tr = world.truth.set_index("customer_id")
    ratio = orders["amount"].to_numpy() / tr.loc[orders["customer_id"], "mean_spend_per_order"].to_numpy()
    expected_var = (1 / tr.loc[orders["customer_id"], "gg_p"]).mean()
    se = np.sqrt(ratio.var() / len(ratio))
    assert abs(ratio.mean() - 1) < 4 * se + 0.005  # cent rounding of lines adds a little
    assert abs(ratio.var() / expected_var - 1) < 0.05


def test_age_group_category_pattern_is_the_designed_one(world, positive) -> None:
    tr = world.truth.set_index("customer_id")
    lines = positive.join(tr[["age_group"]], on="customer_id")
    observed = pd.crosstab(lines["age_group"], lines["category"], normalize="index")
    designed = world.age_group_category.pivot(
        index="age_group", columns="category", values="expected_line_share"
    )
    assert (observed - designed.loc[observed.index, observed.columns]).abs().max().max() < 0.02
    known = [g for g in D.AGE_BANDS if g != "unknown"]
    for j, c in enumerate(D.CATEGORIES):
        rho = stats.spearmanr(observed.loc[known, c], designed.loc[known, c]).statistic
        assert rho >= 0.9, (c, rho)
        # ... and it follows the designed log-weights of the age groups themselves.
        assert stats.spearmanr(observed.loc[known, c], D.AGE_CATEGORY_LOGWEIGHT[:6, j]).statistic >= 0.8, c


def test_treated_respond_more_than_control_on_every_channel(world) -> None:
    c = world.tables["contacts"]
    out = c[c["direction"] == "outbound"].assign(resp=lambda d: d["outcome"].isin(["responded", "converted"]))
    for ch in D.CHANNELS:
        part = out[out["channel"] == ch]
        treated, control = part[~part["is_control"].astype(bool)], part[part["is_control"].astype(bool)]
        p1, p0 = treated["resp"].mean(), control["resp"].mean()
        se = np.sqrt(p1 * (1 - p1) / len(treated) + p0 * (1 - p0) / len(control))
        assert (p1 - p0) / se > 4, (ch, p1, p0)
        # The control group's rate is the organic one the truth describes.
        truth_p0 = (
            world.truth.set_index("customer_id").loc[control["customer_id"], f"response_{ch}_control"].mean()
        )
        assert abs(p0 - truth_p0) < 4 * np.sqrt(truth_p0 * (1 - truth_p0) / len(control)) + 0.002
    share = out["is_control"].astype(bool).mean()
    assert abs(share - D.CONTROL_SHARE) < 0.01


def test_churn_purchases_and_affinity_at_a_cutoff_match_the_truth(world, positive, orders) -> None:
    cut = END - pd.Timedelta(days=180)
    v = values_at(world.truth, cut, (90,))
    alive = v.index[v["alive"]]
    window = (positive["t"] >= cut) & (positive["t"] < cut + pd.Timedelta(days=90))
    buyers = positive.loc[window, "customer_id"].unique()
    churned = ~pd.Index(alive).isin(buyers)
    p = v.loc[alive, "churn_probability_90d"]
    assert abs(churned.mean() - p.mean()) < 4 * np.sqrt((p * (1 - p)).sum()) / len(p)
    ow = (orders["t"] >= cut) & (orders["t"] < cut + pd.Timedelta(days=90))
    n = orders[ow].groupby("customer_id").size().reindex(alive, fill_value=0)
    e = v.loc[alive, "expected_purchases_90d"]
    assert abs(n.sum() / e.sum() - 1) < 0.05
    for c in D.CATEGORIES:
        got = pd.Index(alive).isin(positive.loc[window & (positive["category"] == c), "customer_id"].unique())
        a = v.loc[alive, f"affinity_{c}_90d"]
        assert abs(got.mean() - a.mean()) < 4 * np.sqrt((a * (1 - a)).sum()) / len(a) + 0.005, c
    # Nobody buys after the moment the truth says they left.
    left = world.truth.dropna(subset=["death_at"]).set_index("customer_id")["death_at"]
    last = positive.groupby("customer_id")["t"].max()
    assert (last.reindex(left.index) <= left).all()


def test_campaigns_only_contact_customers_with_valid_consent(world) -> None:
    consents = world.tables["consents"].copy()
    consents["recorded_at"] = pd.to_datetime(consents["recorded_at"]).dt.tz_localize("UTC")
    c = world.tables["contacts"]
    sent = c[(c["direction"] == "outbound") & ~c["is_control"].fillna(False).astype(bool)].copy()
    sent["contacted_at"] = pd.to_datetime(sent["contacted_at"]).dt.tz_localize("UTC")
    checked = 0
    for campaign, part in sent.groupby("campaign_id"):
        state = consent_state(consents, part["contacted_at"].min() - pd.Timedelta(seconds=1), inclusive=True)
        ch = part["channel"].iloc[0]
        ok = state.reindex(part["customer_id"])[ch].fillna(False).astype(bool)
        assert ok.all(), (campaign, int((~ok).sum()))
        checked += len(part)
    assert checked == len(sent) > 10_000


def test_written_folder_round_trips_and_truth_loads(tmp_path) -> None:
    w = generate_world(500, 11)
    rows = write_world(w, tmp_path, "csv")
    assert rows["customers"] == 500 and (tmp_path / "truth" / "design.json").exists()
    truth = load_truth(str(tmp_path))
    assert len(truth) == 500 and truth["customer_id"].is_unique
    assert pd.read_csv(tmp_path / "customers.csv", dtype=str)["customer_id"].str.startswith("0").any()
