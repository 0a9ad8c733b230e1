"""Channel response: P(response | contact on channel k with action a) and the uplift of contacting.

Training rows are outbound contacts in a label window after a cutoff (``labels.response_labels``)
with the customer's snapshot at that cutoff (``response_rows``). One calibrated booster learns
response from the snapshot, the channel, the action and whether the contact was made (treated) or
withheld (control group); the uplift of a contact is the response with the contact minus the
response without it, the same customer, channel and action (an S-learner: the control group is
small, about 15%, and one model shares what both arms have in common). ``qini`` measures how well
an uplift ranking finds the customers a contact actually moves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from kundenwert.models import forest
from kundenwert.models.tabular import BoostedSnapshotModel

CONTACT_COLUMNS = ("channel", "action_id", "treated")
# Where a contact stands in its campaign (``labels.campaign_position``). A suggestion is scored
# as a new contact: the first of its campaign (no contacts before, day 0).
POSITION_COLUMNS = ("campaign_contacts_before", "days_since_campaign_start")
NEW_CONTACT = dict.fromkeys(POSITION_COLUMNS, 0.0)
# customers per compiled pass of ``predict_actions`` (its raw scores: this many x the pairs)
BLOCK_ROWS = 65_536


def actions_with_both_arms(action_id, treated) -> np.ndarray:
    """The actions (as text, sorted) among rows ``action_id``/``treated`` that hold treated and
    control rows: the only ones whose uplift can be learnt or measured."""
    arms = pd.crosstab(
        np.asarray(pd.Series(action_id).astype("str"), dtype=object), np.asarray(treated, dtype=bool)
    )
    both = arms.index[(arms.reindex(columns=[False, True], fill_value=0) > 0).all(axis=1)]
    return np.sort(np.asarray(both, dtype=object))


def response_rows(snapshot: pd.DataFrame, contacts: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Features (the contact's channel, action, arm and position in its campaign plus the
    customer's snapshot) and labels of ``contacts`` as ``response_labels`` gives them; contacts of
    customers not in the snapshot are dropped. Indexed by ``(customer_id, contact_id)`` when contact ids are given."""
    known = contacts[contacts["customer_id"].isin(snapshot.index)]
    X = snapshot.reindex(known["customer_id"].to_numpy())
    X = X.assign(
        channel=known["channel"].to_numpy(),
        action_id=known["action_id"].astype("str").to_numpy(),
        treated=known["treated"].to_numpy(dtype=bool),
        **{c: known[c].to_numpy(dtype="float64") for c in POSITION_COLUMNS if c in known.columns},
    )
    if "contact_id" in known.columns:
        X.index = pd.MultiIndex.from_arrays(
            [known["customer_id"].to_numpy(), known["contact_id"].to_numpy()],
            names=["customer_id", "contact_id"],
        )
    return X, pd.Series(known["responded"].to_numpy(dtype="float64"), index=X.index, name="responded")


class ResponseModel(BoostedSnapshotModel):
    """Response propensity per contact (channel, action, arm) and the uplift of contacting."""

    def __init__(
        self,
        calibration: str = "auto",
        max_iter: int = 300,
        learning_rate: float = 0.08,
        max_depth: int | None = 5,
        min_samples_leaf: int = 40,
        exclude: tuple[str, ...] = (),
        random_state: int = 0,
    ) -> None:
        self.calibration = calibration
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.exclude = exclude
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, y) -> ResponseModel:
        self._validate_params()
        missing = [c for c in CONTACT_COLUMNS if c not in X.columns]
        if missing:
            raise ValueError(f"response rows need column(s) {', '.join(missing)} (see response_rows)")
        self.model_ = self._classifier().fit(X, y)
        # Uplift is learnt only where both arms were seen: the actions with control rows.
        self.uplift_actions_ = actions_with_both_arms(X["action_id"], X["treated"])
        self.feature_names_in_ = self.model_.feature_names_in_
        self.n_features_in_ = self.model_.n_features_in_
        # The booster and encoder, for reasons (explain) like every tree model.
        self.booster_, self.encoder_ = self.model_.booster_, self.model_.encoder_
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(X)

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """``response`` (for the row's own arm), ``response_if_contacted``, ``response_if_not`` and
        ``uplift`` (their difference), indexed like X."""
        check_is_fitted(self, "model_")
        Z = self.encoder_.transform(X)
        arm = list(self.encoder_.feature_names_in_).index("treated")
        own = self.model_.proba_encoded(Z)[:, 1]
        Z[:, arm] = 1.0
        contacted = self.model_.proba_encoded(Z)[:, 1]
        Z[:, arm] = 0.0
        not_contacted = self.model_.proba_encoded(Z)[:, 1]
        not_contacted[~self.has_uplift(X["action_id"])] = np.nan
        return pd.DataFrame(
            {
                "response": own,
                "response_if_contacted": contacted,
                "response_if_not": not_contacted,
                "uplift": contacted - not_contacted,
            },
            index=X.index,
        )

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_frame(X)["uplift"].to_numpy()

    def calibrate_uplift(self, X: pd.DataFrame, y) -> ResponseModel:
        """Learn what a predicted uplift is worth on held-out contacts ``X``, ``y`` (the test rows
        of the training run): ``uplift_calibration_`` (see ``uplift_calibration``), which
        ``uplift_interval`` reads. Without measurable rows the model has no interval (None)."""
        check_is_fitted(self, "model_")
        self.uplift_calibration_ = uplift_calibration(y, X, self.predict_frame(X)["uplift"].to_numpy())
        return self

    def uplift_interval(self, uplift) -> tuple[np.ndarray, np.ndarray] | None:
        """The 95% interval of the uplift observed on the held-out contacts whose predicted
        uplift fell in the same bin as each of ``uplift`` (NaN where ``uplift`` is NaN); None when
        the model was not calibrated or its test rows could not measure an uplift."""
        table = getattr(self, "uplift_calibration_", None)
        if table is None:
            return None
        return interval_of(table, uplift)

    def has_uplift(self, action_id) -> np.ndarray:
        """Whether the uplift of each action of ``action_id`` was learnt (the training rows held
        control rows for it); elsewhere uplift and the response without contact are unknown
        (NaN), not zero. Models fitted before this was recorded: every action."""
        actions = np.asarray(pd.Series(action_id).astype("str"), dtype=object)
        known = getattr(self, "uplift_actions_", None)
        return np.ones(len(actions), dtype=bool) if known is None else np.isin(actions, known)

    def predict_actions(
        self,
        X: pd.DataFrame,
        pairs: list[tuple[str, str]],
        uplift: bool = True,
        rows: dict[tuple[str, str], np.ndarray] | None = None,
    ) -> pd.DataFrame:
        """``response`` (if contacted) and ``uplift`` of every (action_id, channel) in ``pairs`` for
        every customer of a snapshot ``X`` (indexed by customer id): the numbers of
        ``predict_frame`` on one treated contact row per customer and pair, with ``X`` encoded and
        binned once and only the channel, action and arm columns set per pair. ``uplift=False``
        skips the second (not contacted) pass. Each contact is a new one, the first of its
        campaign (``NEW_CONTACT``). ``rows``: per pair, a mask of the customers to
        score for it (the others are left out of the result; default: everyone). Long frame
        indexed by (customer_id, action_id, channel)."""
        check_is_fitted(self, "model_")
        if not pairs:
            raise ValueError("name at least one (action_id, channel) pair")
        names = list(self.encoder_.feature_names_in_)
        action0, channel0 = pairs[0]
        new = {c: v for c, v in NEW_CONTACT.items() if c in names}
        Z = self.encoder_.transform(X.assign(channel=channel0, action_id=action0, treated=True, **new))
        if forest.use_for(self.model_.booster_, len(Z)):
            return self._actions_compiled(Z, np.asarray(X.index), pairs, uplift, rows)
        Zb = self.model_.bin(Z)
        varying = [names.index(c) for c in ("action_id", "channel", "treated") if c in names]
        # the bins of the varying columns for each (action, channel, arm): bin one small row each
        arms = (1.0, 0.0) if uplift else (1.0,)
        probes = np.repeat(Z[:1], len(pairs) * len(arms), axis=0)
        for i, ((action, channel), arm) in enumerate((p, a) for p in pairs for a in arms):
            for column, value in (("action_id", action), ("channel", channel), ("treated", arm)):
                if column in names:
                    probes[i, names.index(column)] = self._code(column, value)
        bins = self.model_.bin(probes)[:, varying]
        response, lift, who = [], [], []
        ids = np.asarray(X.index)
        for i, pair in enumerate(pairs):
            mask = None if rows is None else rows.get(pair)
            part = Zb if mask is None else Zb[mask]
            who.append(ids if mask is None else ids[mask])
            if not len(part):
                response.append(np.empty(0))
                lift.append(np.empty(0))
                continue
            part[:, varying] = bins[i * len(arms)]
            contacted = self.model_.proba_binned(part)[:, 1]
            response.append(contacted)
            if uplift and self.has_uplift([pair[0]])[0]:
                part[:, varying] = bins[i * len(arms) + 1]
                lift.append(contacted - self.model_.proba_binned(part)[:, 1])
            elif uplift:
                lift.append(np.full(len(part), np.nan))  # no control rows for this action
        return _pair_frame(ids, pairs, who, response, lift if uplift else None)

    def _actions_compiled(
        self,
        Z: np.ndarray,
        ids: np.ndarray,
        pairs: list[tuple[str, str]],
        uplift: bool,
        rows: dict[tuple[str, str], np.ndarray] | None,
    ) -> pd.DataFrame:
        """``predict_actions`` in one compiled pass per block of customers (``forest.pair_flat``):
        every (action, channel, arm) scored at once, each tree walked once per customer and
        value of the contact columns it splits on (not once per pair), only for the customers
        some pair is asked for. The same numbers up to float rounding (the trees are summed in
        groups: within 1e-12 of the plain path, a test holds them)."""
        names = list(self.encoder_.feature_names_in_)
        columns = [c for c in ("action_id", "channel", "treated") if c in names]
        combos: list[tuple[int, float]] = []  # (pair, arm) of each output of the pass
        for i, (action, _) in enumerate(pairs):
            combos.append((i, 1.0))
            if uplift and self.has_uplift([action])[0]:
                combos.append((i, 0.0))
        setting = [{"action_id": pairs[i][0], "channel": pairs[i][1], "treated": arm} for i, arm in combos]
        values = np.array([[self._code(c, s[c]) for c in columns] for s in setting], dtype="float64").reshape(
            len(combos), len(columns)
        )
        flat = forest.pair_flat(self.model_.booster_, [names.index(c) for c in columns], values)
        output = {key: o for o, key in enumerate(combos)}
        masks = [None if rows is None else rows.get(pair) for pair in pairs]
        given = [m for m in masks if m is not None]
        at = np.arange(len(Z)) if len(given) < len(masks) else np.flatnonzero(np.logical_or.reduce(given))
        response: list[list[np.ndarray]] = [[] for _ in pairs]
        lift: list[list[np.ndarray]] = [[] for _ in pairs]
        p = self.model_.probability_of_raw
        for start in range(0, len(at), BLOCK_ROWS):
            part = at[start : start + BLOCK_ROWS]
            raw = forest.predict(flat, Z[part])
            for i, mask in enumerate(masks):
                keep = slice(None) if mask is None else mask[part]
                contacted = p(raw[keep, output[(i, 1.0)]])
                response[i].append(contacted)
                if (i, 0.0) in output:
                    lift[i].append(contacted - p(raw[keep, output[(i, 0.0)]]))
                elif uplift:
                    lift[i].append(np.full(len(contacted), np.nan))  # no control rows for this action
        who = [ids[at] if m is None else ids[m] for m in masks]
        joined = [np.concatenate(r) if r else np.empty(0) for r in response]
        lifted = [np.concatenate(u) if u else np.empty(0) for u in lift] if uplift else None
        return _pair_frame(ids, pairs, who, joined, lifted)

    def _code(self, column: str, value) -> float:
        """The encoded value of a contact column (unknown text: missing, as the encoder does)."""
        if column == "treated":
            return float(value)
        cats = self.encoder_.categories_.get(column)
        if cats is None:
            return np.nan
        at = np.searchsorted(cats, value)
        return float(at) if at < len(cats) and cats[at] == value else np.nan


def _pair_frame(ids, pairs, who, response, lift) -> pd.DataFrame:
    """``predict_actions``' long frame: per pair its customers ``who`` with their ``response``
    (and ``lift``, the uplift, unless None), pair after pair."""
    sizes = [len(w) for w in who]
    index = pd.MultiIndex.from_arrays(
        [
            np.concatenate(who) if who else ids[:0],
            np.repeat([a for a, _ in pairs], sizes),
            np.repeat([c for _, c in pairs], sizes),
        ],
        names=["customer_id", "action_id", "channel"],
    )
    out = {"response": np.concatenate(response)}
    if lift is not None:
        out["uplift"] = np.concatenate(lift)
    return pd.DataFrame(out, index=index)


def qini_curve(y, treated, score) -> tuple[np.ndarray, np.ndarray]:
    """Incremental responses when targeting the top-scored rows: for the top n rows, treated
    responders minus control responders scaled to the treated count (Radcliffe's Qini curve).

    Rows with the same score are one step: the curve has a point only where the score changes
    (as scikit-uplift and causalml draw it), and is linear within a group of tied rows, which is
    the average over every order of the ties. So no point and no area depends on row order."""
    y, t, s = (np.asarray(a, dtype="float64") for a in (y, treated, score))
    order = np.argsort(-s, kind="stable")
    y, t, s = y[order], t[order], s[order]
    n_t, n_c = np.cumsum(t), np.cumsum(1 - t)
    r_t, r_c = np.cumsum(y * t), np.cumsum(y * (1 - t))
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1] if len(s) else np.array([], dtype=int)
    n_t, n_c, r_t, r_c = n_t[ends], n_c[ends], r_t[ends], r_c[ends]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(n_c > 0, r_t - r_c * n_t / n_c, r_t)
    return np.r_[0.0, (ends + 1).astype("float64")], np.r_[0.0, q]


def uplift_rows(X: pd.DataFrame, uplift) -> np.ndarray:
    """The rows of test contacts ``X`` on which an uplift ranking can be measured: rows of an
    action whose test rows hold both arms (treated and control), with a predicted uplift."""
    action = X["action_id"].astype("str").to_numpy(dtype=object)
    both = actions_with_both_arms(action, X["treated"].to_numpy(dtype=bool))
    return np.isin(action, both) & np.isfinite(np.asarray(uplift, dtype="float64"))


# A bin of the uplift calibration needs this many control and treated test contacts.
MIN_ARM_ROWS = 30


def uplift_calibration(y, X: pd.DataFrame, uplift, bins: int = 5, alpha: float = 0.05) -> dict | None:
    """What predicted uplifts are worth on held-out contacts: the measurable rows (``uplift_rows``)
    cut into up to ``bins`` quantile bins of the predicted uplift (fewer when a bin would hold
    fewer than ``MIN_ARM_ROWS`` control or treated rows), and per bin the observed uplift (the
    treated minus the control response rate) with Newcombe's ``1 - alpha`` interval.

    ``edges``: the inner bin edges (a prediction below ``edges[0]`` is in bin 0); ``observed``,
    ``low``, ``high``, ``treated``, ``control``, ``predicted`` (mean prediction): per bin. None
    when no bin can be formed. Plain lists and floats: the model is saved with skops."""
    from kundenwert.models.lift import diff_proportions

    rows = uplift_rows(X, uplift)
    u = np.asarray(uplift, dtype="float64")[rows]
    t = X["treated"].to_numpy(dtype=bool)[rows]
    r = np.asarray(y, dtype="float64")[rows]
    for k in range(bins, 0, -1):
        edges = np.unique(np.quantile(u, np.linspace(0, 1, k + 1)[1:-1])) if len(u) else np.zeros(0)
        at = np.searchsorted(edges, u, side="right")
        n1 = np.bincount(at[t], minlength=len(edges) + 1)
        n0 = np.bincount(at[~t], minlength=len(edges) + 1)
        if len(u) and n1.min() >= MIN_ARM_ROWS and n0.min() >= MIN_ARM_ROWS:
            x1 = np.bincount(at[t], weights=r[t], minlength=len(edges) + 1)
            x0 = np.bincount(at[~t], weights=r[~t], minlength=len(edges) + 1)
            lift = diff_proportions(x1, n1, x0, n0, alpha)
            predicted = np.bincount(at, weights=u, minlength=len(edges) + 1) / np.maximum(n1 + n0, 1)
            return {
                "edges": [float(e) for e in edges],
                "observed": [float(v) for v in np.atleast_1d(lift.estimate)],
                "low": [float(v) for v in np.atleast_1d(lift.low)],
                "high": [float(v) for v in np.atleast_1d(lift.high)],
                "treated": [int(v) for v in n1],
                "control": [int(v) for v in n0],
                "predicted": [float(v) for v in predicted],
                "alpha": alpha,
            }
    return None


def interval_of(table: dict, uplift) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of ``uplift_calibration``'s bin of each predicted ``uplift`` (NaN stays NaN)."""
    u = np.asarray(uplift, dtype="float64")
    at = np.searchsorted(np.asarray(table["edges"], dtype="float64"), u, side="right")
    low, high = np.asarray(table["low"])[at], np.asarray(table["high"])[at]
    nan = np.isnan(u)
    return np.where(nan, np.nan, low), np.where(nan, np.nan, high)


def measurable_qini(y, X: pd.DataFrame, uplift) -> dict[str, float | None]:
    """``qini`` of an uplift ranking on the test rows that can measure it (``uplift_rows``);
    ``None`` for both (not measurable, never a number) when no action has control rows (and the
    normalised one when nobody responded: there is no perfect ranking to compare with), and ``qini_rows``: the share of test rows it was measured on."""
    rows = uplift_rows(X, uplift)
    if not rows.any():
        return {"qini": None, "qini_normalized": None, "qini_rows": 0.0}
    y_, u = np.asarray(y, dtype="float64")[rows], np.asarray(uplift, dtype="float64")[rows]
    measured: dict[str, float | None] = {**qini(y_, X["treated"].to_numpy()[rows], u)}
    normalized = measured["qini_normalized"]
    if normalized is None or not np.isfinite(normalized):  # nobody responded: no perfect ranking
        measured["qini_normalized"] = None
    return {**measured, "qini_rows": float(rows.mean())}


def qini(y, treated, score) -> dict[str, float]:
    """``qini``: the area between the Qini curve and the random-targeting line divided by the
    number of rows (incremental responses, averaged over how many are targeted);
    ``qini_normalized``: the same over the perfect ranking's (1 = perfect, 0 = random)."""

    def area(s) -> float:
        x, q = qini_curve(y, treated, s)
        return float(np.trapezoid(q, x) - q[-1] * x[-1] / 2) / x[-1]

    y_ = np.asarray(y, dtype="float64")
    t_ = np.asarray(treated, dtype="float64")
    perfect = area(y_ * t_ - y_ * (1 - t_))  # treated responders first, control responders last
    model = area(score)
    return {"qini": model, "qini_normalized": model / perfect if perfect > 0 else float("nan")}
