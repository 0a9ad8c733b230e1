"""Labels: the contract's definitions, no dependence on rows before the cutoff, agreement with truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kundenwert.datasets import design as D
from kundenwert.datasets.truth import (
    load_truth,
    posterior_churn_probability,
    posterior_response_probability,
    values_at,
)
from kundenwert.features.labels import LabelConfig, labels_at, response_labels

CUTOFF = pd.Timestamp("2025-06-01", tz="UTC")


@pytest.fixture(scope="module")
def world(imported_world):
    frames, folder = imported_world(20_000, 9)
    return frames, load_truth(str(folder))


def _within(observed: float, expected: float, se: float, slack: float = 0.0) -> None:
    print(f"observed {observed:.4f}, truth {expected:.4f}, standard error {se:.4f}")  # -s shows it
    assert abs(observed - expected) < 4 * se + slack, (observed, expected, se)


def test_churn_share_among_active_matches_true_probability(world) -> None:
    frames, truth = world
    lab = labels_at(frames, CUTOFF)
    active = lab.index[lab["status"] == "active"]
    p = values_at(truth, CUTOFF, (90,)).loc[active, "churn_probability_90d"]
    _within(lab.loc[active, "churn"].mean(), p.mean(), np.sqrt((p * (1 - p)).sum()) / len(p))


def test_affinity_share_matches_true_probability(world) -> None:
    frames, truth = world
    lab = labels_at(frames, CUTOFF)
    v = values_at(truth, CUTOFF, (90,))
    # Customers who have not bought yet may make a first purchase in the horizon; the truth's
    # affinity is that of customers who have bought (zero for the others), so compare those.
    buyers = lab.index[lab["status"].isin(["active", "lapsed"])]
    for c in ("electronics", "fashion", "books_media"):
        p = v.loc[buyers, f"affinity_{c}_90d"]
        _within(lab.loc[buyers, f"affinity_{c}"].mean(), p.mean(), np.sqrt((p * (1 - p)).sum()) / len(p))


def test_winback_share_among_lapsed_matches_true_probability(world) -> None:
    """A lapsed customer comes back in the horizon with the true probability 1 - P(no purchase)."""
    frames, truth = world
    lab = labels_at(frames, CUTOFF)
    lapsed = lab.index[lab["status"] == "lapsed"]
    assert len(lapsed) > 1_000
    p = 1.0 - values_at(truth, CUTOFF, (90,)).loc[lapsed, "churn_probability_90d"]
    _within(lab.loc[lapsed, "winback"].mean(), p.mean(), np.sqrt((p * (1 - p)).sum()) / len(p))


def test_clv_label_matches_true_expected_spend(world) -> None:
    """Undiscounted net revenue over 365 days against the truth's expected spend. Returns (negative
    rows) take the expected returned share of an order's value, sum over categories of the
    customer's category share times the category's return rate; the lines' rounding and the return
    delay at the window edges are far below the 1% slack."""
    frames, truth = world
    cutoff = pd.Timestamp("2024-12-01", tz="UTC")
    cfg = LabelConfig(clv_horizon=365, clv_value="revenue", discount_rate=0.0)
    lab = labels_at(frames, cutoff, cfg)
    buyers = lab.index[lab["status"].isin(["active", "lapsed"])]  # bought before: truth defines them
    params = truth.set_index("customer_id").loc[buyers]
    returned = sum(params[f"category_share_{c}"] * rate for c, rate in D.CATEGORY_RETURN_RATE.items())
    expected = values_at(truth, cutoff, (365,)).loc[buyers, "expected_spend_365d"] * (1 - returned)
    observed = lab.loc[buyers, "clv"]
    _within(observed.mean(), expected.mean(), observed.std() / np.sqrt(len(observed)), 0.01 * expected.mean())
    # Discounting: each row's value times 1.1 ** -(years after the cutoff), a factor in (1/1.1, 1]
    # within one year; for customers without returns in the window the sum lies in those bounds.
    discounted = labels_at(frames, cutoff, cfg.model_copy(update={"discount_rate": 0.1}))["clv"]
    p = frames["purchases"]
    window = (p["purchased_at"] >= cutoff) & (p["purchased_at"] < cutoff + pd.Timedelta(days=365))
    returners = p.loc[window & (p["amount"] < 0), "customer_id"].unique()
    plain = buyers[~buyers.isin(returners) & (observed > 0).to_numpy()]
    assert len(plain) > 1_000
    ratio = discounted.loc[plain] / observed.loc[plain]
    assert ratio.between(1 / 1.1, 1.0).all() and ratio.mean() < 0.99


NEUTRAL_ACTIONS = {"newsletter", "service_call", "upsell_premium"}  # no voucher or category effect


def test_response_labels_match_true_response_probabilities(world) -> None:
    """Control contacts respond with the truth's organic probability; treated contacts of actions
    without customer-specific effects with the truth's treated probability shifted by the action's
    effect (logit scale). Customers who leave during the horizon make the truth a little high."""
    frames, truth = world
    r = response_labels(frames["contacts"], CUTOFF, LabelConfig(horizon=90))
    v = values_at(truth, CUTOFF, (90,))
    control = r[~r["treated"]]
    p = np.array(
        [
            v.at[c, f"response_{ch}_control"]
            for c, ch in zip(control["customer_id"], control["channel"], strict=True)
        ]
    )
    assert len(control) > 500
    _within(control["responded"].mean(), p.mean(), np.sqrt((p * (1 - p)).sum()) / len(p), 0.002)
    treated = r[r["treated"] & r["action_id"].isin(NEUTRAL_ACTIONS)]
    base = np.array(
        [
            v.at[c, f"response_{ch}_treated"]
            for c, ch in zip(treated["customer_id"], treated["channel"], strict=True)
        ]
    )
    effect = treated["action_id"].map({a: D.ACTIONS[a][2] for a in NEUTRAL_ACTIONS}).to_numpy()
    p = 1.0 / (1.0 + np.exp(-(np.log(base / (1 - base)) + effect)))
    assert len(treated) > 500
    _within(treated["responded"].mean(), p.mean(), np.sqrt((p * (1 - p)).sum()) / len(p), 0.005)


def test_posterior_churn_probability_is_calibrated(world) -> None:
    """The Bayes posterior under the true priors (the best any model can do from purchase history
    and attributes) predicts the observed churn and win-back shares: a check of its derivation."""
    frames, _ = world
    lab = labels_at(frames, CUTOFF)
    post = posterior_churn_probability(frames, CUTOFF, 90.0)
    for status, label, prob in (("active", "churn", post), ("lapsed", "winback", 1 - post)):
        who = lab.index[lab["status"] == status]
        p = prob.loc[who]
        _within(lab.loc[who, label].mean(), p.mean(), np.sqrt((p * (1 - p)).sum()) / len(p))


def test_posterior_response_probability_is_calibrated(world) -> None:
    """The Bayes posterior of response (responsiveness from earlier outcomes, alive from purchases)
    predicts the observed response share of the next 90 days' contacts (cross-sell ones left out:
    their effect depends on latent tastes)."""
    frames, _ = world
    r = response_labels(frames["contacts"], CUTOFF, LabelConfig(horizon=90))
    r = r[~r["action_id"].astype("str").str.startswith("xsell_")]
    p = posterior_response_probability(frames, CUTOFF, r, end_year=2025)
    assert len(r) > 1_000
    _within(r["responded"].mean(), p.mean(), np.sqrt((p * (1 - p)).sum()) / len(p))


def test_status_assigns_churn_and_winback_to_the_right_customers(world) -> None:
    frames, _ = world
    lab = labels_at(frames, CUTOFF)
    assert lab.loc[lab["status"] != "active", "churn"].isna().all()
    assert lab.loc[lab["status"] != "lapsed", "winback"].isna().all()
    assert lab.loc[lab["status"] == "active", "churn"].notna().all()
    assert (lab["clv"] >= lab["clv"].min()).all() and lab["clv"].max() > 0


def test_response_labels_cover_treated_and_control(world) -> None:
    frames, _ = world
    r = response_labels(frames["contacts"], CUTOFF, LabelConfig(horizon=90))
    assert r["treated"].any() and (~r["treated"]).any()
    assert r.loc[r["treated"], "responded"].mean() > r.loc[~r["treated"], "responded"].mean()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.floats(min_value=0.001, max_value=700, allow_nan=False), min_size=1, max_size=30),
    st.integers(0, 10_000),
)
def test_changing_rows_before_the_cutoff_never_changes_labels_after_it(
    world, days_back: list[float], seed: int
) -> None:
    """Amounts and times of rows before the cutoff change (staying before it); every label stays."""
    frames, _ = world
    p = frames["purchases"]
    before = p["purchased_at"] < CUTOFF
    rng = np.random.default_rng(seed)
    idx = rng.choice(np.flatnonzero(before.to_numpy()), size=len(days_back), replace=False)
    changed = p.copy()
    changed.loc[changed.index[idx], "amount"] = changed.loc[changed.index[idx], "amount"] * 3 + 1
    changed.loc[changed.index[idx], "purchased_at"] = pd.array(
        [CUTOFF - pd.Timedelta(days=d) for d in days_back], dtype="datetime64[us, UTC]"
    )
    base = labels_at(frames, CUTOFF).drop(columns="status")
    moved = labels_at({**frames, "purchases": changed}, CUTOFF).drop(columns="status")
    # Status (who gets which label) may change; the label values of the future never do.
    future = ["clv"] + [c for c in base.columns if c.startswith("affinity_")]
    pd.testing.assert_frame_equal(moved[future], base[future])
    both = base["churn"].notna() & moved["churn"].notna()
    pd.testing.assert_series_equal(moved.loc[both, "churn"], base.loc[both, "churn"])


# --------------------------------------------------------------- response labels per the contract

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def _contacts(rows: list[tuple]) -> pd.DataFrame:
    """Contact rows: (id, customer, day after T0, direction, campaign, action, control, outcome)."""
    cols = [
        "contact_id",
        "customer_id",
        "day",
        "direction",
        "campaign_id",
        "action_id",
        "is_control",
        "outcome",
    ]
    df = pd.DataFrame(rows, columns=cols)
    df["contacted_at"] = T0 + pd.to_timedelta(df.pop("day"), unit="D")
    df["channel"], df["topic"] = "phone", None
    df["is_control"] = df["is_control"].astype("boolean")
    return df


# Customer 1: a campaign of three calls, the outcome recorded on the last one (day 9); customer 2:
# an email and the customer's inbound order of the same action 5 days later; customer 3: a click;
# customer 4: a response 20 days after its contact, outside the 14-day window; customer 5: a
# control row whose organic response is on the row itself.
CALLS = _contacts(
    [
        ("a", "1", 1, "outbound", "C1", "x", False, "none"),
        ("b", "1", 4, "outbound", "C1", "x", False, "none"),
        ("c", "1", 9, "outbound", "C1", "x", False, "converted"),
        ("d", "2", 2, "outbound", "C2", "y", False, "opened"),
        ("e", "2", 7, "inbound", None, "y", None, "converted"),
        ("f", "3", 3, "outbound", "C2", "y", False, "clicked"),
        ("g", "4", 3, "outbound", "C3", "z", False, "none"),
        ("h", "4", 23, "inbound", None, "z", None, "responded"),
        ("i", "5", 3, "outbound", "C1", "x", True, "responded"),
    ]
)


def _labelled(**config) -> dict[str, bool]:
    r = response_labels(CALLS, T0, LabelConfig(**config))
    return dict(zip(r["contact_id"], r["responded"], strict=True))


def test_a_response_counts_for_the_last_contact_of_its_action_in_the_window() -> None:
    assert _labelled() == {"a": False, "b": False, "c": True, "d": True, "f": False, "g": False, "i": True}


def test_every_touch_credits_each_contact_of_the_action_in_the_window() -> None:
    got = _labelled(attribution="every_touch")
    assert got == {"a": True, "b": True, "c": True, "d": True, "f": False, "g": False, "i": True}
    # a shorter window leaves out the first call (8 days before the outcome)
    assert _labelled(attribution="every_touch", response_window=6)["a"] is False


def test_the_outcomes_that_count_are_a_setting() -> None:
    assert _labelled(response_outcomes=("responded", "converted", "clicked"))["f"] is True
    assert _labelled(response_outcomes=("converted",))["i"] is False
    with pytest.raises(ValueError, match="response_outcomes"):
        LabelConfig(response_outcomes=("unsubscribed",))
    with pytest.raises(ValueError, match="response_outcomes"):
        LabelConfig(response_outcomes=())


def test_only_contacts_whose_response_window_fits_the_label_window_are_labelled() -> None:
    """Horizon 18 days, window 14: contacts of the first 4 days only, so no label reads a row
    after the label window (the time split keeps label windows apart)."""
    r = response_labels(CALLS, T0, LabelConfig(horizon=18))
    assert set(r["contact_id"]) == {"a", "d", "f", "g", "i"}
    later = response_labels(CALLS, T0 + pd.Timedelta(days=2), LabelConfig(horizon=18))
    assert set(later["contact_id"]) == {"b", "d", "f", "g", "i"}  # made at or after the cutoff


def test_contacts_know_where_they_stand_in_their_campaign() -> None:
    r = response_labels(CALLS, T0, LabelConfig()).set_index("contact_id")
    assert r.loc[["a", "b", "c"], "campaign_contacts_before"].tolist() == [0, 1, 2]
    assert r.loc[["a", "b", "c"], "days_since_campaign_start"].tolist() == [0, 3, 8]
    assert r.loc["i", "campaign_contacts_before"] == 0  # another customer in the same campaign
    # calls of the campaign before the cutoff count too: they were made before this one
    late = response_labels(CALLS, T0 + pd.Timedelta(days=3), LabelConfig()).set_index("contact_id")
    assert late.loc["b", "campaign_contacts_before"] == 1 and late.loc["c", "days_since_campaign_start"] == 8


def test_sample_world_labels_are_the_contacts_own_outcomes(world) -> None:
    """In the sample world every response is recorded on its contact, one contact per campaign:
    the contract's labels are the contacts' own outcomes, as before attribution existed."""
    frames, _ = world
    c = frames["contacts"]
    r = response_labels(c, CUTOFF, LabelConfig())
    end = CUTOFF + pd.Timedelta(days=90 - 14)
    own = c[(c["direction"] == "outbound") & (c["contacted_at"] >= CUTOFF) & (c["contacted_at"] < end)]
    assert r["contact_id"].tolist() == own["contact_id"].tolist()
    assert (r["responded"].to_numpy() == own["outcome"].isin(["responded", "converted"]).to_numpy()).all()
    assert (r["campaign_contacts_before"] == 0).all()


def test_a_contact_without_a_campaign_is_the_first_of_its_own() -> None:
    calls = CALLS.assign(campaign_id=CALLS["campaign_id"].where(CALLS["contact_id"] != "g", None))
    r = response_labels(calls, T0, LabelConfig()).set_index("contact_id")
    assert r.loc["g", "campaign_contacts_before"] == 0 and r.loc["g", "days_since_campaign_start"] == 0
    assert r[["campaign_contacts_before", "days_since_campaign_start"]].notna().all().all()


def test_a_reply_logged_against_the_campaign_only_counts_for_its_contacts() -> None:
    """Outbound calls of action x in campaign C1; the customer's reply names the campaign, not
    the action: it counts for the latest call of the campaign (every call, every touch)."""
    calls = _contacts(
        [
            ("a", "1", 1, "outbound", "C1", "x", False, "none"),
            ("b", "1", 4, "outbound", "C1", "x", False, "none"),
            ("r", "1", 6, "inbound", "C1", None, None, "responded"),
            ("o", "2", 4, "outbound", "C9", "x", False, "none"),  # another customer: not credited
        ]
    )
    last = response_labels(calls, T0, LabelConfig()).set_index("contact_id")["responded"]
    assert last.to_dict() == {"a": False, "b": True, "o": False}
    every = response_labels(calls, T0, LabelConfig(attribution="every_touch")).set_index("contact_id")
    assert every["responded"].to_dict() == {"a": True, "b": True, "o": False}


def test_duplicate_index_labels_do_not_credit_another_contact() -> None:
    calls = CALLS.set_axis([0, 1, 2, 0, 3, 4, 5, 6, 7])
    assert _labelled() == dict(
        zip(*response_labels(calls, T0, LabelConfig())[["contact_id", "responded"]].to_numpy().T, strict=True)
    )
