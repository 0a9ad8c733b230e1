"""The thread budget: every fit runs under the configured number of threads (KUNDENWERT_THREADS),
independent fits in worker processes of one thread each; the boosters are the same either way."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_info

from kundenwert.errors import ConfigurationError
from kundenwert.models.affinity import AffinityModel
from kundenwert.models.tabular import CalibratedGBMClassifier, fit_boosters
from kundenwert.settings import get_settings
from kundenwert.threads import budget, cores, limited, run_parallel


def openmp_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "openmp"]


class Probe:
    """A booster stand-in that records, while it is fitted, the process and its OpenMP threads."""

    def fit(self, Z, y):
        self.pid_, self.threads_, self.rows_ = os.getpid(), openmp_threads(), len(Z)
        return self


def _record(_: int) -> tuple[int, list[int]]:
    return os.getpid(), openmp_threads()


def test_budget_is_the_setting_or_the_cores(monkeypatch):
    monkeypatch.delenv("KUNDENWERT_THREADS", raising=False)
    assert budget() == cores() >= 1
    monkeypatch.setenv("KUNDENWERT_THREADS", "3")
    assert budget() == 3
    monkeypatch.setenv("KUNDENWERT_THREADS", "0")
    with pytest.raises(ConfigurationError, match="KUNDENWERT_THREADS"):
        get_settings()


def test_limited_sets_openmp_threads_for_the_block():
    with limited(1) as n:
        assert n == 1
        assert openmp_threads() and set(openmp_threads()) == {1}


def test_one_thread_budget_fits_in_this_process_under_one_thread(monkeypatch):
    monkeypatch.setenv("KUNDENWERT_THREADS", "1")
    Z, y = np.zeros((10, 2)), np.zeros(10)
    fitted = fit_boosters([(Probe(), Z, y, None), (Probe(), Z, y, np.arange(10) < 4)])
    assert [p.pid_ for p in fitted] == [os.getpid()] * 2
    assert all(set(p.threads_) == {1} for p in fitted)
    assert [p.rows_ for p in fitted] == [10, 4]


def test_independent_fits_run_in_workers_of_one_thread(monkeypatch):
    monkeypatch.setenv("KUNDENWERT_THREADS", "2")
    Z, y = np.zeros((10, 2)), np.zeros(10)
    fitted = fit_boosters([(Probe(), Z, y, None) for _ in range(3)])
    assert all(p.pid_ != os.getpid() for p in fitted)
    assert all(set(p.threads_) == {1} for p in fitted)
    # fewer jobs than threads: each worker gets its share of the budget
    seen = run_parallel(_record, [(0,), (1,)], threads=4)
    assert all(pid != os.getpid() and set(threads) == {2} for pid, threads in seen)


def _rows(n: int = 1200, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    index = pd.MultiIndex.from_arrays(
        [np.repeat(pd.Timestamp("2024-01-01"), n), [f"c{i}" for i in range(n)]],
        names=["cutoff", "customer_id"],
    )
    X = pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(size=n), "g": rng.choice(["x", "y"], size=n)}, index=index
    )
    logit = X["a"] - 0.5 * X["b"] + (X["g"] == "x")
    Y = pd.DataFrame(
        {f"affinity_{k}": (logit + rng.normal(size=n) * (1 + k) > 0).astype(float) for k in range(3)},
        index=index,
    )
    return X, Y


def test_a_model_fit_runs_under_the_configured_limit(monkeypatch):
    """Observed from inside scikit-learn's own fit: the booster of a kundenwert model sees the
    budget's thread count (one thread: in this process)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    seen: list[list[int]] = []
    fit = HistGradientBoostingClassifier.fit

    def observed(self, *args, **kwargs):
        seen.append(openmp_threads())
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(HistGradientBoostingClassifier, "fit", observed)
    monkeypatch.setenv("KUNDENWERT_THREADS", "1")
    X, Y = _rows()
    CalibratedGBMClassifier(max_iter=20).fit(X, Y.iloc[:, 0])
    assert len(seen) == 4 and all(set(s) == {1} for s in seen)  # the final booster and 3 folds


def test_parallel_fits_give_the_same_models(monkeypatch):
    X, Y = _rows()
    probabilities = []
    for threads in ("1", "2"):
        monkeypatch.setenv("KUNDENWERT_THREADS", threads)
        clf = CalibratedGBMClassifier(max_iter=30).fit(X, Y.iloc[:, 0])
        aff = AffinityModel(max_iter=30, calibration="auto").fit(X, Y)
        probabilities.append((clf.predict_proba(X)[:, 1], aff.predict_frame(X).to_numpy()))
    (c1, a1), (c2, a2) = probabilities
    np.testing.assert_allclose(c1, c2, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a1, a2, rtol=0, atol=1e-9)
