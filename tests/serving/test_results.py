"""Campaign results: the exposures and outcomes they are made of, the report's statistics and
checks, and the figures against the sample world's truth (``truth/contacts.parquet``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kundenwert.models import lift as L
from kundenwert.serving import results as R

T0 = pd.Timestamp("2025-03-01", tz="UTC")
DAY = pd.Timedelta(days=1)


def _contacts(rows: list[dict]) -> pd.DataFrame:
    base = {
        "contact_id": None,
        "customer_id": None,
        "contacted_at": None,
        "channel": "email",
        "direction": "outbound",
        "campaign_id": None,
        "action_id": None,
        "is_control": None,
        "outcome": None,
    }
    out = pd.DataFrame([{**base, "contact_id": f"k{i}", **r} for i, r in enumerate(rows)])
    out["contacted_at"] = pd.to_datetime(out["contacted_at"], utc=True)
    out["is_control"] = out["is_control"].astype("boolean")
    return out


def test_purchase_windows_match_a_brute_force():
    rng = np.random.default_rng(3)
    n = 4_000
    p = pd.DataFrame(
        {
            "customer_id": rng.choice([f"c{i}" for i in range(300)], n),
            "purchased_at": T0 + pd.to_timedelta(rng.uniform(-400, 400, n), unit="D"),
            "amount": rng.choice([-20.0, 10.0, 35.5, 80.0], n),
            "margin": rng.choice([np.nan, 3.0, 7.0], n),
        }
    )
    e = pd.DataFrame(
        {
            "customer_id": rng.choice([f"c{i}" for i in range(320)], 500),  # some never bought
            "at": T0 + pd.to_timedelta(rng.uniform(-500, 500, 500), unit="D"),
        }
    )
    index = R._PurchaseIndex(p)
    t0 = e["at"].to_numpy(dtype="datetime64[ns]")
    t1 = (e["at"] + 30 * DAY).to_numpy(dtype="datetime64[ns]")
    sums, counts = (
        index.sums(e["customer_id"], t0, t1, "amount"),
        index.counts(e["customer_id"], t0, t1, True),
    )
    margins = index.sums(e["customer_id"], t0, t1, "margin")
    last = index.last_before(e["customer_id"], t0)
    for i, r in e.iterrows():
        mine = p[p["customer_id"] == r["customer_id"]]
        w = mine[(mine["purchased_at"] >= r["at"]) & (mine["purchased_at"] < r["at"] + 30 * DAY)]
        assert sums[i] == pytest.approx(w["amount"].sum())
        assert margins[i] == pytest.approx(w["margin"].fillna(0).sum())
        assert counts[i] == int((w["amount"] > 0).sum())
        before = mine.loc[mine["purchased_at"] < r["at"], "purchased_at"]
        expected = before.max().tz_convert(None).to_datetime64() if len(before) else np.datetime64("NaT")
        assert (np.isnat(last[i]) and np.isnat(expected)) or last[i] == expected


def test_contacts_make_one_exposure_per_customer_and_campaign_with_attributed_responses():
    c = _contacts(
        [
            # two calls of one campaign to a: one exposure, dated by the first, responded on the last
            {
                "customer_id": "a",
                "contacted_at": T0,
                "campaign_id": "C1",
                "action_id": "x",
                "outcome": "none",
            },
            {
                "customer_id": "a",
                "contacted_at": T0 + 3 * DAY,
                "campaign_id": "C1",
                "action_id": "x",
                "outcome": "converted",
            },
            # b held out; its organic response is recorded on its control row
            {
                "customer_id": "b",
                "contacted_at": T0,
                "campaign_id": "C1",
                "action_id": "x",
                "is_control": True,
                "outcome": "responded",
            },
            # c: a reply logged later by an inbound contact naming the action, inside the window
            {
                "customer_id": "c",
                "contacted_at": T0,
                "campaign_id": "C1",
                "action_id": "x",
                "outcome": "none",
            },
            {
                "customer_id": "c",
                "contacted_at": T0 + 5 * DAY,
                "direction": "inbound",
                "action_id": "x",
                "outcome": "responded",
            },
            # d: the same kind of reply, but after the 14-day window
            {
                "customer_id": "d",
                "contacted_at": T0,
                "campaign_id": "C1",
                "action_id": "x",
                "outcome": "none",
            },
            {
                "customer_id": "d",
                "contacted_at": T0 + 20 * DAY,
                "direction": "inbound",
                "action_id": "x",
                "outcome": "responded",
            },
            # a contact with an action but no campaign is an exposure of its own; a service
            # contact with neither is none
            {
                "customer_id": "a",
                "contacted_at": T0 + 40 * DAY,
                "action_id": "y",
                "channel": "sms",
                "outcome": "clicked",
            },
            {"customer_id": "e", "contacted_at": T0, "direction": "inbound", "outcome": None},
        ]
    )
    e = R.contact_exposures(c, R.ResultsQuery()).set_index(["campaign_id", "customer_id"])
    assert len(e) == 5
    a = e.loc[("C1", "a")]
    assert (
        a["treated"] and a["responded"] and a["converted"] and a["at"] == T0 and a["last_at"] == T0 + 3 * DAY
    )
    b = e.loc[("C1", "b")]
    assert not b["treated"] and b["responded"] and not b["converted"]
    assert e.loc[("C1", "c"), "responded"] and not e.loc[("C1", "d"), "responded"]
    own = e.loc[("contact:k7", "a")]
    assert own["action_id"] == "y" and own["channel"] == "sms" and not own["responded"]


def _exposures(
    n1: int, n0: int, p1: float, p0: float, seed: int = 0, campaign: str = "C", **extra
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.r_[np.ones(n1, bool), np.zeros(n0, bool)]
    y = rng.random(n1 + n0) < np.where(t, p1, p0)
    n = n1 + n0
    return pd.DataFrame(
        {
            "campaign_id": campaign,
            "customer_id": [f"{campaign}-{i}" for i in range(n)],
            "action_id": extra.get("action_id", "x"),
            "channel": extra.get("channel", "email"),
            "treated": t,
            "at": T0,
            "last_at": T0,
            "responded": y,
            "converted": y & (rng.random(n) < 0.5),
            "recorded": True,
            "bought": y,
            "revenue": np.where(y, rng.lognormal(3, 1, n), 0.0),
            "margin": np.nan,
            "purchases_365d": rng.poisson(2, n).astype(float),
            "revenue_365d": rng.lognormal(4, 1, n),
            "days_since_last_purchase": rng.uniform(0, 300, n),
            "tenure_days": rng.uniform(100, 1000, n),
            "uplift": np.nan,
        }
    )


AS_OF = T0 + 365 * DAY


def test_a_cell_reports_the_reference_statistics():
    e = _exposures(900, 100, 0.12, 0.05, seed=1)
    cell = R.results_report(e, R.ResultsQuery(by=()), AS_OF)["cells"][0]
    x1, x0 = int(e.loc[e.treated, "responded"].sum()), int(e.loc[~e.treated, "responded"].sum())
    ref = L.diff_proportions(x1, 900, x0, 100)
    m = cell["metrics"]["responded"]
    assert (m["lift"]["estimate"], m["lift"]["low"], m["lift"]["high"]) == pytest.approx(
        (ref.estimate, ref.low, ref.high)
    )
    assert m["incremental"]["estimate"] == pytest.approx(ref.estimate * 900)
    w = L.diff_means_welch(e.loc[e.treated, "revenue"], e.loc[~e.treated, "revenue"])
    assert cell["metrics"]["revenue"]["lift"]["low"] == pytest.approx(w.low)
    assert cell["metrics"]["margin"] is None  # no margin in the purchases
    assert (cell["treated"], cell["control"]) == (900, 100)


def test_a_sample_ratio_mismatch_is_flagged_and_a_proper_split_is_not():
    # 15% were drawn as control, but half the rows are control: customers were lost or moved
    e = _exposures(500, 500, 0.1, 0.05, seed=2)
    checks = [
        w["check"]
        for w in R.results_report(e, R.ResultsQuery(by=(), control_share=0.15), AS_OF)["cells"][0]["warnings"]
    ]
    assert "sample_ratio_mismatch" in checks
    e = _exposures(850, 150, 0.1, 0.05, seed=2)
    checks = [
        w["check"]
        for w in R.results_report(e, R.ResultsQuery(by=(), control_share=0.15), AS_OF)["cells"][0]["warnings"]
    ]
    assert "sample_ratio_mismatch" not in checks
    # the share a target list drew is known without the option
    cell = R.results_report(_exposures(500, 500, 0.1, 0.05), R.ResultsQuery(by=()), AS_OF, {"C": 0.1})[
        "cells"
    ][0]
    assert "sample_ratio_mismatch" in [w["check"] for w in cell["warnings"]]


def test_a_control_group_too_small_for_the_observed_effect_is_flagged():
    # a true lift of one point, 30 control customers: nothing that small can be seen
    e = _exposures(3_000, 30, 0.06, 0.05, seed=4)
    cell = R.results_report(e, R.ResultsQuery(by=()), AS_OF)["cells"][0]
    small = [w for w in cell["warnings"] if w["check"] == "control_too_small"]
    assert small and small[0]["minimum_detectable_lift"] > abs(
        cell["metrics"]["responded"]["lift"]["estimate"]
    )
    # the same lift with a control group large enough to detect it is not flagged
    e = _exposures(40_000, 40_000, 0.06, 0.05, seed=4)
    cell = R.results_report(e, R.ResultsQuery(by=()), AS_OF)["cells"][0]
    assert "control_too_small" not in [w["check"] for w in cell["warnings"]]
    assert cell["metrics"]["responded"]["significant"]


def test_small_cells_are_suppressed_and_open_windows_and_unmeasured_controls_flagged():
    e = pd.concat(
        [
            _exposures(400, 100, 0.1, 0.05, campaign="big"),
            _exposures(400, 19, 0.1, 0.05, campaign="small", seed=3),
        ],
        ignore_index=True,
    )
    cells = {
        c["keys"]["campaign"]: c
        for c in R.results_report(e, R.ResultsQuery(by=("campaign",)), AS_OF)["cells"]
    }
    assert (
        cells["small"]["suppressed"] and "treated" not in cells["small"] and "metrics" not in cells["small"]
    )
    e = _exposures(400, 100, 0.1, 0.05)
    e.loc[~e["treated"], "recorded"] = False  # nobody records what a control customer did
    e.loc[~e["treated"], ["responded", "converted"]] = False
    cell = R.results_report(e, R.ResultsQuery(by=()), T0 + 10 * DAY)["cells"][0]
    checks = {w["check"] for w in cell["warnings"]}
    assert {"control_unmeasured", "window_open"} <= checks


def test_benjamini_hochberg_runs_over_the_cells_of_a_report():
    cells = [_exposures(2_000, 2_000, 0.05, 0.05, seed=s, campaign=f"null{s}") for s in range(12)]
    cells.append(_exposures(2_000, 2_000, 0.12, 0.05, seed=99, campaign="real"))
    report = R.results_report(pd.concat(cells, ignore_index=True), R.ResultsQuery(by=("campaign",)), AS_OF)
    by = {c["keys"]["campaign"]: c["metrics"]["responded"] for c in report["cells"]}
    p = np.array([by[k]["p_value"] for k in sorted(by)])
    adjusted, _ = L.benjamini_hochberg(p)
    assert [by[k]["p_adjusted"] for k in sorted(by)] == pytest.approx(list(adjusted))
    assert by["real"]["significant"]
    assert sum(v["significant"] for k, v in by.items() if k != "real") <= 1


def test_planning_round_trips_through_the_power_calculation():
    p = R.plan(0.03, lift=0.01, control_share=0.1)
    got = L.power_diff_proportions(0.03, 0.01, p["treated"], p["control"])
    assert got >= 0.8 and p["list_size_needed"] == p["treated"] + p["control"]
    sized = R.plan(0.03, lift=0.01, size=p["list_size_needed"], control_share=0.1)
    assert sized["minimum_detectable_lift"] <= 0.01 + 1e-6
    assert sized["control_share_needed"] is not None and sized["control_share_needed"] <= 0.1 + 1e-6
    with pytest.raises(Exception, match="--lift"):
        R.plan(0.5, lift=0.6)
    with pytest.raises(Exception, match="--lift 1e-09: no list of up to"):
        R.plan(0.03, lift=1e-9)
    # a list's answer plans for any lift it is asked: one no list can detect needs no size
    tiny = R.planning(0.05, 900, 100, lift=2e-231)
    assert tiny["list_size_needed"] is None and tiny["control_share_needed"] is None


def test_parse_query_names_the_bad_option():
    from kundenwert.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="--by: unknown dimension.*weekday"):
        R.parse_query(by="action,weekday")
    with pytest.raises(ConfigurationError, match="--since"):
        R.parse_query(since="2025-13-45")
    with pytest.raises(ConfigurationError, match="must be before"):
        R.parse_query(since="2025-06-01", until="2025-01-01")
    with pytest.raises(ConfigurationError, match="--attribution-days"):
        R.parse_query(attribution_days=0)
    assert R.parse_query(by="").by == ()


# --- against the sample world's truth -------------------------------------------------------

SEEDS = range(1, 1 + int(__import__("os").environ.get("KUNDENWERT_TEST_RESULTS_SEEDS", "8")))


def _truth_cells(n: int, seed: int, effect: bool) -> pd.DataFrame:
    """Per action x channel cell of a sample world (``effect`` False: ``--no-effect``): the
    estimated response lift with its interval and significance, and the truth's expected lift
    (the mean over the cell's customers of P(response | contact) - P(response | no contact))."""
    from kundenwert.datasets.sample import Variants, generate_world

    world = generate_world(n, seed, variants=Variants(effect=effect))
    c = world.tables["contacts"].copy()
    for col in c.columns:
        if isinstance(c[col].dtype, pd.CategoricalDtype):
            c[col] = c[col].astype(object).where(c[col].notna(), None)
    c["contacted_at"] = pd.to_datetime(c["contacted_at"]).dt.tz_localize("UTC")
    query = R.ResultsQuery(by=("action", "channel"))
    e = R.contact_exposures(c, query)
    for col in ("bought", "revenue", "margin", *R.BALANCE):  # purchases play no part here
        e[col] = False if col == "bought" else 0.0
    truth = world.contact_truth.drop_duplicates(["campaign_id", "customer_id"])
    truth = truth.set_index(["campaign_id", "customer_id"])
    key = pd.MultiIndex.from_arrays([e["campaign_id"], e["customer_id"]])
    e["truth"] = (truth["p_response_treated"] - truth["p_response_control"]).reindex(key).to_numpy()
    assert e["truth"].notna().all()  # every exposure is a campaign contact of the truth
    report = R.results_report(e, query, AS_OF + 3650 * DAY)
    expected = e.groupby(["action_id", "channel"])["truth"].mean()
    rows = []
    for cell in report["cells"]:
        if cell.get("suppressed"):
            continue
        m = cell["metrics"]["responded"]
        rows.append(
            {
                "seed": seed,
                "truth": expected.loc[(cell["keys"]["action"], cell["keys"]["channel"])],
                "low": m["lift"]["low"],
                "high": m["lift"]["high"],
                "significant": m["significant"],
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.slow  # sixteen sample worlds generated and measured: with the slow suites
def test_intervals_cover_the_true_lift_of_the_sample_world():
    cells = pd.concat([_truth_cells(6_000, s, effect=True) for s in SEEDS], ignore_index=True)
    covered = ((cells["low"] <= cells["truth"]) & (cells["truth"] <= cells["high"])).mean()
    width = (cells["high"] - cells["low"]).mean()
    print(
        f"\ntrue lift covered in {covered:.1%} of {len(cells)} cells ({len(SEEDS)} seeds), mean width {width:.4f}"
    )
    # 95% nominal; over ~160 cells the binomial spread is about 1.7 points
    assert 0.89 <= covered <= 0.99
    assert cells["truth"].mean() > 0.02  # the campaigns do work: a real effect was measured


@pytest.mark.slow
def test_a_world_without_effect_gives_intervals_around_zero_and_rarely_a_significant_cell():
    cells = pd.concat([_truth_cells(6_000, s, effect=False) for s in SEEDS], ignore_index=True)
    assert (cells["truth"].abs() < 1e-12).all()
    covers_zero = ((cells["low"] <= 0) & (cells["high"] >= 0)).mean()
    runs = cells.groupby("seed")["significant"].any()
    print(
        f"\nno effect: zero covered in {covers_zero:.1%} of {len(cells)} cells; a Benjamini-Hochberg "
        f"significant cell in {runs.sum()} of {len(runs)} runs"
    )
    assert covers_zero >= 0.9
    assert runs.mean() <= 0.4  # most runs have none (the false discovery rate is 5% per run)


def test_the_campaigns_overview_is_computed_again_only_when_the_store_changed(
    imported_world, tmp_path, monkeypatch
):
    import shutil

    from kundenwert.db.store import Store
    from kundenwert.features.importer import import_folder
    from kundenwert.serving.catalog import load_catalog

    frames, folder = imported_world(3000, 5)
    shutil.copy(folder / "kw.db", tmp_path / "kw.db")
    store, catalog = Store(f"sqlite:///{tmp_path / 'kw.db'}"), load_catalog()
    made = []
    real = R.campaigns_overview
    monkeypatch.setattr(R, "campaigns_overview", lambda *a: made.append(1) or real(*a))
    cache = R.OverviewCache()
    first = cache.overview(store, catalog)
    assert first and cache.overview(store, catalog) is first and len(made) == 1
    # a campaign arrives with the next import: the change log moved, the overview follows
    contacts = frames["contacts"]
    sent = contacts[(contacts["direction"] == "outbound") & contacts["campaign_id"].notna()]
    one = sent.iloc[[0]].assign(contact_id="new-1", campaign_id="CMP-NEW")
    (tmp_path / "more").mkdir()
    one.to_csv(tmp_path / "more" / "contacts.csv", index=False)
    import_folder(tmp_path / "more", store, mode="append")
    again = cache.overview(store, catalog)
    assert len(made) == 2 and "CMP-NEW" in {c["campaign_id"] for c in again}
    assert "CMP-NEW" not in {c["campaign_id"] for c in first}
    # and after max_age even without a change (attribution windows close with the calendar)
    cache.max_age = 0.0
    cache.overview(store, catalog)
    assert len(made) == 3
    store.dispose()
