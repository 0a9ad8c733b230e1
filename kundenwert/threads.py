"""The thread budget: how many threads kundenwert's fits and predictions use in all.

scikit-learn's boosters fit and predict with OpenMP threads, one per core by default, and those
threads spin while they wait for each other: next to a second busy process every wait burns a
core's time slice, and two jobs side by side ran 6x slower than either alone (shared/benchmarks.md,
"A busy neighbour"). So every fit and prediction runs under an explicit budget
(``KUNDENWERT_THREADS``, default: the cores this process may use), set with threadpoolctl
(``limited``), and work that is independent (the boosters of the calibration folds, the affinity
categories) is split over worker processes with one thread each (``run_parallel``) instead of
being left to OpenMP threads: a worker that waits for the CPU only loses its own share.

Shared by every layer (like ``settings``): it imports no kundenwert layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from kundenwert.settings import get_settings


def cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def budget() -> int:
    """Threads kundenwert uses in all for its computations: ``KUNDENWERT_THREADS``, else the cores."""
    configured = get_settings().threads
    return configured if configured else cores()


@contextmanager
def limited(threads: int | None = None) -> Iterator[int]:
    """A block whose OpenMP and BLAS thread pools use at most ``threads`` (default: ``budget()``)
    threads; yields the limit. scikit-learn's OpenMP runtime is loaded first: threadpoolctl can
    only limit the libraries loaded when the block starts."""
    import sklearn.utils._openmp_helpers  # noqa: F401  loads libgomp, so that the limit reaches it
    from threadpoolctl import threadpool_limits

    n = threads or budget()
    with threadpool_limits(limits=n):
        yield n


def _one_job(fn: Callable[..., Any], threads: int, args: tuple) -> Any:
    """One job in a worker process, under its share of the budget (which is also the budget of
    anything the job runs in parallel itself: no worker starts workers of its own)."""
    os.environ["KUNDENWERT_THREADS"] = str(threads)
    with limited(threads):
        return fn(*args)


def run_parallel(fn: Callable[..., Any], jobs: Sequence[tuple], threads: int | None = None) -> list:
    """``[fn(*args) for args in jobs]``, the jobs spread over worker processes with one thread each
    (``threads``, default ``budget()``, workers at most; a worker gets the threads left over when
    there are fewer jobs than threads). With a budget of one thread, or one job, in this process
    under the budget. ``fn`` and the arguments must be picklable (a module-level function); large
    numpy arrays reach the workers as shared memory maps, once per call however many jobs hold them.
    """
    n = threads or budget()
    if n <= 1 or len(jobs) <= 1:
        with limited(n):
            return [fn(*args) for args in jobs]
    from joblib import Parallel, delayed

    workers = min(n, len(jobs))
    each = max(1, n // workers)
    return list(
        Parallel(n_jobs=workers, backend="loky", max_nbytes="1M")(
            delayed(_one_job)(fn, each, args) for args in jobs
        )
    )
