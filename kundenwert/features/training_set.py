"""Training sets: snapshots and labels stacked over rolling cutoffs, split in time.

The split never lets a label window of the test set overlap a label window of the training or
validation set: a cutoff ``t`` labels ``[t, t + horizon)``, so every training cutoff satisfies
``t + horizon <= `` the first validation cutoff, and every validation cutoff ``t + horizon <=`` the
first test cutoff. Cutoffs that would break this are dropped, not silently kept.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from kundenwert.features.labels import LabelConfig, labels_at
from kundenwert.features.snapshot import SnapshotConfig, SnapshotSpec, prepare, snapshot, spec_for

DAY = pd.Timedelta(days=1)


class SplitConfig(BaseModel):
    """Rolling cutoffs, how many of the latest go to validation and test, and when the test rows
    are customers set apart instead (``method``).

    ``time`` tests on the latest cutoffs (label windows never overlap the training ones);
    ``customer`` tests on a ``test_share`` of the customers (a stable hash), at every cutoff;
    ``auto`` splits in time unless that leaves no training window or a test set too small to
    judge (fewer than ``min_test_rows`` rows or ``min_test_positives`` positives), and then by
    customer, saying why in the report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step_days: int = Field(30, gt=0, description="days between cutoffs")
    min_history_days: int = Field(180, ge=0, description="days of data before the first cutoff")
    validation_cutoffs: int = Field(1, ge=0)
    test_cutoffs: int = Field(1, ge=1)
    method: Literal["auto", "time", "customer"] = Field("auto", description="how test rows are set apart")
    test_share: float = Field(0.25, gt=0, lt=1, description="customers tested on, when split by customer")
    min_test_rows: int = Field(1000, ge=0, description="fewer test rows are too few to judge")
    min_test_positives: int = Field(100, ge=0, description="fewer positive test labels are too few to judge")


def customer_test_rows(index: pd.Index, share: float, seed: int = 0) -> np.ndarray:
    """Rows of the customers set apart for testing: a stable hash of (seed, customer id) below
    ``share``, so a customer's rows are all on one side, at every cutoff and in every run."""
    ids = index.get_level_values("customer_id") if "customer_id" in (index.names or []) else index
    h = pd.util.hash_array(np.asarray(ids, dtype=object), hash_key=f"split{seed:012d}"[:16])
    return (h % np.uint64(1_000_000)) < np.uint64(round(share * 1_000_000))


def rolling_cutoffs(
    first_day: pd.Timestamp, last_day: pd.Timestamp, horizon_days: int, config: SplitConfig
) -> list[pd.Timestamp]:
    """Cutoffs every ``step_days``, the latest one such that its label window ends by ``last_day``."""
    first_day, last_day = pd.Timestamp(first_day), pd.Timestamp(last_day)
    latest = (last_day - horizon_days * DAY).floor("D")
    earliest = (first_day + config.min_history_days * DAY).ceil("D")
    if latest < earliest:
        raise ValueError(
            f"the data ({first_day:%Y-%m-%d} to {last_day:%Y-%m-%d}) is too short for {config.min_history_days} "
            f"days of history plus a {horizon_days}-day label window"
        )
    out = []
    t = latest
    while t >= earliest:
        out.append(t)
        t -= config.step_days * DAY
    return sorted(out)


def time_split(
    cutoffs: list[pd.Timestamp], horizon_days: int, config: SplitConfig
) -> dict[str, list[pd.Timestamp]]:
    """train / validation / test cutoffs whose label windows do not overlap across the parts."""
    cutoffs = sorted(cutoffs)
    if len(cutoffs) < config.test_cutoffs + config.validation_cutoffs + 1:
        raise ValueError(
            f"{len(cutoffs)} cutoffs are too few for {config.test_cutoffs} test, "
            f"{config.validation_cutoffs} validation and at least one training cutoff"
        )
    h = horizon_days * DAY
    test = cutoffs[-config.test_cutoffs :]
    rest = [t for t in cutoffs if t + h <= test[0]]
    valid = rest[-config.validation_cutoffs :] if config.validation_cutoffs else []
    bound = valid[0] if valid else test[0]
    train = [t for t in rest if t + h <= bound and t not in valid]
    if not train:
        raise ValueError(
            "no training cutoff is left once label windows may not overlap; add history or shorten the horizon"
        )
    return {"train": train, "validation": valid, "test": test}


def build_training_set(
    frames: dict[str, pd.DataFrame],
    cutoffs: list[pd.Timestamp],
    snapshot_config: SnapshotConfig | None = None,
    label_config: LabelConfig | None = None,
    *,
    shards: int = 1,
    jobs: int = 1,
    spec: SnapshotSpec | None = None,
) -> pd.DataFrame:
    """Features and labels per (cutoff, customer_id), for every customer known at each cutoff.

    ``spec`` (default ``spec_for(frames, snapshot_config)``): give the spec of the whole store when
    ``frames`` hold only some customers, so that their features are the ones they have there."""
    spec = spec or spec_for(frames, snapshot_config)
    prepared = prepare(frames, spec)  # codes and sorting once for every cutoff
    parts = []
    for t in sorted(cutoffs):
        t = pd.Timestamp(t)
        t = t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
        x = snapshot(prepared, t, spec=spec, shards=shards, jobs=jobs)
        y = labels_at(frames, t, label_config)
        both = x.join(y.add_prefix("label_"), how="left")
        both.insert(0, "cutoff", t)
        parts.append(both.reset_index())
    return pd.concat(parts, ignore_index=True).set_index(["cutoff", "customer_id"])
