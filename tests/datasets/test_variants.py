"""Sample-world variants (``kundenwert sample --max-calls/--no-purchases/--experiment/--no-control/
--no-effect``)
and the guarantee that the default world does not move."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kundenwert.datasets import design as D
from kundenwert.datasets.sample import Variants, generate_world, write_world
from kundenwert.errors import ConfigurationError
from kundenwert.features.consent import consent_state

# sha256 (first 20 hex digits) of every file of the default world generate_world(1500, seed=5),
# written as CSV. Obtained on main at 3d4e10c, before the variants existed:
#   PYTHONPATH=/work/main python -c "..."  (write_world(generate_world(1500, 5), d, 'csv'), then
#   hashlib.sha256(file bytes); the truth frame hashed as world.truth.to_csv(index=False)).
# A change here means the default world of a seed changed: every stored sample world, benchmark
# and tolerance calibrated on one would silently move. Do not update these without saying why.
DEFAULT_WORLD_1500_SEED_5 = {
    "customers": "ab5f3a747e2a70eb0bc0",
    "products": "1e7032c7da61eaee5551",
    "purchases": "1f94103308df1e4b3209",
    "contacts": "f1b6d695f07774a22ce9",
    "consents": "74a8d22641e6642d8f1b",
    "complaints": "24e53100cf90dd13f9f2",
    "offers": "b585880616e4955acd2d",
    "truth/age_group_category": "34c9329372514a92b010",
}
DEFAULT_TRUTH_1500_SEED_5 = "efec2fcad572fed19c8a"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:20]


def test_default_world_is_byte_identical_to_main(tmp_path: Path) -> None:
    world = generate_world(1500, 5)
    write_world(world, tmp_path, "csv")
    got = {name: _sha((tmp_path / f"{name}.csv").read_bytes()) for name in DEFAULT_WORLD_1500_SEED_5}
    assert got == DEFAULT_WORLD_1500_SEED_5
    assert _sha(world.truth.to_csv(index=False).encode()) == DEFAULT_TRUTH_1500_SEED_5


# ------------------------------------------------------------------------------------------ variants

N = 20_000  # generating a world takes about half a second; the statistics need the customers
SEED = 7


@pytest.fixture(scope="module")
def default_world():
    return generate_world(N, SEED)


@pytest.fixture(scope="module")
def calls_world():
    return generate_world(N, SEED, variants=Variants(max_calls=3))


@pytest.fixture(scope="module")
def experiment_world():
    return generate_world(N, SEED, variants=Variants(experiment=True))


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal frames (DataFrame.equals: values and dtypes; assert_frame_equal is slow on categoricals)."""
    assert list(a.columns) == list(b.columns) and a.equals(b)


def _outbound(world) -> pd.DataFrame:
    c = world.tables["contacts"]
    out = c[c["direction"] == "outbound"].copy()
    out["t"] = pd.to_datetime(out["contacted_at"]).dt.tz_localize("UTC")
    out["control"] = out["is_control"].astype(bool)
    return out


def _calls(world) -> pd.DataFrame:
    """Outbound rows with each row's position in its (customer, campaign) and the group's size."""
    out = _outbound(world).sort_values(["customer_id", "campaign_id", "t"], kind="stable")
    g = out.groupby(["customer_id", "campaign_id"], observed=True)
    out["position"] = g.cumcount() + 1
    out["calls"] = g["contact_id"].transform("size")
    return out


def test_max_calls_repeats_phone_calls_and_records_the_outcome_on_the_last(calls_world) -> None:
    out = _calls(calls_world)
    multi = out[out["calls"] > 1]
    assert len(multi) > 1000 and out["calls"].max() == 3
    assert set(multi["channel"].astype(str)) == {"phone"}  # other channels: one contact each
    assert not multi["control"].any()  # control rows stay one row each
    earlier = multi[multi["position"] < multi["calls"]]
    assert (earlier["outcome"] == "none").all()
    # A second call only follows no response; the last of three may respond or not.
    last = multi[multi["position"] == multi["calls"]]
    assert last["outcome"].isin(["none", "responded", "converted"]).all()
    assert (last.loc[last["calls"] < 3, "outcome"] != "none").sum() > 0
    # Calls of one customer and campaign are 2-7 days apart and share the action.
    gap = multi.groupby(["customer_id", "campaign_id"], observed=True)["t"].diff().dropna()
    days = gap.dt.total_seconds() / 86400
    assert days.between(*D.CALL_GAP_DAYS).all()
    assert (multi.groupby("campaign_id", observed=True)["action_id"].nunique() == 1).all()
    # Each call has its own chance, later ones less: response given the call was made.
    treated = out[(out["channel"] == "phone") & ~out["control"]]
    rate = treated["outcome"].isin(["responded", "converted"]).groupby(treated["position"]).mean()
    assert rate[1] > rate[2] > rate[3] > 0.02, rate.to_dict()


def test_max_calls_stop_when_the_phone_consent_ends(calls_world) -> None:
    out = _calls(calls_world)
    first = out.loc[out["position"] == 1, ["customer_id", "campaign_id", "t"]].rename(columns={"t": "first"})
    later = out[out["position"] > 1].merge(first, on=["customer_id", "campaign_id"])
    c = calls_world.tables["consents"]
    stop = c[c["channel"].isin(["phone", "*"]) & ~c["granted"].astype(bool)][["customer_id", "recorded_at"]]
    stop = stop.assign(at=pd.to_datetime(stop["recorded_at"]).dt.tz_localize("UTC"))
    m = later.merge(stop, on="customer_id")
    # Eligibility held at the campaign's date (at most 10 days before the first call); from then
    # on a withdrawal or objection ends the calls.
    broken = m[(m["at"] >= m["first"] - pd.Timedelta(days=10)) & (m["at"] < m["t"])]
    assert broken.empty, broken.head()


def test_max_calls_change_nothing_but_the_phone_campaigns(default_world, calls_world) -> None:
    for name in ("customers", "purchases", "consents", "complaints", "offers", "products"):
        _same(default_world.tables[name], calls_world.tables[name])
    _same(default_world.truth, calls_world.truth)

    def not_phone_campaigns(world) -> pd.DataFrame:
        c = world.tables["contacts"]
        keep = ~((c["direction"] == "outbound") & (c["channel"] == "phone"))
        return c[keep].drop(columns="contact_id").reset_index(drop=True)

    _same(not_phone_campaigns(default_world), not_phone_campaigns(calls_world))
    first = _calls(calls_world)
    first = first[(first["position"] == 1) & (first["channel"] == "phone")]
    base = _outbound(default_world)
    assert len(first) == int((base["channel"] == "phone").sum())  # the same people, called first


def test_no_purchases_writes_no_purchase_tables_and_imports(default_world, tmp_path: Path) -> None:
    from kundenwert.db.store import Store
    from kundenwert.features.importer import import_folder
    from kundenwert.features.snapshot import load_frames, snapshot
    from kundenwert.features.summary import summarize

    world = generate_world(2_000, 3, variants=Variants(purchases=False))
    same = generate_world(2_000, 3)
    assert set(world.tables) == {"customers", "contacts", "consents", "complaints"}
    for name in world.tables:  # the rest of the world is the default one
        _same(world.tables[name], same.tables[name])
    write_world(same, tmp_path, "csv")  # a default world first: its purchase files must not stay behind
    write_world(world, tmp_path, "csv")
    assert not any((tmp_path / f"{t}.csv").exists() for t in ("purchases", "products", "offers"))
    assert json.loads((tmp_path / "truth" / "design.json").read_text())["variants"]["purchases"] is False
    store = Store(f"sqlite:///{tmp_path / 'kw.db'}")
    try:
        rows = import_folder(tmp_path, store, mode="replace").rows
        assert rows["customers"] == 2_000 and "purchases" not in rows
        s = summarize(store, "2025-12-31")
        assert s.rows["purchases"] == 0 and s.revenue_by_year.empty and s.customers == 2_000
        snap = snapshot(load_frames(store), "2025-06-01")
    finally:
        store.dispose()
    assert len(snap) > 1000 and snap["frequency"].isna().all() and (snap["revenue_365d"] == 0).all()
    assert snap["contacts_email_365d"].sum() > 0


def test_experiment_is_one_randomised_email_campaign(experiment_world, default_world) -> None:
    out = _outbound(experiment_world)
    assert out["campaign_id"].nunique() == 1 and out["campaign_id"].iloc[0].startswith("EXP-")
    assert set(out["channel"].astype(str)) == {"email"}
    assert out["t"].dt.floor("D").nunique() == 1
    end = pd.Timestamp("2025-12-31", tz="UTC")
    assert 29 <= (end - out["t"].min()).days <= 31
    assert set(out["outcome"].astype(str)) == {"none", "clicked", "converted"}
    share = out["control"].mean()
    assert abs(share - 1 / 3) < 4 * np.sqrt(2 / 9 / len(out)), share
    # Everyone with valid e-mail consent on that day is in it, treated or control.
    consents = experiment_world.tables["consents"].copy()
    consents["recorded_at"] = pd.to_datetime(consents["recorded_at"]).dt.tz_localize("UTC")
    state = consent_state(consents, out["t"].min() - pd.Timedelta(seconds=1), inclusive=True)
    assert state.reindex(out["customer_id"])["email"].fillna(False).astype(bool).all()
    truth = experiment_world.truth.set_index("customer_id")
    assert set(out["customer_id"]) == set(truth.index[truth["experiment_eligible"]])
    # The rest of the world is the default one (drawn before the campaigns).
    for name in ("customers", "purchases", "complaints"):
        _same(default_world.tables[name], experiment_world.tables[name])


def test_experiment_uplift_is_real_and_depends_on_the_customer(experiment_world) -> None:
    out = _outbound(experiment_world)
    truth = experiment_world.truth.set_index("customer_id").loc[out["customer_id"]]
    click = out["outcome"].isin(["clicked", "converted"]).to_numpy()
    conv = (out["outcome"] == "converted").to_numpy()
    treated = ~out["control"].to_numpy()

    def z(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        p1, p0 = y[a].mean(), y[b].mean()
        return (p1 - p0) / np.sqrt(p1 * (1 - p1) / a.sum() + p0 * (1 - p0) / b.sum())

    assert z(click, treated, ~treated) > 6 and z(conv, treated, ~treated) > 4
    # The rates are the truth's (about 4 standard errors).
    for arm, m in (("treated", treated), ("control", ~treated)):
        for y, col in ((click, "click"), (conv, "conversion")):
            p = truth[f"experiment_{col}_{arm}"].to_numpy()[m]
            assert abs(y[m].mean() - p.mean()) < 4 * np.sqrt((p * (1 - p)).sum()) / m.sum() + 0.002, (
                arm,
                col,
            )
    # Uplift differs by customer: where the truth says it is large, the data shows it larger.
    lift = (truth["experiment_click_treated"] - truth["experiment_click_control"]).to_numpy()
    high = lift > np.median(lift)
    lift_high = click[high & treated].mean() - click[high & ~treated].mean()
    lift_low = click[~high & treated].mean() - click[~high & ~treated].mean()
    assert lift_high > lift_low + 0.05, (lift_high, lift_low)


def test_no_control_contacts_everyone_selected() -> None:
    world = generate_world(2_000, 3, variants=Variants(control=False))
    out = _outbound(world)
    assert len(out) > 5_000 and not out["is_control"].astype(bool).any()
    assert out["campaign_id"].nunique() == _outbound(generate_world(2_000, 3))["campaign_id"].nunique()


def test_bank_like_world_combines_the_variants(tmp_path: Path) -> None:
    v = Variants(max_calls=3, purchases=False, control=False)
    world = generate_world(2_000, 3, variants=v)
    assert "purchases" not in world.tables
    out = _calls(world)
    assert not out["control"].any() and (out["calls"] > 1).sum() > 100
    assert (out.loc[out["position"] < out["calls"], "outcome"] == "none").all()
    assert world.design["variants"] == {
        "max_calls": 3,
        "purchases": False,
        "experiment": False,
        "control": False,
        "effect": True,
        "sure_things": 0.0,
    }


def test_variants_that_contradict_each_other_are_refused() -> None:
    for v in (
        Variants(max_calls=0),
        Variants(experiment=True, control=False),
        Variants(experiment=True, max_calls=2),
        Variants(sure_things=-0.1),
        Variants(sure_things=1.0),
        Variants(experiment=True, sure_things=0.3),
    ):
        with pytest.raises(ConfigurationError):
            generate_world(100, 1, variants=v)
    assert generate_world(100, 1).design["variants"] == Variants().as_dict()
    assert Variants().as_dict()["effect"] is True


# -------------------------------------------------------------------------------------- --no-effect

NULL_N, NULL_SEED = 5_000, 4


def _responses(world) -> pd.DataFrame:
    """Campaign contacts with their truth and whether they responded (outcome responded/converted)."""
    c = world.tables["contacts"][["contact_id", "outcome"]]
    m = world.contact_truth.merge(c, on="contact_id", validate="1:1")
    return m.assign(responded=m["outcome"].isin(["responded", "converted"]))


def _z(m: pd.DataFrame, col: str = "responded") -> float:
    """Treated minus control rate over its standard error."""
    y, ctl = m[col].to_numpy(), m["is_control"].to_numpy()
    p1, p0 = y[~ctl].mean(), y[ctl].mean()
    return float((p1 - p0) / np.sqrt(p1 * (1 - p1) / (~ctl).sum() + p0 * (1 - p0) / ctl.sum()))


def test_no_effect_treated_respond_as_the_control() -> None:
    world = generate_world(NULL_N, NULL_SEED, variants=Variants(effect=False))
    base = generate_world(NULL_N, NULL_SEED)
    assert world.design["variants"]["effect"] is False
    m = _responses(world)
    assert len(m) > 20_000
    # The truth says there is no effect, on every contact and for every customer.
    assert (m["p_response_treated"] == m["p_response_control"]).all()
    for ch in D.CHANNELS:
        assert world.truth[f"response_{ch}_treated"].equals(world.truth[f"response_{ch}_control"])
    # The data agrees: treated and control respond alike (the default world: clearly not).
    z_null, z_base = _z(m), _z(_responses(base))
    print(f"\nz treated vs control: --no-effect {z_null:.2f}, default {z_base:.2f}")
    assert abs(z_null) < 4 and z_base > 10
    for ch in D.CHANNELS:
        assert abs(_z(m[m["channel"] == ch])) < 4, ch
    treated = m[~m["is_control"]]
    se = np.sqrt((treated["p_response_treated"] * (1 - treated["p_response_treated"])).sum()) / len(treated)
    assert abs(treated["responded"].mean() - treated["p_response_treated"].mean()) < 4 * se
    # Only the response changed: who is selected, held out and when is the default world's.
    keys = ["customer_id", "campaign_id", "action_id", "channel", "is_control", "p_response_control"]
    first = m[m["campaign_id"].astype(str) < "CMP-2023-02"][keys].reset_index(drop=True)
    same = _responses(base)
    same = same[same["campaign_id"].astype(str) < "CMP-2023-02"][keys].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, same)
    for name in ("customers", "purchases", "complaints"):
        _same(world.tables[name], base.tables[name])
    other = [c for c in base.truth.columns if not c.endswith("_treated")]
    _same(world.truth[other], base.truth[other])


def test_no_effect_combines_with_the_experiment_and_repeated_calls() -> None:
    exp = generate_world(NULL_N, NULL_SEED, variants=Variants(experiment=True, effect=False))
    m = _responses(exp).assign(clicked=lambda d: d["outcome"].isin(["clicked", "converted"]))
    assert (m["p_click_treated"] == m["p_click_control"]).all()
    assert (m["p_response_treated"] == m["p_response_control"]).all()
    t = exp.truth
    assert t["experiment_click_treated"].equals(t["experiment_click_control"])
    assert t["experiment_conversion_treated"].equals(t["experiment_conversion_control"])
    assert abs(_z(m, "clicked")) < 4 and abs(_z(m, "responded")) < 4
    # Repeated calls do nothing either: a later call never brings a response, so per customer and
    # campaign the treated respond as the control.
    calls = generate_world(NULL_N, NULL_SEED, variants=Variants(max_calls=3, effect=False))
    c = _calls(calls)
    assert (c["calls"] > 1).sum() > 1000
    assert (c.loc[c["position"] > 1, "outcome"] == "none").all()
    phone = c[(c["channel"] == "phone") & (c["position"] == c["calls"])]
    phone = phone.assign(responded=phone["outcome"].isin(["responded", "converted"]))
    phone = phone.assign(is_control=phone["control"])
    assert abs(_z(phone)) < 4


# ----------------------------------------------------------------------------------- --sure-things


def test_sure_things_respond_without_a_contact_and_gain_nothing_from_one() -> None:
    world = generate_world(NULL_N, NULL_SEED, variants=Variants(sure_things=0.3))
    base = generate_world(NULL_N, NULL_SEED)
    assert world.design["variants"]["sure_things"] == 0.3
    truth = world.truth.set_index("customer_id")
    sure = truth["sure_thing"]
    # the share asked for (or all the loyal), buyers who stay, and among them the most frequent
    loyal = truth["is_buyer"] & truth["alive_at_end"]
    assert sure.sum() == min(round(0.3 * NULL_N), loyal.sum()) and loyal[sure].all()
    assert truth.loc[sure, "lambda_per_day"].min() >= truth.loc[loyal & ~sure, "lambda_per_day"].max()
    m = _responses(world).join(sure, on="customer_id")
    uplift = m["p_response_treated"] - m["p_response_control"]
    assert (uplift[m["sure_thing"]] >= 0).all()  # a contact never lowers a sure thing's chance
    # the truth: uncontacted they respond often, and contacted hardly more
    ms = m[m["sure_thing"]]
    print(
        f"\nsure things: P(respond | not contacted) {ms['p_response_control'].mean():.3f}, "
        f"mean uplift {uplift[m['sure_thing']].mean():.4f}; others {uplift[~m['sure_thing']].mean():.4f}"
    )
    assert ms["p_response_control"].mean() > 0.25 and uplift[m["sure_thing"]].mean() < 0.02
    assert uplift[~m["sure_thing"]].mean() > 2 * uplift[m["sure_thing"]].mean()
    # the data agrees: their control group responds about as often as their treated
    assert ms.loc[ms["is_control"], "responded"].mean() > 0.2 and abs(_z(ms)) < 4
    # ranked by the true response, the top tenth is mostly sure things; by the true uplift, not
    top = int(0.1 * len(m))
    by_response = m.loc[m["p_response_treated"].nlargest(top).index, "sure_thing"].mean()
    by_uplift = m.loc[uplift.nlargest(top).index, "sure_thing"].mean()
    assert by_response > 0.5 and by_uplift < 0.1, (by_response, by_uplift)
    # the per-customer truth says the same
    for ch in D.CHANNELS:
        assert (truth.loc[sure, f"response_{ch}_treated"] >= truth.loc[sure, f"response_{ch}_control"]).all()
    # no new random draw: customers and purchases are the default world's
    for name in ("customers", "purchases"):
        _same(world.tables[name], base.tables[name])
    assert "sure_thing" not in base.truth
