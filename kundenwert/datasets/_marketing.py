"""Steps 6-8 of the sample world: consents (with double opt-in, withdrawals and objections),
monthly campaigns with control groups and responses (or, as a variant, repeated phone calls, no
control groups, or one randomised e-mail experiment instead), and inbound contacts."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kundenwert.datasets import design as D
from kundenwert.datasets._buying import Orders
from kundenwert.datasets._common import (
    _SECONDS_PER_DAY,
    CONTACT_CHANNELS,
    TOPICS,
    Variants,
    _choice,
    _Clock,
    _ids,
    _sigmoid,
    sure_things,
)
from kundenwert.datasets._people import People
from kundenwert.features.contract import OUTCOMES


@dataclass
class ConsentHistory:
    """Per marketing channel x customer: valid grant and withdrawal times (inf: never); the
    objection time per customer; the consent rows written so far (campaign unsubscribes add more)."""

    grant: np.ndarray
    withdraw: np.ndarray
    obj_t: np.ndarray
    rows: list[pd.DataFrame]


def draw_consents(rng: np.random.Generator, p: People, span: float) -> ConsentHistory:
    """Consents per marketing channel, withdrawals and objections to all direct marketing."""
    pref_i, created = p.pref_i, p.created
    n = len(created)
    idx = np.arange(n)
    grant = np.full((4, n), np.inf)
    withdraw = np.full((4, n), np.inf)
    consent_rows = []
    for k, ch in enumerate(D.CHANNELS):
        prob = D.CONSENT_BASE[ch] + D.CONSENT_PREFERRED_BONUS * (pref_i == k)
        has = rng.random(n) < prob
        g_t = created + rng.exponential(10.0, n)
        has &= g_t < span
        doi = rng.random(n) < D.EMAIL_DOUBLE_OPT_IN
        valid_grant = has & (doi if ch == "email" else True)
        grant[k, valid_grant] = g_t[valid_grant]
        wd = has & (rng.random(n) < D.CONSENT_WITHDRAW)
        w_t = g_t + rng.exponential(400.0, n)
        wd &= w_t < span
        withdraw[k, wd] = w_t[wd]
        consent_rows.append(
            pd.DataFrame(
                {
                    "owner": idx[has],
                    "channel": ch,
                    "granted": True,
                    "t": g_t[has],
                    "double_opt_in": pd.array(doi[has], dtype="boolean")
                    if ch == "email"
                    else pd.array([pd.NA] * int(has.sum()), dtype="boolean"),
                    "source": _choice(
                        rng, ("web form", "contract", "call", "store"), (0.5, 0.25, 0.15, 0.1), int(has.sum())
                    ),
                }
            )
        )
        consent_rows.append(
            pd.DataFrame(
                {
                    "owner": idx[wd],
                    "channel": ch,
                    "granted": False,
                    "t": w_t[wd],
                    "source": "customer request",
                }
            )
        )
    objects = rng.random(n) < D.OBJECTION_SHARE
    obj_t = np.where(objects, created + rng.uniform(0, 1, n) * (span - created), np.inf)
    consent_rows.append(
        pd.DataFrame(
            {"owner": idx[objects], "channel": "*", "granted": False, "t": obj_t[objects], "source": "letter"}
        )
    )
    return ConsentHistory(grant=grant, withdraw=withdraw, obj_t=obj_t, rows=consent_rows)


@dataclass
class Campaigns:
    """The campaigns' outbound contacts (coded blocks), names, actions and unsubscribe records;
    ``truth``: extra per-customer truth columns a variant defines (the experiment's probabilities)."""

    u_resp: np.ndarray
    contact_parts: list[dict[str, np.ndarray]]
    campaigns: list[str]
    actions: list[str]
    unsub_rows: list[pd.DataFrame]
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    sure: np.ndarray | None = None  # --sure-things: who responds without a contact


def run_campaigns(
    rng: np.random.Generator,
    p: People,
    o: Orders,
    consent: ConsentHistory,
    start_ts: pd.Timestamp,
    end_ts: pd.Timestamp,
    span: float,
    variants: Variants | None = None,
    vrng: np.random.Generator | None = None,
) -> Campaigns:
    """Every month one campaign per channel to customers with valid consent at that moment; a
    control group held out; responses drawn; an unsubscribe withdraws the channel's consent.

    ``variants.control`` False: nobody is held out. ``variants.max_calls`` > 1: treated customers of
    phone campaigns who do not respond are called again (``_repeat_calls``, drawn from ``vrng``).
    ``variants.effect`` False: a contact does nothing, the treated respond with the control's
    (organic) probability; every draw stays as in the default world, only that probability changes.

    Each campaign's contact part carries the true response probabilities with and without the
    contact (``p_treated``, ``p_control``; on the first call of repeated phone calls only): the
    contacts frame moves them into the per-contact truth."""
    variants = variants or Variants()
    ag, created, price_sens, pi, pref_i = p.ag, p.created, p.price_sens, p.pi, p.pref_i
    death_at = o.death_at
    grant, withdraw, obj_t = consent.grant, consent.withdraw, consent.obj_t
    n = len(created)
    idx = np.arange(n)
    u_resp = rng.normal(0, D.RESPONSE_INDIVIDUAL_SD, n)
    sure = sure_things(o.lam, o.buyer & o.alive_end, variants.sure_things)
    months = pd.date_range(start_ts.normalize(), end_ts, freq="MS")
    if len(months) == 0 or months[0] > start_ts:
        months = months.insert(0, start_ts.normalize())
    contact_parts: list[dict[str, np.ndarray]] = []  # coded columns; strings only at the end
    campaigns: list[str] = []
    actions = list(D.ACTIONS)
    unsub_rows = []
    age_eff = {ch: np.asarray(D.RESPONSE_AGE[ch])[ag] for ch in D.CHANNELS}
    for month in months:
        m0 = (month - start_ts) / pd.Timedelta(days=1)
        for k, ch in enumerate(D.CHANNELS):
            t = m0 + rng.uniform(0, 25)
            if t >= span - 3:
                continue
            action = _pick_action(rng, ch)
            kind, _, a_eff, a_cat = D.ACTIONS[action]
            eligible = (created < t) & (grant[k] <= t) & (t < withdraw[k]) & ~(obj_t <= t)
            selected = eligible & (rng.random(n) < D.CAMPAIGN_REACH[ch])
            sel = idx[selected]
            if len(sel) == 0:
                continue
            control = rng.random(len(sel)) < D.CONTROL_SHARE
            if not variants.control:  # the draw above still happens: the stream stays the default's
                control = np.zeros(len(sel), dtype=bool)
            spread = 10.0 if ch == "phone" else 2.0
            ct = t + rng.uniform(0, spread, len(sel))
            dead = ~np.isnan(death_at[sel]) & (death_at[sel] < ct)
            extra = np.zeros(len(sel))
            if kind in ("retention", "win_back"):
                extra += D.RESPONSE_VOUCHER_PRICE_SENSITIVITY * (price_sens[sel] - 0.5)
            if a_cat is not None:
                extra += D.RESPONSE_AFFINITY * np.log(len(D.CATEGORIES) * pi[sel, D.CATEGORIES.index(a_cat)])
            logit_t = (
                D.RESPONSE_BASE[ch]
                + a_eff
                + D.RESPONSE_PREFERRED_CHANNEL * (pref_i[sel] == k)
                + age_eff[ch][sel]
                + u_resp[sel]
                + extra
            )
            logit_c = D.ORGANIC_BASE + D.RESPONSE_ORGANIC_INDIVIDUAL * u_resp[sel]
            logit_c = logit_c + D.SURE_THING_ORGANIC * (sure[sel] & ~dead)  # --sure-things (else + 0)
            logit_alive = logit_t
            logit_t = logit_t + D.RESPONSE_DEAD * dead
            logit_c = logit_c + D.RESPONSE_DEAD * dead
            p_control = _sigmoid(logit_c)
            p_treated = _sigmoid(logit_t) if variants.effect else p_control
            # a sure thing responds anyway: the contact adds nothing to the organic chance
            p_treated = np.where(sure[sel], np.maximum(p_treated, p_control), p_treated)
            prob = np.where(control, p_control, p_treated)
            responded = rng.random(len(sel)) < prob
            converted = responded & (rng.random(len(sel)) < D.CONVERT_GIVEN_RESPONSE)
            r = rng.random(len(sel))
            oc = OUTCOMES.index
            outcome = np.full(len(sel), oc("none"), dtype=np.int8)
            treated_quiet = ~control & ~responded
            if ch == "email":
                outcome[treated_quiet & (r < 0.015)] = oc("bounced")
                outcome[treated_quiet & (r >= 0.015) & (r < 0.021)] = oc("unsubscribed")
                outcome[treated_quiet & (r >= 0.021) & (r < 0.221)] = oc("opened")
                outcome[treated_quiet & (r >= 0.221) & (r < 0.261)] = oc("clicked")
            elif ch == "sms":
                outcome[treated_quiet & (r < 0.005)] = oc("unsubscribed")
                outcome[treated_quiet & (r >= 0.005) & (r < 0.035)] = oc("clicked")
            outcome[responded] = oc("responded")
            outcome[converted] = oc("converted")
            unsub = outcome == oc("unsubscribed")
            if unsub.any():
                who = sel[unsub]
                when = ct[unsub] + 60.0 / _SECONDS_PER_DAY
                withdraw[k, who] = np.minimum(withdraw[k, who], when)
                unsub_rows.append(
                    pd.DataFrame(
                        {
                            "owner": who,
                            "channel": ch,
                            "granted": False,
                            "t": when,
                            "source": "unsubscribe link",
                        }
                    )
                )
            campaigns.append(f"CMP-{month:%Y-%m}-{ch}")
            row = np.arange(len(sel))
            if ch == "phone" and variants.max_calls > 1:
                assert vrng is not None
                row, ct, outcome = _repeat_calls(
                    vrng,
                    variants.max_calls,
                    ct,
                    ~control & ~responded,
                    outcome,
                    logit_alive,
                    death_at[sel],
                    np.minimum(withdraw[k, sel], obj_t[sel]),
                    span,
                    variants.effect,
                )
            first = np.arange(len(row)) < len(sel)  # _repeat_calls lists the first calls first
            contact_parts.append(
                _contact_part(
                    sel[row],
                    ct,
                    CONTACT_CHANNELS.index(ch),
                    0,
                    len(campaigns) - 1,
                    actions.index(action),
                    control[row].astype(np.int8),
                    outcome,
                    -1,
                    p_treated=np.where(first, p_treated[row], np.nan),
                    p_control=np.where(first, p_control[row], np.nan),
                )
            )
    return Campaigns(
        u_resp=u_resp,
        contact_parts=contact_parts,
        campaigns=campaigns,
        actions=actions,
        unsub_rows=unsub_rows,
        sure=sure,
    )


def _repeat_calls(
    vrng: np.random.Generator,
    max_calls: int,
    ct: np.ndarray,
    again: np.ndarray,
    outcome: np.ndarray,
    logit_alive: np.ndarray,
    death_at: np.ndarray,
    allowed_until: np.ndarray,
    span: float,
    effect: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calls 2..``max_calls`` of one phone campaign, for the selected customers of its first call.

    ``again``: treated and no response to the first call. Call ``k`` comes ``CALL_GAP_DAYS`` after
    the previous one (while the world lasts and the consent holds) and responds with the first
    call's logit (``logit_alive``, before the left-the-company effect) + ``CALL_LOGIT_DECAY (k - 1)``.
    The campaign's outcome goes on each customer's last call; earlier calls are ``none``.
    ``effect`` False (``--no-effect``): calling does nothing, so a later call never brings a
    response (the first call's organic chance was the campaign's); the draws happen all the same.
    Returns per call: the index into the selected, its time and its outcome code.
    """
    oc = OUTCOMES.index
    n = len(ct)
    rows, times = [np.arange(n)], [ct]
    n_calls = np.ones(n, dtype=np.int64)
    final = outcome.copy()
    t_prev = ct.copy()
    waiting = again.copy()
    for k in range(2, max_calls + 1):
        t_k = t_prev + vrng.uniform(*D.CALL_GAP_DAYS, n)
        u_resp, u_conv = vrng.random(n), vrng.random(n)
        call = waiting & (t_k < span) & (t_k < allowed_until)
        if not call.any():
            break
        dead = ~np.isnan(death_at) & (death_at < t_k)
        logit = logit_alive + D.CALL_LOGIT_DECAY * (k - 1) + D.RESPONSE_DEAD * dead
        responded = call & (u_resp < _sigmoid(logit)) & effect
        converted = responded & (u_conv < D.CONVERT_GIVEN_RESPONSE)
        final[call] = oc("none")
        final[responded] = oc("responded")
        final[converted] = oc("converted")
        rows.append(np.flatnonzero(call))
        times.append(t_k[call])
        n_calls[call] = k
        t_prev = np.where(call, t_k, t_prev)
        waiting = call & ~responded
    row = np.concatenate(rows)
    number = np.concatenate([np.full(len(r), i + 1) for i, r in enumerate(rows)])
    last = number == n_calls[row]
    out = np.where(last, final[row], oc("none")).astype(np.int8)
    return row, np.concatenate(times), out


def run_experiment(
    rng: np.random.Generator,
    vrng: np.random.Generator,
    p: People,
    o: Orders,
    consent: ConsentHistory,
    start_ts: pd.Timestamp,
    span: float,
    effect: bool = True,
) -> Campaigns:
    """``--experiment``: one e-mail campaign on one day ``EXPERIMENT['days_before_end']`` before the
    end, to every customer with valid e-mail consent then; a third held out at random. Outcomes
    ``clicked`` (a visit) or ``converted`` (a purchase after a visit), treated or not; the treated
    effect depends on preferred channel, age group, price sensitivity and responsiveness.

    The individual responsiveness comes from ``rng`` exactly as in ``run_campaigns`` (the truth's
    ``response_individual`` is the default world's); everything else from ``vrng``. The true
    probabilities of every customer on that day are returned as extra truth columns; the contact
    part carries each contact's (a response is a conversion: click and purchase).

    ``effect`` False (``--no-effect``): the e-mail does nothing, the treated click and convert with
    the control's probabilities (the same draws)."""
    E = D.EXPERIMENT
    ch = D.EXPERIMENT_CHANNEL
    k = D.CHANNELS.index(ch)
    action = D.EXPERIMENT_ACTION
    kind = D.ACTIONS[action][0]
    n = len(p.created)
    u_resp = rng.normal(0, D.RESPONSE_INDIVIDUAL_SD, n)
    day = np.floor(span - E["days_before_end"])
    t = day + 9.0 / 24.0  # 09:00, sent over the next eight hours
    eligible = (p.created < t) & (consent.grant[k] <= t) & (t < consent.withdraw[k]) & ~(consent.obj_t <= t)
    dead_t = ~np.isnan(o.death_at) & (o.death_at < t)
    voucher = kind in ("retention", "win_back")
    ps = p.price_sens - 0.5
    click_t = (
        E["click_base"]
        + D.RESPONSE_PREFERRED_CHANNEL * (p.pref_i == k)
        + np.asarray(D.RESPONSE_AGE[ch])[p.ag]
        + u_resp
        + (E["click_price_sensitivity"] * ps if voucher else 0.0)
    )
    click_c = E["click_organic_base"] + D.RESPONSE_ORGANIC_INDIVIDUAL * u_resp
    conv_c = E["convert_base"] + E["convert_individual"] * u_resp
    conv_t = conv_c + E["convert_treated"] + E["convert_price_sensitivity"] * ps
    if not effect:
        click_t, conv_t = click_c, conv_c
    sel = np.flatnonzero(eligible)
    control = vrng.random(len(sel)) < E["control_share"]
    ct = t + vrng.uniform(0, 8.0 / 24.0, len(sel))
    dead = ~np.isnan(o.death_at[sel]) & (o.death_at[sel] < ct)
    shift = D.RESPONSE_DEAD * dead
    p_click = _sigmoid(np.where(control, click_c[sel], click_t[sel]) + shift)
    p_conv = _sigmoid(np.where(control, conv_c[sel], conv_t[sel]) + shift)
    clicked = vrng.random(len(sel)) < p_click
    converted = clicked & (vrng.random(len(sel)) < p_conv)
    oc = OUTCOMES.index
    outcome = np.full(len(sel), oc("none"), dtype=np.int8)
    outcome[clicked] = oc("clicked")
    outcome[converted] = oc("converted")
    date = start_ts.normalize() + pd.Timedelta(days=float(day))
    campaigns = [f"EXP-{date:%Y-%m-%d}-{ch}"]
    actions = list(D.ACTIONS)
    click_tc = _sigmoid(click_t[sel] + shift), _sigmoid(click_c[sel] + shift)
    conv_tc = _sigmoid(conv_t[sel] + shift), _sigmoid(conv_c[sel] + shift)
    part = _contact_part(
        sel,
        ct,
        CONTACT_CHANNELS.index(ch),
        0,
        0,
        actions.index(action),
        control.astype(np.int8),
        outcome,
        -1,
        p_treated=click_tc[0] * conv_tc[0],
        p_control=click_tc[1] * conv_tc[1],
        p_click_treated=click_tc[0],
        p_click_control=click_tc[1],
    )
    truth = {}
    for arm, c_logit, v_logit in (("treated", click_t, conv_t), ("control", click_c, conv_c)):
        pc_ = _sigmoid(c_logit + D.RESPONSE_DEAD * dead_t)
        truth[f"experiment_click_{arm}"] = pc_
        truth[f"experiment_conversion_{arm}"] = pc_ * _sigmoid(v_logit + D.RESPONSE_DEAD * dead_t)
    truth["experiment_eligible"] = eligible
    return Campaigns(
        u_resp=u_resp, contact_parts=[part], campaigns=campaigns, actions=actions, unsub_rows=[], truth=truth
    )


def contacts_table(
    rng: np.random.Generator,
    clock: _Clock,
    customer_ids: np.ndarray,
    p: People,
    o: Orders,
    campaigns_run: Campaigns,
    c_owner: np.ndarray,
    c_open: np.ndarray,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All contacts: the campaigns', inbound contacts while customers are around, and the
    follow-up contact of each complaint; and the campaign contacts' truth (``_contacts_frame``)."""
    span = clock.span
    ctype_i, created, consumer = p.ctype_i, p.created, p.consumer
    death_at = o.death_at
    contact_parts = campaigns_run.contact_parts
    campaigns, actions = campaigns_run.campaigns, campaigns_run.actions
    idx = np.arange(len(created))
    in_rate = np.array([1 / 250, 1 / 60, 1 / 45])[ctype_i]
    active_until = np.where(
        np.isnan(death_at), span, np.minimum(span, np.nan_to_num(death_at, nan=span) + 30.0)
    )
    active_len = np.maximum(active_until - created, 0.0)
    n_in = rng.poisson(in_rate * active_len)
    in_owner = np.repeat(idx, n_in)
    in_t = created[in_owner] + rng.random(len(in_owner)) * active_len[in_owner]
    cc = CONTACT_CHANNELS.index
    in_channel = np.where(
        consumer[in_owner],
        np.asarray([cc("phone"), cc("email"), cc("web"), cc("store")])[
            rng.choice(4, size=len(in_owner), p=(0.4, 0.35, 0.15, 0.1))
        ],
        np.asarray([cc("phone"), cc("email"), cc("field_sales")])[
            rng.choice(3, size=len(in_owner), p=(0.4, 0.35, 0.25))
        ],
    )
    n_in_total = len(in_owner)
    contact_parts.append(
        _contact_part(
            in_owner, in_t, in_channel, 1, -1, -1, -1, -1, rng.choice(3, size=n_in_total, p=(0.45, 0.35, 0.2))
        )
    )
    complaint_channel = np.where(
        rng.random(len(c_owner)) < 0.6, CONTACT_CHANNELS.index("phone"), CONTACT_CHANNELS.index("email")
    )
    contact_parts.append(
        _contact_part(c_owner, c_open, complaint_channel, 1, -1, -1, -1, -1, TOPICS.index("complaint"))
    )
    return _contacts_frame(contact_parts, clock, customer_ids, campaigns, actions)


def consents_table(
    consent: ConsentHistory, campaigns_run: Campaigns, clock: _Clock, customer_ids: np.ndarray
) -> pd.DataFrame:
    """The contract's ``consents`` table: grants, withdrawals, objections and unsubscribes."""
    consent_rows, unsub_rows = consent.rows, campaigns_run.unsub_rows
    consents = pd.concat(consent_rows + unsub_rows, ignore_index=True)
    consents["recorded_at"] = clock.ts(consents["t"].to_numpy())
    consents = consents.sort_values(["recorded_at", "owner"], kind="stable")
    consents["customer_id"] = customer_ids[consents["owner"].to_numpy()]
    consents = consents.drop_duplicates(["customer_id", "channel", "recorded_at"], keep="last")
    consents["double_opt_in"] = consents["double_opt_in"].astype("boolean")
    return consents[
        ["customer_id", "channel", "granted", "recorded_at", "double_opt_in", "source"]
    ].reset_index(drop=True)


def _contact_part(
    owner,
    t,
    channel,
    direction,
    campaign,
    action,
    control,
    outcome,
    topic,
    p_treated=np.nan,
    p_control=np.nan,
    p_click_treated=np.nan,
    p_click_control=np.nan,
) -> dict[str, np.ndarray]:
    """One block of contacts as integer codes (-1 = empty); scalars are broadcast. The ``p_*``
    columns are truth (NaN: none), not contact data: ``_contacts_frame`` moves them apart."""
    n = len(owner)

    def col(v, dtype):
        return np.broadcast_to(np.asarray(v, dtype=dtype), (n,))

    return {
        "owner": np.asarray(owner, dtype=np.int64),
        "t": np.asarray(t, dtype=np.float64),
        "channel": col(channel, np.int8),
        "direction": col(direction, np.int8),
        "campaign": col(campaign, np.int32),
        "action": col(action, np.int16),
        "control": col(control, np.int8),
        "outcome": col(outcome, np.int8),
        "topic": col(topic, np.int8),
        **{
            k: col(v, np.float64)
            for k, v in zip(
                _TRUTH_CODES, (p_treated, p_control, p_click_treated, p_click_control), strict=True
            )
        },
    }


# The truth columns of a contact part and their names in ``truth/contacts.parquet``.
_TRUTH_CODES = ("p_treated", "p_control", "p_click_treated", "p_click_control")
_TRUTH_NAMES = ("p_response_treated", "p_response_control", "p_click_treated", "p_click_control")


def _contacts_frame(parts, clock, customer_ids, campaigns, actions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All contacts in time order, with text columns as categoricals (memory: codes, not strings);
    and the per-contact truth: the rows whose part gave response probabilities (campaign contacts;
    of repeated calls the first), sorted with the contacts, so each row has its contact's id."""
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(cols["t"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    control = pd.array(cols["control"] == 1, dtype="boolean")
    control[cols["control"] < 0] = pd.NA
    frame = pd.DataFrame(
        {
            "contact_id": _ids("K", len(order), 10),
            "customer_id": customer_ids[cols["owner"]],
            "contacted_at": clock.ts(cols["t"]),
            "channel": pd.Categorical.from_codes(cols["channel"], CONTACT_CHANNELS),
            "direction": pd.Categorical.from_codes(cols["direction"], ("outbound", "inbound")),
            "campaign_id": pd.Categorical.from_codes(cols["campaign"], campaigns),
            "action_id": pd.Categorical.from_codes(cols["action"], actions),
            "is_control": control,
            "outcome": pd.Categorical.from_codes(cols["outcome"], OUTCOMES),
            "topic": pd.Categorical.from_codes(cols["topic"], TOPICS),
        }
    )
    has = ~np.isnan(cols["p_treated"])
    truth = frame.loc[has, ["contact_id", "customer_id", "campaign_id", "action_id", "channel"]]
    truth["is_control"] = cols["control"][has] == 1
    for code, name in zip(_TRUTH_CODES, _TRUTH_NAMES, strict=True):
        truth[name] = cols[code][has]
    return frame, truth.reset_index(drop=True)


def _pick_action(rng: np.random.Generator, channel: str) -> str:
    kinds = sorted({kind for kind, chans, _, _ in D.ACTIONS.values() if channel in chans})
    kind = kinds[rng.integers(len(kinds))]
    options = sorted(a for a, (k, chans, _, _) in D.ACTIONS.items() if k == kind and channel in chans)
    return options[rng.integers(len(options))]
