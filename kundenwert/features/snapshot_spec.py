"""What a snapshot computes: its configuration and the column sets fixed for every shard."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from kundenwert.features.contract import MARKETING_CHANNELS, TABLES

DAY = pd.Timedelta(days=1)
RESPONSES = ("responded", "converted")
Frames = dict[str, pd.DataFrame]


class SnapshotConfig(BaseModel):
    """How snapshots are computed (validated; part of every experiment configuration)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    unit: Literal["D", "W"] = Field("D", description="time unit of recency and T: days or weeks (7 days)")
    windows: tuple[int, ...] = Field((30, 90, 180, 365), description="purchase windows in days")
    contact_windows: tuple[int, ...] = Field((90, 365), description="contact windows in days")
    activity_window: int = Field(180, gt=0, description="days: active = purchased within it")
    response_window: int = Field(14, ge=0, description="days after a contact in which a response counts")
    response_prior: float = Field(0.03, gt=0, lt=1, description="prior response rate for smoothing")
    response_prior_weight: float = Field(5.0, gt=0, description="prior strength in contacts")


@dataclass(frozen=True)
class SnapshotSpec:
    """Everything a shard needs besides its rows: config and the column sets fixed for all shards."""

    config: SnapshotConfig = field(default_factory=SnapshotConfig)
    categories: tuple[str, ...] = ()
    channels: tuple[str, ...] = MARKETING_CHANNELS
    attributes: tuple[str, ...] = ()


def _utc(t: pd.Timestamp | str) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")


def spec_for(frames: Frames, config: SnapshotConfig | None = None) -> SnapshotSpec:
    """Column sets from the whole data, so that every shard produces the same columns."""
    config = config or SnapshotConfig()
    cats = tuple(sorted(frames["purchases"]["category"].dropna().unique())) if "purchases" in frames else ()
    contacts = frames.get("contacts")
    chans = set(MARKETING_CHANNELS)
    if contacts is not None and len(contacts):
        chans |= set(contacts.loc[contacts["direction"] == "outbound", "channel"].dropna().unique())
    contract_cols = set(TABLES["customers"].column_names)
    attrs = tuple(c for c in frames["customers"].columns if c not in contract_cols)
    return SnapshotSpec(config=config, categories=cats, channels=tuple(sorted(chans)), attributes=attrs)
