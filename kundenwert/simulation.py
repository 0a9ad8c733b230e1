"""Closed-loop simulation on a sample world: months of decisions made with the service's own code,
the world's true outcomes fed back, the response model retrained on schedule, and per policy the
true incremental responders and value its contacts earned.

The sample world (``kundenwert sample``) knows every customer's true response probability with a
contact and without it, for any action, channel and moment (``truth.contact_probabilities``, the
formula the world's campaigns draw from). ``simulate`` replays its last months:

1. The world is imported into a store (``import_folder``) and read back as the service reads it
   (``load_frames``). From the ``start`` on, the world's own campaign contacts (outbound) are taken
   out: from then on the simulated policies make the campaigns. Everything else the world records
   (purchases, inbound contacts, consents, complaints, offers) stays: in this world buying does
   not depend on marketing, so it is the same whatever a policy does. At every decision date each
   table is cut there, so nothing later is seen.
2. Every model is trained once at the start (``train_models``, a fast configuration, see
   ``fast_config``): the common start of every policy.
3. Each month, at its first day, each policy scores its own view of the world (``snapshot``,
   ``score_snapshot``), runs arbitration (``Candidates``, ``decide``: consent, eligibility,
   contact policy, value and the control group, exactly as served) and picks contacts among the
   candidates arbitration keeps or holds out as control (as target lists do):

   - ``random``: customers in random order, each one's candidate uniformly among its own (logging
     probability 1/k), until ``contacts`` are contacted;
   - ``response``: each customer's best candidate by the response-ranked score (propensity x value
     x lever - cost: every action of the catalog with ``ranking = "response"``), customers by that
     score, until ``contacts`` are contacted;
   - ``uplift``: the same with ``ranking = "uplift"`` (the incremental value the contact earns);
   - ``greedy`` and ``optimised``: the uplift-ranked candidates (value: the uplift-ranked score,
     which is net of the cost) under a money ``budget`` per month, by ``models.assign.greedy``
     and by ``models.assign.assign`` (at most one candidate per customer).

   A picked candidate that arbitration holds out as control (the catalog's ``control_share``,
   drawn per action and month as served) is not contacted: it is recorded as a control contact,
   as the CRM would, so the retrained model keeps learning the uplift. Ranked and random policies
   walk on until ``contacts`` are really contacted, so they contact the same number.
4. The outcome of every recorded contact is drawn from the truth at its moment (treated: with the
   contact; control: without) with common random numbers: the same customer in the same month
   draws the same uniform under every policy of a seed, so policies differ by their choices only.
   Responses convert with the world's ``CONVERT_GIVEN_RESPONSE``. The contacts and their outcomes
   join that policy's contact history (the store's ``contacts`` table as the frames hold it), which
   the next month's contact pressure, ignored offers and features read.
5. Every ``retrain_every`` months the response model is retrained on each policy's own history
   (the other models learn from purchases, the same under every policy, and keep their start).
   The split is by customer: a split in time tests on the latest label window, which is exactly the
   feedback a retraining is for.

The true incremental responders of a contact are ``p_treated - p_control`` at its moment, its true
incremental value that times the value of a response. The world knows probabilities, not what a
response is worth: that is the business's formula (the catalog's ``value``). To value every
policy's contacts with the same numbers it is evaluated once per month on a reference view shared
by all policies (the world without any campaign after the start, the start's models), not on each
policy's own scores.

Every decision is logged for off-policy evaluation (``models.ope``): per decided customer every
candidate it had (the policy's pool), the one chosen, its logging probability (1 for the
deterministic policies, 1/k for random) and every candidate's true ``p_treated``, ``p_control``
and value; the chosen one's observed response.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kundenwert.datasets import design as D
from kundenwert.datasets.truth import contact_probabilities, load_truth
from kundenwert.errors import ConfigurationError
from kundenwert.models.assign import assign, greedy
from kundenwert.serving.arbitration import Candidates, Live, decide
from kundenwert.serving.catalog import Catalog, load_catalog
from kundenwert.serving.scoring import (
    category_margins,
    decision_inputs,
    objecting_then_or_now,
    per_action_spec,
    score_snapshot,
    status_at,
)
from kundenwert.training.config import ExperimentConfig

POLICIES = ("random", "response", "uplift", "greedy", "optimised")
RANKED = {"response": "response", "uplift": "uplift", "greedy": "uplift", "optimised": "uplift"}
TIME_COLUMNS = {
    "customers": "created_at",
    "purchases": "purchased_at",
    "contacts": "contacted_at",
    "consents": "recorded_at",
    "complaints": "opened_at",
    "offers": "created_at",
}
LOG_COLUMNS = [
    "policy",
    "month",
    "decision_id",
    "customer_id",
    "action_id",
    "channel",
    "shown",
    "contacted_at",
    "logging_prob",
    "group",
    "score",
    "propensity",
    "uplift",
    "cost",
    "value",
    "p_treated",
    "p_control",
    "responded",
]

Progress = Callable[[str], None]


def fast_config(seed: int = 0) -> ExperimentConfig:
    """The training of a simulation: every model but the response model with 30 boosting
    iterations (the response model, whose uplift the policies rank by, with its own defaults: 30
    iterations at its learning rate barely separate the arms), the latest six
    training cutoffs (the default: the world's campaigns run one action per channel and month, and
    only the actions of the training window with control rows get a learnt uplift; two cutoffs
    miss half of them), no gates (the simulation measures policies, not whether a model may be
    promoted) and the test rows set apart by customer (see the module docstring)."""
    from kundenwert.models.specs import SPECS

    acting = per_action_spec().name
    return ExperimentConfig.model_validate(
        {
            "models": {m: {"params": {} if m == acting else {"max_iter": 30}, "gates": {}} for m in SPECS},
            "data": {"max_train_cutoffs": 6, "seed": seed},
            "split": {"method": "customer"},
        }
    )


@dataclass(frozen=True)
class SimulationConfig:
    """What a simulation replays: ``months`` decision dates (first days of months) from ``start``
    (default: the first of the month ``months + 1`` months before the world's end, so the last
    month's responses lie inside the world), ``contacts`` per month for the ranked and random
    policies, a money ``budget`` per month for the budget policies, the response model retrained
    before every ``retrain_every``-th month (0: never), ``seed`` of the draws."""

    months: int = 4
    contacts: int = 200
    budget: float = 50.0
    retrain_every: int = 2
    seed: int = 0
    start: str | None = None
    policies: tuple[str, ...] = POLICIES

    def check(self) -> None:
        unknown = [p for p in self.policies if p not in POLICIES]
        if unknown:
            raise ConfigurationError(
                f"unknown policies {', '.join(unknown)}; policies are {', '.join(POLICIES)}"
            )
        if self.months < 1 or self.contacts < 1 or self.budget <= 0 or self.retrain_every < 0:
            raise ConfigurationError(
                "months and contacts must be at least 1, the budget positive, retrain_every >= 0"
            )


@dataclass
class Simulation:
    """The result: ``months`` (one row per policy and month: ``contacts`` made, ``held_out`` as
    control, ``cost``, true ``incremental_responders`` and ``incremental_value``, observed
    ``responders`` among the contacted, the policy's own ``score`` of its picks, whether the
    response model was ``retrained`` before the month), ``log`` (one row per decision and
    candidate, ``LOG_COLUMNS``), the decision dates, the world's ``variants`` and per policy the
    ``contacts`` it recorded (contract columns, as the next months and retrainings saw them)."""

    months: pd.DataFrame
    log: pd.DataFrame
    dates: list[pd.Timestamp]
    variants: dict = field(default_factory=dict)
    contacts: dict[str, pd.DataFrame] = field(default_factory=dict)  # per policy: what it fed back

    def summary(self) -> pd.DataFrame:
        """Totals per policy over the months, with value per contact and per money unit spent."""
        total = self.months.groupby("policy", sort=False)[
            ["contacts", "held_out", "cost", "incremental_responders", "incremental_value", "responders"]
        ].sum()
        total["value_per_contact"] = total["incremental_value"] / total["contacts"].where(
            total["contacts"] > 0
        )
        total["value_per_money"] = total["incremental_value"] / total["cost"].where(total["cost"] > 0)
        total["responders_per_contact"] = total["incremental_responders"] / total["contacts"].where(
            total["contacts"] > 0
        )
        return total


def policy_catalog(catalog: Catalog, ranking: str) -> Catalog:
    """``catalog`` with every action ranked by ``ranking`` (``"response"`` or ``"uplift"``)."""
    return catalog.model_copy(
        update={"actions": [a.model_copy(update={"ranking": ranking}) for a in catalog.actions]}
    )


def cut(frames: dict[str, pd.DataFrame], t: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """Every table as it stood just before ``t`` (its rows of earlier moments)."""
    out = {}
    for name, df in frames.items():
        col = TIME_COLUMNS.get(name)
        out[name] = df[(df[col] < t).to_numpy(dtype=bool)] if col in df.columns else df
    return out


def _rows_like(base: pd.DataFrame, new: dict[str, Any], n: int) -> pd.DataFrame:
    """``new`` columns as rows of ``base``'s columns and dtypes (missing columns empty)."""
    cols = {}
    for c in base.columns:
        v = new.get(c, [None] * n)
        cols[c] = pd.Series(v if np.ndim(v) else [v] * n, dtype=base[c].dtype)
    return pd.DataFrame(cols)


@dataclass
class _Policy:
    name: str
    catalog: Catalog
    models: dict[str, object]
    contacts: list[pd.DataFrame] = field(default_factory=list)


def _world(folder: Path, progress: Progress) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, dict]:
    from kundenwert.db.store import Store
    from kundenwert.features.importer import import_folder
    from kundenwert.features.snapshot import load_frames

    design = json.loads((folder / "truth" / "design.json").read_text())
    with tempfile.TemporaryDirectory(prefix="kw-sim-") as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'kw.db'}")
        try:
            progress(f"importing {folder}")
            import_folder(folder, store, mode="replace")
            frames = load_frames(store)
        finally:
            store.dispose()
    return frames, load_truth(str(folder)), design


def default_start(design: dict, months: int) -> pd.Timestamp:
    end = pd.Timestamp(design["end"])
    end = end.tz_localize("UTC") if end.tz is None else end.tz_convert("UTC")
    return (end - pd.DateOffset(months=months + 1)).normalize().replace(day=1)


def simulate(
    folder: str | Path,
    config: SimulationConfig | None = None,
    experiment: ExperimentConfig | None = None,
    catalog: Catalog | None = None,
    progress: Progress | None = None,
) -> Simulation:
    """Replay ``config.months`` of decisions on the sample world in ``folder`` (see the module
    docstring); every policy of ``config.policies`` from the same start, on the same draws."""
    from kundenwert.features.snapshot import snapshot, without_objecting
    from kundenwert.threads import limited
    from kundenwert.training.backtest import train_models

    config = config or SimulationConfig()
    config.check()
    say = progress or (lambda _m: None)
    folder = Path(folder)
    full, truth, design = _world(folder, say)
    variants = design.get("variants", {})
    if variants.get("experiment"):
        raise ConfigurationError(
            "the --experiment world has no monthly campaigns to learn from: simulate another"
        )
    effect = bool(variants.get("effect", True))
    experiment = experiment or fast_config(config.seed)
    catalog = catalog or load_catalog()
    start = pd.Timestamp(config.start, tz="UTC") if config.start else default_start(design, config.months)
    dates = [start + pd.DateOffset(months=m) for m in range(config.months)]
    k = full["contacts"]
    world_campaigns = (k["direction"] == "outbound").to_numpy(dtype=bool) & (
        k["contacted_at"] >= start
    ).to_numpy(dtype=bool)
    base = {**full, "contacts": k[~world_campaigns]}
    truth_ids = pd.Index(truth["customer_id"].to_numpy())
    acting = per_action_spec().name  # the response model: what contacts teach

    with limited():
        say(f"training every model at {start:%Y-%m-%d}")
        trained = train_models(without_objecting(cut(base, start), start)[0], experiment)
        models0 = {name: r.model for name, r in trained.items()}
        # random draws among what the catalog as configured keeps; the others rank as they say
        policies = [
            _Policy(name, policy_catalog(catalog, RANKED[name]) if name in RANKED else catalog, dict(models0))
            for name in config.policies
        ]
        month_rows: list[dict] = []
        logs: list[pd.DataFrame] = []
        for m, t in enumerate(dates):
            period = f"{t:%Y-%m}"
            ref = _reference(cut(base, t), t, models0, catalog)
            rng = np.random.default_rng([config.seed, 7, m])  # common to every policy
            u_resp, u_conv = rng.random(len(truth_ids)), rng.random(len(truth_ids))
            at_hour = rng.uniform(9.0, 17.0, len(truth_ids))
            for p in policies:
                frames = cut(base, t)
                if p.contacts:
                    frames["contacts"] = pd.concat([frames["contacts"], *p.contacts], ignore_index=True)
                retrain = bool(config.retrain_every and m > 0 and m % config.retrain_every == 0)
                if retrain:
                    say(f"{period} {p.name}: retraining the response model")
                    again = train_models(without_objecting(frames, t)[0], experiment, [acting])
                    p.models[acting] = again[acting].model
                say(f"{period} {p.name}: scoring and deciding")
                X = snapshot(frames, t)
                objecting = objecting_then_or_now(frames["consents"], t)
                scores, propensity = score_snapshot(
                    X, status_at(frames, t), p.models, p.catalog, objecting, reasons=False, fit_p_alive=False
                )
                margins = category_margins(frames["purchases"])
                inputs = decision_inputs(scores, propensity, frames, t)
                cands = Candidates(
                    p.catalog,
                    scores,
                    propensity,
                    margins,
                    unavailable=p.catalog.unavailable(p.models, margins),
                )
                ids = scores.index
                live = Live.from_frames(cands, ids, inputs.consent, inputs.pressure, inputs.ignored)
                dec = decide(cands, ids, live, period=period).frame()
                pool = dec[dec["reason"].isin(["", "control_group"])].reset_index(drop=True)
                chosen, prob = _choose(p.name, pool, config, np.random.default_rng([config.seed, 11, m]))
                decided = _decided(p.name, m, pool, chosen, prob)
                where = truth_ids.get_indexer(decided["customer_id"].to_numpy())
                when = t + pd.to_timedelta(at_hour[where], unit="h")
                p_t, p_c = contact_probabilities(
                    truth,
                    decided["customer_id"].to_numpy(),
                    decided["action_id"].to_numpy(),
                    decided["channel"].to_numpy(),
                    when,
                    effect,
                )
                decided["p_treated"], decided["p_control"] = p_t, p_c
                decided["contacted_at"] = when
                decided["value"] = ref(decided)
                shown = decided["shown"].to_numpy(dtype=bool)
                target = shown & (decided["group"] == "target").to_numpy()
                held = shown & ~target
                p_now = np.where(target, p_t, p_c)
                responded = u_resp[where] < p_now
                converted = responded & (u_conv[where] < D.CONVERT_GIVEN_RESPONSE)
                decided["responded"] = np.where(shown, responded, False)
                logs.append(decided)
                lift = np.where(target, p_t - p_c, 0.0)
                value = np.nan_to_num(decided["value"].to_numpy(dtype="float64"))
                month_rows.append(
                    {
                        "policy": p.name,
                        "month": period,
                        "pool": int(pool["customer_id"].nunique()),
                        "contacts": int(target.sum()),
                        "held_out": int(held.sum()),
                        "cost": float(decided["cost"].to_numpy(dtype="float64")[target].sum()),
                        "incremental_responders": float(lift.sum()),
                        "incremental_value": float((lift * value).sum()),
                        "responders": int((responded & target).sum()),
                        # what the policy itself expected of its picks (the objective it ranked by)
                        "score": float(decided["score"].to_numpy(dtype="float64")[shown].sum()),
                        "retrained": retrain,
                        "unvalued": int(
                            (target & ~np.isfinite(decided["value"].to_numpy(dtype="float64"))).sum()
                        ),
                    }
                )
                outcome = np.where(converted, "converted", np.where(responded, "responded", "none"))
                rows = decided[shown]
                n = len(rows)
                p.contacts.append(
                    _rows_like(
                        frames["contacts"],
                        {
                            "contact_id": [f"SIM-{p.name}-{period}-{i:07d}" for i in range(n)],
                            "customer_id": rows["customer_id"].to_numpy(),
                            "contacted_at": when[shown],
                            "channel": rows["channel"].to_numpy(),
                            "direction": "outbound",
                            "campaign_id": (
                                f"SIM-{period}-"
                                + rows["action_id"].astype(str)
                                + "-"
                                + rows["channel"].astype(str)
                            ).to_numpy(),
                            "action_id": rows["action_id"].to_numpy(),
                            "is_control": (rows["group"] == "control").to_numpy(),
                            "outcome": outcome[shown],
                        },
                        n,
                    )
                )
    return Simulation(
        pd.DataFrame(month_rows),
        pd.concat(logs, ignore_index=True)[LOG_COLUMNS],
        dates,
        variants,
        {p.name: pd.concat(p.contacts, ignore_index=True) for p in policies},
    )


def _reference(frames: dict[str, pd.DataFrame], t: pd.Timestamp, models: dict, catalog: Catalog):
    """The value of a response per (customer, action, channel) at ``t`` on the reference view
    (no campaign since the start, the start's models): a lookup for rows of a decision log."""
    from kundenwert.features.snapshot import snapshot

    X = snapshot(frames, t)
    scores, propensity = score_snapshot(
        X,
        status_at(frames, t),
        models,
        catalog,
        objecting_then_or_now(frames["consents"], t),
        reasons=False,
        fit_p_alive=False,
    )
    margins = category_margins(frames["purchases"])
    cands = Candidates(catalog, scores, propensity, margins)
    pair = {(a, ch): j for j, (a, ch) in enumerate(zip(cands.action_ids, cands.channel_names, strict=True))}

    def lookup(rows: pd.DataFrame) -> np.ndarray:
        pos = cands.positions(rows["customer_id"].tolist())  # unknown customers: the no-scores row (NaN)
        col = np.array(
            [pair.get((a, ch), -1) for a, ch in zip(rows["action_id"], rows["channel"], strict=True)]
        )
        out = np.full(len(rows), np.nan)
        ok = col >= 0
        out[ok] = cands.value[pos[ok], col[ok]]
        return out

    return lookup


def _choose(
    policy: str, pool: pd.DataFrame, config: SimulationConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``pool`` the policy picks (in order) and per pool row the probability the policy
    gives it, for the customers it decides: 1/k for random, 1 on the chosen for the others."""
    prob = np.zeros(len(pool))
    if pool.empty:
        return np.zeros(0, dtype=np.int64), prob
    control = (pool["reason"] == "control_group").to_numpy()
    cust = pool["customer_id"].to_numpy(dtype=object)
    prob_all: np.ndarray | None = None  # random: per pool row, 1/k of its customer
    if policy == "random":
        codes, uniques = pd.factorize(cust)
        k = np.bincount(codes)
        order = rng.permutation(len(uniques))
        pick = rng.random(len(uniques))  # the candidate of each customer, uniformly among its own
        starts = np.concatenate(([0], np.cumsum(k)[:-1]))
        by_customer = np.argsort(codes, kind="stable")
        row_of = by_customer[starts + np.minimum((pick * k).astype(np.int64), k - 1)]
        walk = row_of[order]
        prob_all = 1.0 / k[codes]
    elif policy in ("response", "uplift"):
        score = pool["score"].to_numpy(dtype="float64")
        first = np.lexsort((-score,))  # best first (stable on ties: pool order)
        seen = pd.Series(cust[first]).duplicated().to_numpy()
        walk = first[~seen]
    else:
        cands = pd.DataFrame(
            {
                "customer": cust,
                "value": pool["score"].to_numpy(dtype="float64"),
                "cost": pool["cost"].to_numpy(dtype="float64"),
                "channel": pool["channel"].to_numpy(dtype=object),
                "responders": pool["uplift"].to_numpy(dtype="float64"),
            }
        )
        if policy == "greedy":
            rows = greedy(cands, budget=config.budget).rows
        else:  # the exact MILP up to assign's limit, its lagrangian LP beyond
            rows = assign(cands, budget=config.budget, gains=False, seed=config.seed).rows
        prob[rows] = 1.0
        return np.asarray(rows, dtype=np.int64), prob
    treated = np.cumsum(~control[walk])
    take = (
        walk[: int(np.searchsorted(treated, config.contacts) + 1)] if treated[-1] >= config.contacts else walk
    )
    if prob_all is None:
        prob[take] = 1.0
    else:
        mine = np.isin(cust, cust[take])
        prob[mine] = prob_all[mine]
    return take, prob


def _decided(
    policy: str, month: int, pool: pd.DataFrame, chosen: np.ndarray, prob: np.ndarray
) -> pd.DataFrame:
    """The log rows of a month: every pool candidate of the customers the policy decided on."""
    shown = np.zeros(len(pool), dtype=bool)
    shown[chosen] = True
    mine = pool["customer_id"].isin(pool["customer_id"].to_numpy()[chosen]).to_numpy()
    out = pool[mine]
    return pd.DataFrame(
        {
            "policy": policy,
            "month": month,
            "decision_id": [f"{policy}:{month}:{c}" for c in out["customer_id"]],
            "customer_id": out["customer_id"].to_numpy(dtype=object),
            "action_id": out["action_id"].to_numpy(dtype=object),
            "channel": out["channel"].to_numpy(dtype=object),
            "shown": shown[mine],
            "logging_prob": prob[mine],
            "group": np.where((out["reason"] == "control_group").to_numpy(), "control", "target"),
            "score": out["score"].to_numpy(dtype="float64"),
            "propensity": out["propensity"].to_numpy(dtype="float64"),
            "uplift": out["uplift"].to_numpy(dtype="float64"),
            "cost": out["cost"].to_numpy(dtype="float64"),
        }
    )
