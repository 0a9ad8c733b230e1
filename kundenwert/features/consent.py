"""Consent state per customer and channel, as the contract defines it: the one consent rule.

- The latest record per (customer_id, channel) wins (records at the same instant: the later row).
- Email counts as consent only with double opt-in.
- A latest ``*`` record with ``granted`` false is an objection to all direct marketing and profiling
  (GDPR Art. 21): no channel is permitted, whatever its own records say. A later ``*`` grant lifts
  the objection but grants nothing by itself.
- No record means no consent.

``consent_matrix`` is that rule, on records as arrays; everything that needs consent calls it:
``consent_state`` (a frame of records at an instant, as the service's batch path reads it) and
the snapshot's consent features. ``consent_of_records`` beside it is the same rule in plain
Python for one customer's handful of rows (the service's one-customer path), built from the same
two predicates (``grants``, ``objects``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from kundenwert.features.contract import ALL_CHANNELS, MARKETING_CHANNELS

EMAIL = "email"


def grants(not_email, granted, double_opt_in):
    """Whether a channel's latest record permits the channel: granted and, for email, with
    double opt-in. Elementwise on bool arrays and on plain bools alike (``&``, ``|``)."""
    return granted & (not_email | double_opt_in)


def objects(granted):
    """Whether a latest ``*`` record is an objection: it does not grant. Elementwise on bool
    arrays and on plain bools alike."""
    return granted ^ True


def consent_matrix(
    customer: np.ndarray,
    channel: np.ndarray,
    t: np.ndarray,
    granted: np.ndarray,
    double_opt_in: np.ndarray,
    *,
    n: int,
    channels: tuple[str, ...],
    presorted: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Permitted channels and objection of ``n`` customers from their consent records.

    Parameters
    ----------
    customer
        Row of each record's customer, ``0 .. n-1``.
    channel
        Each record's channel as its position in ``channels``; ``len(channels)`` for ``*``.
        Records of other channels must be left out by the caller.
    t
        When each record was made (any sortable numbers); records after the instant asked
        about must be left out by the caller.
    granted, double_opt_in
        Flags of each record, missing already read as false.
    n, channels
        The customers and channels of the answer.
    presorted
        Records are already sorted by (customer, channel, time), ties in input order.

    Returns
    -------
    (permitted, objection)
        An ``n x len(channels)`` bool array and an ``n`` bool array.
    """
    nch = len(channels)
    if not presorted:
        order = np.lexsort((t, channel, customer))  # stable: same instant, the later row last
        customer, channel = customer[order], channel[order]
        granted, double_opt_in = granted[order], double_opt_in[order]
    latest = np.ones(len(customer), dtype=bool)  # the last record of each (customer, channel)
    latest[:-1] = (customer[1:] != customer[:-1]) | (channel[1:] != channel[:-1])
    email = channels.index(EMAIL) if EMAIL in channels else -1
    valid = grants(channel != email, granted, double_opt_in)
    state = np.zeros((n, nch + 1), dtype=bool)  # last column: "*" records (never grant a channel)
    state[customer[latest], channel[latest]] = valid[latest]
    star = latest & (channel == nch)
    objection = np.zeros(n, dtype=bool)
    objection[customer[star]] = objects(granted[star])
    return state[:, :nch] & ~objection[:, None], objection


def consent_of_records(
    records: Iterable[tuple[str, bool, bool]], channels: Sequence[str]
) -> tuple[list[bool], bool]:
    """``consent_matrix`` for one customer in plain Python, for a request's handful of rows
    (numpy's per-call cost would dominate): ``records`` as (channel, granted, double_opt_in) in
    time order, missing flags read as false. The same rule through the same ``grants`` and
    ``objects``; a test holds both equal. Returns (permitted per channel of ``channels``,
    objection)."""
    latest: dict[str, tuple[bool, bool]] = {}
    for channel, granted, double_opt_in in records:
        latest[channel] = (granted, double_opt_in)  # the latest record per channel wins
    star = latest.get(ALL_CHANNELS)
    objection = star is not None and objects(star[0])
    permitted = [
        not objection and (r := latest.get(ch)) is not None and grants(ch != EMAIL, r[0], r[1])
        for ch in channels
    ]
    return permitted, objection


def _flags(values: pd.Series) -> np.ndarray:
    return values.astype("boolean").fillna(False).to_numpy(dtype=bool)


def consent_state(
    consents: pd.DataFrame,
    at: pd.Timestamp | str,
    *,
    channels: tuple[str, ...] = MARKETING_CHANNELS,
    inclusive: bool = True,
) -> pd.DataFrame:
    """Permitted channels at ``at`` for every customer that has any consent record.

    Returns a frame indexed by ``customer_id`` (sorted) with one boolean column per channel and
    ``objection``. With ``inclusive=False`` only records strictly before ``at`` count (point in
    time correct features at a cutoff).
    """
    t = pd.Timestamp(at)
    t = t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
    rec = consents[consents["recorded_at"] <= t] if inclusive else consents[consents["recorded_at"] < t]
    code, ids = pd.factorize(rec["customer_id"], sort=True)
    known = pd.Index([*channels, ALL_CHANNELS])
    channel = known.get_indexer(rec["channel"])
    keep = channel >= 0
    permitted, objection = consent_matrix(
        code[keep],
        channel[keep],
        rec["recorded_at"].array.asi8[keep],
        _flags(rec["granted"])[keep],
        _flags(rec["double_opt_in"])[keep],
        n=len(ids),
        channels=tuple(channels),
    )
    out = pd.DataFrame(permitted, index=pd.Index(ids, name="customer_id"), columns=list(channels))
    out["objection"] = objection
    return out
