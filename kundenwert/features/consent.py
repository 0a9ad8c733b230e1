"""Consent state per customer and channel, as the contract defines it.

- The latest record per (customer_id, channel) wins.
- Email counts as consent only with double opt-in.
- A latest ``*`` record with ``granted`` false is an objection to all direct marketing and profiling
  (GDPR Art. 21): no channel is permitted, whatever its own records say.
- No record means no consent.
"""

from __future__ import annotations

import pandas as pd

from kundenwert.features.contract import ALL_CHANNELS, MARKETING_CHANNELS


def consent_state(
    consents: pd.DataFrame,
    at: pd.Timestamp | str,
    *,
    channels: tuple[str, ...] = MARKETING_CHANNELS,
    inclusive: bool = True,
) -> pd.DataFrame:
    """Permitted channels at ``at`` for every customer that has any consent record.

    Returns a frame indexed by ``customer_id`` with one boolean column per channel and
    ``objection``. With ``inclusive=False`` only records strictly before ``at`` count (point in time
    correct features at a cutoff).
    """
    t = pd.Timestamp(at)
    t = t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
    rec = consents[consents["recorded_at"] <= t] if inclusive else consents[consents["recorded_at"] < t]
    latest = rec.sort_values("recorded_at", kind="stable").drop_duplicates(
        ["customer_id", "channel"], keep="last"
    )
    granted = latest["granted"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    doi = latest["double_opt_in"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    is_email = (latest["channel"] == "email").to_numpy()
    valid = granted & (~is_email | doi)
    latest = latest.assign(valid=valid)
    wide = latest.pivot(index="customer_id", columns="channel", values="valid")
    star = latest[latest["channel"] == ALL_CHANNELS]
    # A "*" record only ever withdraws: a later "*" grant lifts the objection but grants nothing.
    objecting = star.loc[~star["granted"].astype("boolean").fillna(False).to_numpy(dtype=bool), "customer_id"]
    objection = wide.index.isin(objecting)
    out = pd.DataFrame(index=wide.index)
    for ch in channels:
        col = wide[ch].astype("boolean").fillna(False).to_numpy(dtype=bool) if ch in wide.columns else False
        out[ch] = col & ~objection
    out["objection"] = objection
    out.index.name = "customer_id"
    return out
