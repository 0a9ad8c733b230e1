"""Off-policy evaluation on the decision log: what another catalog, or the scores of other model
versions, would have earned on the decisions the service made and the outcomes reported for them.

The unit is a *slot*: one channel of one logged decision. Each decision stores, per channel, every
eligible candidate (best-scored first), the one it showed first and the exploration share
(``kw_decisions.candidates``, see ``serving.exploration``), so the logging probability of every
candidate is known: ``(1 - epsilon) [best] + epsilon / k``. A slot counts when its shown candidate
was reported sent (any feedback event on it: campaign tools report what they sent); its reward is
1 when its feedback reached ``outcome`` (converted by default; clicked counts clicks), or that
times the candidate's value (``reward="value"``). Decisions recorded before exploration was
logged, and slots nobody reported on, are left out and counted.

The target policy shows, per slot, the logged candidate with the best score under the target: the
target catalog's formulas, costs, levers and rankings on the scores of a scoring run the store
keeps (the current one, or the one made with the given model versions). A candidate the target
catalog does not have (action or channel gone), or that its eligibility rules refuse, cannot be
chosen; a slot with no candidate left for the target is left out and counted. The reward model of
the doubly robust estimate is the logged response propensity of each candidate (times its value
for ``reward="value"``). Estimates and intervals: ``kundenwert.models.ope``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlalchemy as sa

from kundenwert.db.errors import map_exceptions
from kundenwert.db.schema import DECISIONS
from kundenwert.db.schema import FEEDBACK as EVENTS
from kundenwert.errors import ConfigurationError
from kundenwert.models.ope import LoggedDecisions, PolicyEvaluation, evaluate_policy, paired_difference
from kundenwert.serving.candidates import Candidates
from kundenwert.serving.catalog import Catalog
from kundenwert.serving.exploration import probability
from kundenwert.serving.feedback import OUTCOMES, STAGE

REWARDS = ("response", "value")
REACHED = {"clicked": STAGE["clicked"], "converted": STAGE["converted"]}
# feedback outcome -> stage of the response funnel, as feedback stores it (``OUTCOMES``, then
# ``STAGE``: "sent" is no response yet); bounced and unsubscribed are reports without a response
_STAGE_OF = {o: STAGE[OUTCOMES[o]] for o in ("sent", "opened", "clicked", "converted")}

LONG_COLUMNS = [
    "slot",
    "decision_id",
    "customer_id",
    "channel",
    "action_id",
    "position",
    "score",
    "propensity",
    "uplift",
    "value",
    "cost",
    "epsilon",
    "logging_prob",
    "shown",
]


@dataclass
class Log:
    """The logged slots as a long table (one row per slot and eligible candidate, ``LONG_COLUMNS``
    plus ``reward`` on the shown rows) and what was left out, by why."""

    long: pd.DataFrame
    decisions: int
    left_out: dict[str, int] = field(default_factory=dict)

    @property
    def slots(self) -> int:
        return int(self.long["slot"].nunique()) if len(self.long) else 0


def read_log(
    engine: sa.Engine,
    *,
    since: str | None = None,
    until: str | None = None,
    reward: str = "response",
    outcome: str = "converted",
) -> Log:
    """The decisions of ``[since, until)`` (ISO dates or instants; default: all) with their
    candidates and the rewards their feedback gives."""
    if reward not in REWARDS:
        raise ConfigurationError(f"reward must be one of {', '.join(REWARDS)}, not {reward!r}")
    if outcome not in REACHED:
        raise ConfigurationError(f"outcome must be one of {', '.join(REACHED)}, not {outcome!r}")
    query = sa.select(DECISIONS.c.decision_id, DECISIONS.c.customer_id, DECISIONS.c.candidates)
    if since:
        query = query.where(DECISIONS.c.created_at >= since)
    if until:
        query = query.where(DECISIONS.c.created_at < until)
    events = sa.select(EVENTS.c.decision_id, EVENTS.c.action_id, EVENTS.c.channel, EVENTS.c.outcome).where(
        EVENTS.c.decision_id.is_not(None)
    )
    with map_exceptions("reading the decision log", DECISIONS.name), engine.connect() as conn:
        decisions = conn.execute(query).all()
        reported: dict[tuple[str, str, str], int] = {}
        for d, a, ch, out in conn.execute(events):
            stage = _STAGE_OF.get(out, -1)  # bounced, unsubscribed: reported, no response
            key = (d, a, ch)
            reported[key] = max(reported.get(key, -1), stage)
    rows: list[list] = []
    rewards: list[float] = []
    left = {"decisions recorded without their candidates": 0, "slots without a report on what was shown": 0}
    for decision_id, customer_id, text in decisions:
        if text is None:
            left["decisions recorded without their candidates"] += 1
            continue
        for channel, slot in json.loads(text).items():
            cands, shown, eps = slot["candidates"], int(slot["shown"]), float(slot["epsilon"])
            got = reported.get((decision_id, cands[shown][0], channel))
            if got is None:
                left["slots without a report on what was shown"] += 1
                continue
            k = len(cands)
            name = f"{decision_id}|{channel}"
            for position, (action_id, score, p, u, v, cost) in enumerate(cands):
                rows.append(
                    [
                        name,
                        decision_id,
                        customer_id,
                        channel,
                        action_id,
                        position,
                        score,
                        p,
                        np.nan if u is None else u,
                        v,
                        cost,
                        eps,
                        probability(position, k, eps),
                        position == shown,
                    ]
                )
                hit = float(got >= REACHED[outcome])
                rewards.append(hit * (v if reward == "value" else 1.0) if position == shown else np.nan)
    long = pd.DataFrame(rows, columns=LONG_COLUMNS)
    long["reward"] = np.asarray(rewards, dtype="float64")
    return Log(long, decisions=len(decisions), left_out={k: v for k, v in left.items() if v})


def target_scores(
    long: pd.DataFrame,
    catalog: Catalog,
    scores: pd.DataFrame,
    propensity: pd.DataFrame,
    margins: dict[str, float],
    unavailable: dict[str, str] | None = None,
) -> np.ndarray:
    """Per row of ``long``: the candidate's score under ``catalog`` on the run's ``scores`` and
    ``propensity`` (NaN: the target cannot show it: action or channel not in the catalog, the
    customer not in the run, or a rule of the catalog worked out per run refuses it)."""
    out = np.full(len(long), np.nan)
    if long.empty:
        return out
    ids = pd.Index(long["customer_id"].unique()).intersection(scores.index)
    if not len(ids):
        return out
    cands = Candidates(catalog, scores.loc[ids], propensity, margins, unavailable=unavailable)
    pair_of = {
        (a, ch): j for j, (a, ch) in enumerate(zip(cands.action_ids, cands.channel_names, strict=True))
    }
    cols = np.array([pair_of.get(key, -1) for key in zip(long["action_id"], long["channel"], strict=True)])
    position = {cid: i for i, cid in enumerate(cands.ids)}
    rows = np.array([position.get(cid, -1) for cid in long["customer_id"]])
    known = (cols >= 0) & (rows >= 0)
    before = cands.before  # the rules on a scored customer (eligibility, the run's models)
    r, c = rows[known], cols[known]
    ok = before[r, c] == 0
    values = np.where(ok, cands.score[r, c], np.nan)
    out[np.flatnonzero(known)] = values
    return out


@dataclass(frozen=True)
class Report:
    """An evaluation: the target's estimates, the logged policy's, the difference, and what the
    log held."""

    evaluation: PolicyEvaluation
    difference: dict[str, dict[str, float]]
    slots: int
    decisions: int
    left_out: dict[str, int]
    reward: str
    outcome: str

    def rows(self) -> list[dict]:
        """One row per estimator: estimate, interval, effective sample size, difference to the
        logged policy's observed value with its interval."""
        out = []
        for name, e in self.evaluation.estimates().items():
            diff = self.difference.get(name)
            out.append(
                {
                    "estimator": name,
                    "estimate": e.estimate,
                    "low": e.low,
                    "high": e.high,
                    "ess": e.ess,
                    "n": e.n,
                    "vs_logged": None if diff is None else diff["estimate"],
                    "vs_logged_low": None if diff is None else diff["low"],
                    "vs_logged_high": None if diff is None else diff["high"],
                    "warnings": list(e.warnings),
                }
            )
        return out

    def to_dict(self) -> dict:
        ev = self.evaluation
        return {
            "slots": self.slots,
            "decisions": self.decisions,
            "left_out": self.left_out,
            "reward": self.reward,
            "outcome": self.outcome,
            "ess": ev.ess,
            "support": ev.support,
            "matched": ev.n_matched,
            "warnings": list(ev.warnings),
            "estimates": self.rows(),
        }


def evaluate_log(
    log: Log,
    target: np.ndarray,
    *,
    reward: str = "response",
    outcome: str = "converted",
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Report:
    """The target policy (argmax of ``target`` scores per slot; NaN: not available to it) on
    ``log``. Slots where the target has no candidate are left out and counted."""
    long = log.long.assign(target=target)
    usable = long.groupby("slot", sort=False)["target"].transform(lambda s: s.notna().any())
    left = dict(log.left_out)
    dropped = int(long.loc[~usable.astype(bool), "slot"].nunique())
    if dropped:
        left["slots where the target policy has no candidate"] = dropped
    long = long[usable.astype(bool)]
    if long.empty:
        raise ConfigurationError(
            "no logged decision to evaluate on: "
            + ("; ".join(f"{v:,} {k}" for k, v in left.items()) or "the decision log is empty")
        )
    logged, layout = LoggedDecisions.from_long(
        long["slot"].to_numpy(),
        long["shown"].to_numpy(),
        long["logging_prob"].to_numpy(),
        long["reward"].fillna(0.0).to_numpy(),
        long["logging_prob"].to_numpy(),
    )
    scores = layout.pad(long["target"].to_numpy(dtype="float64"))
    mask = layout.mask & np.isfinite(scores)
    # argmax per slot over the candidates the target may show (ties: the first, best logged)
    filled = np.where(mask, scores, -np.inf)
    best = np.argmax(filled, axis=1)
    policy = np.zeros(scores.shape)
    policy[np.arange(len(best)), best] = 1.0
    q = long["propensity"].to_numpy(dtype="float64")
    if reward == "value":
        q = q * long["value"].to_numpy(dtype="float64")
    model = layout.pad(np.nan_to_num(q, nan=0.0), fill=0.0)
    ev = evaluate_policy(logged, policy, model, n_boot=n_boot, seed=seed, alpha=alpha)
    difference: dict[str, dict[str, float]] = {}
    for name in ("ips", "snips", "dr"):
        if name in ev.estimates():
            d = paired_difference(ev, None, name)
            difference[name] = {"estimate": d.estimate, "low": d.low, "high": d.high}
    return Report(ev, difference, logged.n, log.decisions, left, reward, outcome)


def parse_models(text: str | None) -> dict[str, str]:
    """``"response=4,clv=2"`` -> ``{"response": "4", "clv": "2"}``; a clear error otherwise."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, version = part.partition("=")
        if not sep or not name.strip() or not version.strip():
            raise ConfigurationError(f"--models takes model=version pairs (response=4,clv=2), not {part!r}")
        out[name.strip()] = version.strip()
    return out


def run_of(engine: sa.Engine, models: dict[str, str]) -> dict:
    """The newest scoring run the store keeps whose models include ``models`` (all of them, at
    those versions); the current run without ``models``."""
    from kundenwert.serving.scores_store import runs

    kept = runs(engine)
    if not kept:
        raise ConfigurationError("no precomputed scores in the store: run `kundenwert score` first")
    for run in kept:
        if all(str(run["models"].get(name)) == version for name, version in models.items()):
            return run
    have = "; ".join(", ".join(f"{k}={v}" for k, v in sorted(r["models"].items())) for r in kept)
    raise ConfigurationError(
        f"no scoring run the store keeps used {', '.join(f'{k}={v}' for k, v in models.items())}; "
        f"the runs kept used: {have} (score with those versions first: `kundenwert score`)"
    )


def evaluate_store(
    store,
    catalog: Catalog,
    *,
    models: dict[str, str] | None = None,
    since: str | None = None,
    until: str | None = None,
    reward: str = "response",
    outcome: str = "converted",
    n_boot: int = 2000,
    seed: int = 0,
) -> Report:
    """``evaluate_log`` of the store's decision log for the policy of ``catalog`` on the scores of
    the run made with ``models`` (default: the current run)."""
    from kundenwert.serving.scores_store import read_scores
    from kundenwert.serving.scoring import category_margins

    log = read_log(store.engine, since=since, until=until, reward=reward, outcome=outcome)
    if log.long.empty:
        raise ConfigurationError(
            f"no logged decision to evaluate on ({log.decisions:,} decisions read"
            + "".join(f"; {v:,} {k}" for k, v in log.left_out.items())
            + "): decisions log their candidates from schema 0004 on, and a slot counts once its "
            "shown suggestion was reported sent"
        )
    run = run_of(store.engine, models or {})
    scores, propensity, info = read_scores(store.engine, run)
    margins = category_margins(store.read_table("purchases", ["amount", "margin", "category"]))
    catalog.check_names(sorted(margins))
    unavailable = catalog.unavailable(info["models"], margins)
    target = target_scores(log.long, catalog, scores, propensity, margins, unavailable)
    return evaluate_log(log, target, reward=reward, outcome=outcome, n_boot=n_boot, seed=seed)
