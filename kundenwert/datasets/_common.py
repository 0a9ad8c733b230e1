"""Small helpers every step of the sample world shares: random choices, the clock, identifiers."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from kundenwert.errors import ConfigurationError

_SECONDS_PER_DAY = 86_400.0
SALES_CHANNELS = ("web", "store", "field_sales", "phone")
CONTACT_CHANNELS = ("email", "sms", "phone", "mail", "web", "store", "field_sales")
TOPICS = ("information request", "service", "order status", "complaint")


@dataclass(frozen=True)
class Variants:
    """Options of ``kundenwert sample`` that change the world (see the ``sample`` module docstring).

    The default (``Variants()``) is the world as it always was: the same seed gives the same bytes.
    """

    max_calls: int = 1  # phone campaigns: calls per treated customer until they respond
    purchases: bool = True  # False: no purchases, products or offers tables (sold in another system)
    experiment: bool = False  # one randomised e-mail campaign instead of the monthly campaigns
    control: bool = True  # False: no control groups (every selected customer is contacted)
    effect: bool = True  # False: a contact does nothing (the treated respond as the control)
    sure_things: float = 0.0  # share of customers who respond without a contact (loyal buyers)

    def check(self) -> None:
        if self.max_calls < 1:
            raise ConfigurationError(f"--max-calls must be at least 1, not {self.max_calls}")
        if self.experiment and not self.control:
            raise ConfigurationError(
                "--experiment holds out a third as control group; it cannot be combined with --no-control"
            )
        if not 0.0 <= self.sure_things < 1.0:
            raise ConfigurationError(
                f"--sure-things is a share of customers in [0, 1), not {self.sure_things}"
            )
        if self.experiment and self.sure_things:
            raise ConfigurationError(
                "--sure-things changes the monthly campaigns; the --experiment world has none"
            )
        if self.experiment and self.max_calls > 1:
            raise ConfigurationError(
                "--max-calls repeats phone calls; the --experiment world has no phone campaign"
            )

    def as_dict(self) -> dict:
        return asdict(self)


def sure_things(lam: np.ndarray, loyal: np.ndarray, share: float) -> np.ndarray:
    """The ``share`` of customers who respond whether contacted or not (``--sure-things``): among
    the ``loyal`` (buyers who never leave while the world lasts), those with the highest purchase
    rate, so frequent recent buying shows who they are. No random draw: the default world's
    streams stay as they are."""
    n = len(lam)
    k = min(int(round(share * n)), int(loyal.sum()))
    out = np.zeros(n, dtype=bool)
    if k == 0:
        return out
    rate = np.where(loyal, lam, -np.inf)
    out[np.argsort(-rate, kind="stable")[:k]] = True
    return out


def variant_rng(seed: int) -> np.random.Generator:
    """The variants' own random generator: their draws never touch the default world's stream."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _choice(rng: np.random.Generator, options: tuple | list, probs, size: int) -> np.ndarray:
    probs = np.asarray(probs, dtype=float)
    return np.asarray(options, dtype=object)[rng.choice(len(options), size=size, p=probs / probs.sum())]


def _group_starts(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]])


class _Clock:
    """Days since ``start`` to timestamps (whole seconds, UTC)."""

    def __init__(self, start: pd.Timestamp, end: pd.Timestamp) -> None:
        self.start = start
        self.span = (end - start) / pd.Timedelta(days=1)
        self._start_s = np.datetime64(start.tz_localize(None), "s")

    def ts(self, days: np.ndarray) -> np.ndarray:
        """datetime64[s]; NaN days become NaT."""
        days = np.asarray(days, dtype="float64")
        secs = np.round(np.nan_to_num(days, nan=0.0) * _SECONDS_PER_DAY).astype("int64")
        out = self._start_s + secs.astype("timedelta64[s]")
        out[np.isnan(days)] = np.datetime64("NaT")
        return out


def _index_of(values: np.ndarray, options: tuple[str, ...]) -> np.ndarray:
    lookup = {v: i for i, v in enumerate(options)}
    return np.array([lookup.get(v, len(options)) for v in values])


def _ids(prefix: str, n: int, width: int) -> np.ndarray:
    nums = pc.utf8_lpad(pc.cast(pa.array(np.arange(1, n + 1)), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, nums, "").to_numpy(zero_copy_only=False).astype(object)
