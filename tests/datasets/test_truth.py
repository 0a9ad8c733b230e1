"""The per-contact truth of the sample world (``truth/contacts.parquet``, ``load_contact_truth``):
aligned with the contacts table's ids, and its probabilities are the rates the data shows (about
4 standard errors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kundenwert.datasets import design as D
from kundenwert.datasets.sample import Variants, generate_world, write_world
from kundenwert.datasets.truth import load_contact_truth, load_truth

N = 4_000
SEED = 3
KEYS = ["customer_id", "campaign_id", "action_id", "channel", "is_control"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    write_world(generate_world(N, SEED), out, "csv")
    return out


@pytest.fixture(scope="module")
def merged(folder: Path) -> pd.DataFrame:
    """The truth joined to the written contacts (as text, the way a user reads them)."""
    truth = load_contact_truth(str(folder))
    contacts = pd.read_csv(folder / "contacts.csv", dtype=str, keep_default_na=False)
    m = truth.merge(contacts, on="contact_id", how="left", suffixes=("", "_contacts"), validate="1:1")
    m["responded"] = m["outcome"].isin(["responded", "converted"])
    return m


def _within(y: np.ndarray, p: np.ndarray, k: float = 4.0) -> tuple[float, float, float]:
    """Observed rate, mean truth and ``k`` standard errors of the observed rate given the truth."""
    se = np.sqrt((p * (1 - p)).sum()) / len(p)
    assert abs(y.mean() - p.mean()) < k * se, (y.mean(), p.mean(), se)
    return float(y.mean()), float(p.mean()), float(se)


def test_contact_truth_is_aligned_with_the_contact_ids(folder: Path, merged: pd.DataFrame) -> None:
    truth = load_contact_truth(str(folder / "truth"))  # the folder or its truth/
    assert list(truth.columns) == [
        "contact_id",
        *KEYS,
        "p_response_treated",
        "p_response_control",
        "p_click_treated",
        "p_click_control",
    ]
    assert truth["contact_id"].is_unique and truth["contact_id"].is_monotonic_increasing
    contacts = pd.read_csv(folder / "contacts.csv", dtype=str, keep_default_na=False)
    outbound = contacts[contacts["direction"] == "outbound"]
    # One truth row per campaign contact (treated or control), none for inbound contacts.
    assert set(truth["contact_id"]) == set(outbound["contact_id"]) and len(truth) == len(outbound) > 10_000
    for col in ("customer_id", "campaign_id", "action_id", "channel"):
        assert (merged[col].astype(str) == merged[f"{col}_contacts"]).all(), col
    assert (merged["is_control"].map({True: "true", False: "false"}) == merged["is_control_contacts"]).all()
    for col in ("p_response_treated", "p_response_control"):
        assert truth[col].between(0, 1, inclusive="neither").all(), col
    assert truth[["p_click_treated", "p_click_control"]].isna().all().all()  # the experiment's only
    assert (truth["p_response_treated"] > truth["p_response_control"]).mean() > 0.95
    # Without contact only responsiveness and having left count: for customers who never leave it
    # is the customer truth's organic response.
    cust = load_truth(str(folder)).set_index("customer_id")
    stays = merged[cust.loc[merged["customer_id"], "death_at"].isna().to_numpy()]
    assert len(stays) > 1_000
    expected = cust.loc[stays["customer_id"], "response_email_control"].to_numpy()
    np.testing.assert_allclose(stays["p_response_control"].to_numpy(), expected, rtol=1e-12)


def test_contact_truth_is_the_observed_response_rate(merged: pd.DataFrame) -> None:
    treated, control = merged[~merged["is_control"]], merged[merged["is_control"]]
    t = _within(treated["responded"].to_numpy(), treated["p_response_treated"].to_numpy())
    c = _within(control["responded"].to_numpy(), control["p_response_control"].to_numpy())
    print(f"\ntreated: observed {t[0]:.4f}, truth {t[1]:.4f}, se {t[2]:.4f} (n={len(treated)})")
    print(f"control: observed {c[0]:.4f}, truth {c[1]:.4f}, se {c[2]:.4f} (n={len(control)})")
    # Per channel too, and the true lift (treated truth minus control truth) is what the data shows.
    for ch in D.CHANNELS:
        part = treated[treated["channel"] == ch]
        _within(part["responded"].to_numpy(), part["p_response_treated"].to_numpy())
        part = control[control["channel"] == ch]
        _within(part["responded"].to_numpy(), part["p_response_control"].to_numpy())
    lift_true = (merged["p_response_treated"] - merged["p_response_control"]).mean()
    lift_seen = treated["responded"].mean() - control["responded"].mean()
    se = np.sqrt(t[0] * (1 - t[0]) / len(treated) + c[0] * (1 - c[0]) / len(control))
    print(f"lift: observed {lift_seen:.4f}, truth {lift_true:.4f}, se {se:.4f}")
    assert abs(lift_seen - lift_true) < 4 * se


def test_contact_truth_of_repeated_calls_is_on_the_first_call() -> None:
    base = generate_world(1_500, SEED)
    calls = generate_world(1_500, SEED, variants=Variants(max_calls=3))
    c = calls.tables["contacts"]
    out = c[c["direction"] == "outbound"].sort_values(["customer_id", "campaign_id", "contacted_at"])
    first = out.drop_duplicates(["customer_id", "campaign_id"])
    assert len(first) < len(out)  # there are repeated calls
    truth = calls.contact_truth
    assert set(truth["contact_id"]) == set(first["contact_id"])
    # The same customers and probabilities as the default world's (contact ids differ: more rows).
    key = ["customer_id", "campaign_id"]
    a = base.contact_truth.drop(columns="contact_id").sort_values(key).reset_index(drop=True)
    b = truth.drop(columns="contact_id").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_contact_truth_of_the_experiment_is_click_and_conversion() -> None:
    world = generate_world(N, SEED, variants=Variants(experiment=True))
    truth = world.contact_truth.merge(world.tables["contacts"][["contact_id", "outcome"]], on="contact_id")
    assert len(truth) == int((world.tables["contacts"]["direction"] == "outbound").sum()) > 1_000
    assert (truth["p_response_treated"] <= truth["p_click_treated"]).all()
    click = truth["outcome"].isin(["clicked", "converted"]).to_numpy()
    conv = (truth["outcome"] == "converted").to_numpy()
    for arm, m in (("treated", ~truth["is_control"].to_numpy()), ("control", truth["is_control"].to_numpy())):
        _within(click[m], truth[f"p_click_{arm}"].to_numpy()[m])
        _within(conv[m], truth[f"p_response_{arm}"].to_numpy()[m])
    # The customer truth's experiment columns are the same probabilities (up to who left that day).
    cust = world.truth.set_index("customer_id").loc[truth["customer_id"]]
    assert np.corrcoef(cust["experiment_click_treated"], truth["p_click_treated"])[0, 1] > 0.99
