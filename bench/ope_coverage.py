"""Coverage study of the off-policy estimates: how often each 95% interval holds the target policy's
true value, per estimator, logging exploration rate and number of logged decisions.

The synthetic contextual bandit of ``tests/models/test_ope.py`` (loaded from there, so the table
and the tests check the same thing): 2,000 customers with 2-5 eligible suggestions, reward = a
lognormal margin on a response; the logging policy is epsilon-greedy on an older response score,
the target policy (never run) ranks by a noisy expected margin, the reward model of DR
over-predicts the response. The true value is exact (expected rewards over the population).
``--support half`` never explores the first half of the customers (the logging policy shows its
greedy choice there with propensity 1): IPS and SNIPS lose their support for part of the target's
choices and DR rests on its imperfect reward model there.

    OMP_NUM_THREADS=1 python bench/ope_coverage.py [--reps 500] [--n-boot 500] [--eps 0.1 0.3 1.0]
        [--n 500 2000] [--interval percentile] [--support full half] [--seed 1]

Columns: coverage (with its Wilson 95% interval over the repetitions), mean bias and interval
width, the mean ESS of the weights.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from _common import table  # noqa: E402

from kundenwert.models.lift import wilson_interval  # noqa: E402
from kundenwert.models.ope import argmax_policy, evaluate_policy  # noqa: E402

_spec = importlib.util.spec_from_file_location("_ope_tests", ROOT / "tests" / "models" / "test_ope.py")
assert _spec is not None and _spec.loader is not None
_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tests)
ESTIMATORS = ("ips", "snips", "dr")


def study(
    eps: float, n: int, support: str, interval: str, reps: int, n_boot: int, seed: int
) -> list[list[object]]:
    b = _tests.bandit(eps)
    if support == "half":
        greedy = argmax_policy(np.where(b.mask, b.logging, np.nan))
        logging = b.logging.copy()
        logging[: b.mask.shape[0] // 2] = greedy[: b.mask.shape[0] // 2]
        b = _tests.Bandit(b.mask, b.mu, b.value, logging, b.target, b.q)
    truth = b.value_of(b.target)
    rng = np.random.default_rng(seed)
    est = np.empty((reps, len(ESTIMATORS), 3))
    ess = np.empty(reps)
    share = np.empty(reps)
    for r in range(reps):
        logged, i = b.draw(n, rng)
        ev = evaluate_policy(logged, b.target[i], b.q[i], n_boot=n_boot, seed=r, interval=interval)
        for j, k in enumerate(ESTIMATORS):
            e = ev.estimates()[k]
            est[r, j] = (e.estimate, e.low, e.high)
        ess[r], share[r] = ev.ess, ev.support
    rows = []
    for j, k in enumerate(ESTIMATORS):
        hit = int(np.count_nonzero((est[:, j, 1] <= truth) & (truth <= est[:, j, 2])))
        lo, hi = wilson_interval(hit, reps)
        rows.append(
            [
                k,
                eps,
                n,
                support,
                interval,
                f"{hit / reps:.3f} ({float(lo):.3f}-{float(hi):.3f})",
                f"{est[:, j, 0].mean() - truth:+.3f}",
                f"{(est[:, j, 2] - est[:, j, 1]).mean():.2f}",
                f"{ess.mean():.0f}",
                f"{share.mean():.2f}",
            ]
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=500)
    ap.add_argument("--n-boot", type=int, default=500)
    ap.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    ap.add_argument("--n", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--interval", nargs="+", default=["percentile"])
    ap.add_argument("--support", nargs="+", default=["full"])
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    header = [
        "estimator",
        "exploration",
        "n",
        "support",
        "interval",
        "coverage (95% CI)",
        "bias",
        "width",
        "ESS",
        "supported",
    ]
    rows: list[list[object]] = []
    t0 = time.perf_counter()
    for support in args.support:
        for eps in args.eps:
            if support == "half" and eps >= 1.0:  # uniform logging has no greedy choice to show instead
                print(f"# skipped half support at exploration {eps}", file=sys.stderr)
                continue
            for n in args.n:
                for interval in args.interval:
                    out = study(eps, n, support, interval, args.reps, args.n_boot, args.seed)
                    rows += out
                    print(
                        f"# done {support} eps={eps} n={n} {interval} ({time.perf_counter() - t0:.0f} s)",
                        file=sys.stderr,
                    )
                    for row in out:
                        print("#", row, file=sys.stderr, flush=True)
    b = _tests.bandit(0.3)
    print(
        f"Coverage of the 95% intervals: {args.reps} repetitions, {args.n_boot} bootstrap replicates each; "
        f"true value of the target {b.value_of(b.target):.3f} (the logging policy at 30% exploration: "
        f"{b.value_of(b.logging):.3f}); {time.perf_counter() - t0:.0f} s\n"
    )
    print(table(header, rows))


if __name__ == "__main__":
    main()
