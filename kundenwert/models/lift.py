"""Statistics of campaign results: lift of the contacted group against the held-out control group.

Group 1 is the treated (contacted) group, group 0 the control (held-out) group; every difference
is treated minus control. Pure functions on counts and arrays (numpy/scipy only, no I/O): the
assembly of contacts and purchases per campaign, action and channel sits on top of this module.

- ``diff_proportions``: absolute lift of a response rate, Newcombe's hybrid score interval
  (Newcombe 1998, method 10) and the pooled two-proportion z-test. Broadcasts over arrays of
  counts, so a table of cells (or a simulation) is one call.
- ``ratio_proportions``: relative lift p1/p0 - 1, Katz log interval (Katz et al. 1978).
- ``diff_means_welch`` / ``diff_means_bootstrap``: lift of a mean (revenue, margin): Welch's t
  interval, or a percentile (or BCa) bootstrap for heavy tails.
- ``benjamini_hochberg``: false discovery rate over many cells (Benjamini and Hochberg 1995).
- ``minimum_detectable_effect``, ``required_sizes``, ``required_control_share``: planning.
- ``sample_ratio_mismatch``: was the control group drawn at the share it should have been?
- ``standardized_mean_difference``, ``smd_table``: covariate balance of the two groups.
- ``qini_curve``, ``qini_coefficient``, ``qini_coefficient_interval``, ``incremental_at_top``:
  how well an uplift score ranks (Radcliffe 2007).
- ``design_effect``: how much repeated rows of one customer widen an interval (Kish 1965; the
  cluster-robust variance): a cell pooling several campaigns counts a customer several times.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, stats
from scipy.special import ndtr, ndtri

# Bootstrap resamples are drawn in blocks of at most this many values, whatever n_boot and the
# group sizes: about 32 MB of indices and 32 MB of gathered values at a time.
_BLOCK_VALUES = 1 << 22

FloatOrArray = float | np.ndarray
MAX_PLANNED = 1e12  # customers: beyond it no list size is an answer


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided confidence interval and a two-sided p-value.

    Fields are floats for scalar inputs and arrays for array inputs (``diff_proportions`` and
    ``ratio_proportions`` broadcast). ``p_value`` is ``None`` where a method has none and NaN
    where the test is not defined for a cell (an empty group, no variation at all).
    """

    estimate: FloatOrArray
    low: FloatOrArray
    high: FloatOrArray
    p_value: FloatOrArray | None


@dataclass(frozen=True)
class TopFractionRow:
    """Incremental responders when the top ``fraction`` by score is targeted (``incremental_at_top``).

    ``uplift`` is the within-top difference of response rates (treated minus control, Newcombe
    interval); ``model_incremental`` is that difference times ``n_targeted``; ``random_incremental``
    is the overall difference times ``n_targeted``: what a random list of the same size would gain.
    """

    fraction: float
    n_targeted: int
    n_treated: int
    n_control: int
    uplift: Interval
    model_incremental: Interval
    random_incremental: Interval


def _out(a: np.ndarray) -> FloatOrArray:
    """A 0-d result as a Python float, anything else as an array."""
    a = np.asarray(a, dtype="float64")
    return float(a) if a.ndim == 0 else a


def _z(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    return float(ndtri(1.0 - alpha / 2.0))


def _counts(x: ArrayLike, n: ArrayLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    x_, n_ = np.asarray(x, dtype="float64"), np.asarray(n, dtype="float64")
    if np.any(x_ < 0) or np.any(x_ > n_):
        raise ValueError(f"{name}: counts must satisfy 0 <= x <= n (responders within the group size)")
    return x_, n_


def wilson_interval(x: ArrayLike, n: ArrayLike, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Wilson (1927) score interval of a proportion x/n; stays inside [0, 1] at x = 0 and x = n.

    NaN where n = 0. Broadcasts over arrays of counts.
    """
    x_, n_ = _counts(x, n, "wilson_interval")
    z = _z(alpha)
    z2 = z * z
    with np.errstate(divide="ignore", invalid="ignore"):
        center = (x_ + z2 / 2.0) / (n_ + z2)
        half = z / (n_ + z2) * np.sqrt(x_ * (n_ - x_) / n_ + z2 / 4.0)
        low, high = center - half, center + half
    # at x = 0 (x = n) the bound is 0 (1) exactly; rounding must not put it a hair outside
    low = np.where(x_ == 0, 0.0, low)
    high = np.where(x_ == n_, 1.0, high)
    empty = n_ == 0
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


def pooled_z_pvalue(x1: ArrayLike, n1: ArrayLike, x0: ArrayLike, n0: ArrayLike) -> np.ndarray:
    """Two-sided p-value of the pooled two-proportion z-test of p1 = p0.

    The same as Pearson's chi-square test of the 2x2 table without continuity correction
    (z^2 = chi^2). NaN where a group is empty or nobody (everybody) responded in both groups: the
    table carries no information about a difference.
    """
    x1_, n1_ = _counts(x1, n1, "group 1")
    x0_, n0_ = _counts(x0, n0, "group 0")
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (x1_ + x0_) / (n1_ + n0_)
        se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n1_ + 1.0 / n0_))
        z = (x1_ / n1_ - x0_ / n0_) / se
        p = 2.0 * stats.norm.sf(np.abs(z))
    return np.where((n1_ > 0) & (n0_ > 0) & (se > 0), p, np.nan)


def diff_proportions(
    x1: ArrayLike, n1: ArrayLike, x0: ArrayLike, n0: ArrayLike, alpha: float = 0.05
) -> Interval:
    """Absolute lift p1 - p0 of a response rate with Newcombe's hybrid score interval.

    Newcombe (1998), method 10: the Wilson score intervals (l1, u1) and (l0, u0) of each rate are
    combined as ``d - sqrt((p1 - l1)^2 + (u0 - p0)^2)`` and ``d + sqrt((u1 - p1)^2 + (p0 - l0)^2)``.
    It keeps its coverage near nominal for small groups and at rates of 0 or 1, where the Wald
    interval collapses. The p-value is the pooled two-proportion z-test (``pooled_z_pvalue``).

    Counts broadcast: arrays give arrays (one cell per element). An empty group gives NaN.
    """
    x1_, n1_ = _counts(x1, n1, "group 1")
    x0_, n0_ = _counts(x0, n0, "group 0")
    l1, u1 = wilson_interval(x1_, n1_, alpha)
    l0, u0 = wilson_interval(x0_, n0_, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        p1, p0 = x1_ / n1_, x0_ / n0_
    d = p1 - p0
    low = d - np.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    high = d + np.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    return Interval(_out(d), _out(low), _out(high), _out(pooled_z_pvalue(x1_, n1_, x0_, n0_)))


def ratio_proportions(
    x1: ArrayLike, n1: ArrayLike, x0: ArrayLike, n0: ArrayLike, alpha: float = 0.05
) -> Interval:
    """Relative lift p1 / p0 - 1 with the Katz log interval of the risk ratio, minus 1.

    Katz, Baptista, Azen and Pike (1978): ``log(p1/p0) +- z sqrt(1/x1 - 1/n1 + 1/x0 - 1/n0)``;
    equal to statsmodels' ``confint_proportions_2indep(compare='ratio', method='log')``. The
    p-value is the pooled z-test of p1 = p0, the same null hypothesis (and number) as
    ``diff_proportions``, so the absolute and the relative lift never disagree on significance.

    Zero counts: with no control responder (p0 = 0) the estimate is +inf (NaN if there is no
    treated responder either); with no treated responder it is -1. The log interval is undefined
    whenever a count is 0: low and high are NaN there (``diff_proportions`` still gives an
    interval). No warning escapes. When everybody responded in both groups the Katz variance is
    0 and the interval has no width (as statsmodels'). Broadcasts like ``diff_proportions``.
    """
    x1_, n1_ = _counts(x1, n1, "group 1")
    x0_, n0_ = _counts(x0, n0, "group 0")
    z = _z(alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        rr = (x1_ / n1_) / (x0_ / n0_)
        half = z * np.sqrt(1.0 / x1_ - 1.0 / n1_ + 1.0 / x0_ - 1.0 / n0_)
        low = np.exp(np.log(rr) - half) - 1.0
        high = np.exp(np.log(rr) + half) - 1.0
    defined = (x1_ > 0) & (x0_ > 0)
    return Interval(
        _out(rr - 1.0),
        _out(np.where(defined, low, np.nan)),
        _out(np.where(defined, high, np.nan)),
        _out(pooled_z_pvalue(x1_, n1_, x0_, n0_)),
    )


def _values(y: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(y, dtype="float64")
    if a.ndim != 1:
        raise ValueError(f"{name} must be one value per customer (1-D), got shape {a.shape}")
    return a


def diff_means_welch(y1: ArrayLike, y0: ArrayLike, alpha: float = 0.05, deff: float = 1.0) -> Interval:
    """Difference of means with Welch's t interval and p-value (unequal variances).

    Welch (1947) with the Welch-Satterthwaite degrees of freedom; equal to
    ``scipy.stats.ttest_ind(y1, y0, equal_var=False)`` and its ``confidence_interval``. NaN values
    propagate (as scipy's default); fewer than two values in a group give NaN. ``deff``: a
    design effect (``design_effect``) multiplying the variance, the degrees of freedom divided.
    """
    a, b = _values(y1, "y1"), _values(y0, "y0")
    n1, n0 = a.size, b.size
    if n1 < 2 or n0 < 2:
        nan = float("nan")
        return Interval(nan, nan, nan, nan)
    d = float(a.mean() - b.mean())
    v1, v0 = deff * a.var(ddof=1) / n1, deff * b.var(ddof=1) / n0
    se = float(np.sqrt(v1 + v0))
    if not se > 0:  # both groups constant: no sampling variation to test against
        return Interval(d, d, d, float("nan"))
    df = (v1 + v0) ** 2 / (v1**2 / (n1 - 1) + v0**2 / (n0 - 1)) / deff
    t = d / se
    half = float(stats.t.ppf(1.0 - alpha / 2.0, df)) * se
    return Interval(d, d - half, d + half, float(2.0 * stats.t.sf(abs(t), df)))


def _bootstrap_means(y: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of y, drawn in memory-bounded blocks."""
    n = y.size
    out = np.empty(n_boot)
    block = max(1, _BLOCK_VALUES // n)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        out[start:stop] = y[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return out


def diff_means_bootstrap(
    y1: ArrayLike,
    y0: ArrayLike,
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
    method: str = "percentile",
) -> Interval:
    """Difference of means with a bootstrap interval, for heavy-tailed revenue or margin.

    Each group is resampled separately (its size fixed), ``n_boot`` times; resamples are drawn in
    blocks of bounded memory (a few tens of MB at a time, whatever the group sizes). Equal to
    ``scipy.stats.bootstrap((y1, y0), mean difference, method=..., rng=seed)``. ``method``:

    - ``"percentile"`` (default): the alpha/2 and 1 - alpha/2 quantiles of the bootstrap
      differences (Efron and Tibshirani 1993, 13.3).
    - ``"bca"``: bias-corrected and accelerated (Efron 1987), the acceleration from the
      two-sample jackknife as scipy computes it (closed form for means: ``y_i - mean`` per
      group). Not the default: with heavy tails in both groups the estimated acceleration follows
      the extreme values (an outlier in the control group lowers the estimate and also shortens
      the upper end), and in simulations of zero-inflated lognormal revenue (150 vs 150 and
      2000 vs 300 customers, sigma 1.5) its 95% interval covered the truth 84-87% of the time,
      the percentile interval 91% (Welch's t interval 92-95%).

    The p-value inverts the same interval: the smallest alpha at which it excludes 0, resolved to
    about 1 / n_boot (a difference never crossed by a resample gets ``1 / n_boot``). Deterministic
    for a given ``seed``.
    """
    if method not in ("bca", "percentile"):
        raise ValueError(f"method must be 'bca' or 'percentile', got {method!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot!r}")
    a, b = _values(y1, "y1"), _values(y0, "y0")
    z_half = _z(alpha)
    if a.size < 2 or b.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        nan = float("nan")
        return Interval(nan, nan, nan, nan)
    d = float(a.mean() - b.mean())
    rng = np.random.default_rng(seed)
    boot = _bootstrap_means(a, n_boot, rng) - _bootstrap_means(b, n_boot, rng)

    # share of resamples below the estimate (ties count half), as scipy's _percentile_of_score
    below = (np.count_nonzero(boot < d) + np.count_nonzero(boot <= d)) / (2.0 * n_boot)
    if method == "bca":
        z0 = float(ndtri(below))
        u1, u0 = a - a.mean(), b - b.mean()
        num = np.sum(u1**3) / a.size**3 - np.sum(u0**3) / b.size**3
        den = (np.sum(u1**2) / a.size**2 + np.sum(u0**2) / b.size**2) ** 1.5
        acc = num / (6.0 * den) if den > 0 else 0.0
    else:
        z0, acc = 0.0, 0.0

    def level(z_alpha: float) -> float:
        """BCa-adjusted quantile level of the nominal normal quantile z_alpha."""
        s = z0 + z_alpha
        return float(ndtr(z0 + s / (1.0 - acc * s)))

    if not np.isfinite(z0):  # every resample on one side of the estimate: no correction possible
        lo_q, hi_q = alpha / 2.0, 1.0 - alpha / 2.0
        z0, acc = 0.0, 0.0
    else:
        lo_q, hi_q = level(-z_half), level(z_half)
    low, high = np.quantile(boot, [lo_q, hi_q])

    # p-value: the level whose interval has 0 on its boundary. Position of 0 in the bootstrap
    # distribution q -> w = Phi^-1(q) - z0 -> nominal z = w / (1 + a w) - z0 (inverts ``level``).
    q = float(np.count_nonzero(boot < 0) + np.count_nonzero(boot <= 0)) / (2.0 * n_boot)
    q = min(max(q, 0.5 / n_boot), 1.0 - 0.5 / n_boot)
    w = float(ndtri(q)) - z0
    z_nom = w / (1.0 + acc * w) - z0 if 1.0 + acc * w > 0 else -np.inf * np.sign(acc)
    p = float(min(1.0, 2.0 * min(ndtr(z_nom), 1.0 - ndtr(z_nom))))
    return Interval(d, float(low), float(high), max(p, 1.0 / n_boot))


def benjamini_hochberg(p_values: ArrayLike, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Hochberg (1995) adjusted p-values and the cells significant at FDR ``alpha``.

    Equal to statsmodels ``multipletests(p, alpha, method='fdr_bh')``. NaN p-values (cells
    without a test) stay NaN, are never significant and do not count in m.
    """
    p = np.asarray(p_values, dtype="float64")
    shape = p.shape
    p = p.ravel()
    adjusted = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m:
        order = np.argsort(p[ok], kind="stable")
        ranked = p[ok][order] * m / np.arange(1, m + 1)
        step_up = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
        within = np.empty(m)
        within[order] = step_up
        adjusted[ok] = within
    significant = np.zeros(p.shape, dtype=bool)
    significant[ok] = adjusted[ok] <= alpha
    return adjusted.reshape(shape), significant.reshape(shape)


def power_diff_proportions(p0: float, lift: float, n1: float, n0: float, alpha: float = 0.05) -> float:
    """Power of the two-sided pooled z-test of p1 = p0 when p1 = p0 + lift (normal approximation).

    ``Phi((|d| - z s0) / s1) + Phi((-|d| - z s0) / s1)``: s0 is the standard error under the null
    (pooled rate ``(n1 p1 + n0 p0) / (n1 + n0)``), s1 under the alternative (each rate its own
    variance). The same as statsmodels ``power_proportions_2indep``.
    """
    z = _z(alpha)
    p1 = p0 + lift
    pooled = (n1 * p1 + n0 * p0) / (n1 + n0)
    s0 = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n0))
    s1 = np.sqrt(p1 * (1.0 - p1) / n1 + p0 * (1.0 - p0) / n0)
    d = abs(lift)
    return float(ndtr((d - z * s0) / s1) + ndtr((-d - z * s0) / s1))


def _check_rate(p0: float) -> None:
    if not 0.0 < p0 < 1.0:
        raise ValueError(f"p0 (the control rate) must lie in (0, 1), got {p0!r}")


def minimum_detectable_effect(
    p0: float, n1: float, n0: float, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest absolute lift d > 0 of a rate p0 that the two-sided test detects with ``power``.

    Solved exactly on the power function ``power_diff_proportions`` (brentq over d in
    (0, 1 - p0)), not with the one-tail closed form: the variances under the null and under
    the alternative both use p0 + d. NaN when even p1 = 1 is not detectable at these sizes.
    """
    _check_rate(p0)
    if n1 <= 0 or n0 <= 0:
        return float("nan")
    top = 1.0 - p0 - 1e-12
    if power_diff_proportions(p0, top, n1, n0, alpha) < power:
        return float("nan")
    return float(
        optimize.brentq(
            lambda d: power_diff_proportions(p0, d, n1, n0, alpha) - power, 1e-12, top, xtol=1e-12
        )
    )


def _check_lift(p0: float, lift: float) -> None:
    _check_rate(p0)
    if not 0.0 < lift < 1.0 - p0:
        raise ValueError(f"lift must lie in (0, 1 - p0) = (0, {1.0 - p0:g}), got {lift!r}")


def required_sizes(
    p0: float, lift: float, control_share: float, alpha: float = 0.05, power: float = 0.8
) -> tuple[int, int, int]:
    """List size needed to detect an absolute ``lift`` over p0 with a given control share.

    Returns ``(n_total, n_treated, n_control)``: the smallest continuous total N with power
    ``power`` at sizes N (1 - share) and N share (brentq on ``power_diff_proportions``), each
    group then rounded up, so the power at the returned sizes is at least ``power``.
    """
    _check_lift(p0, lift)
    if not 0.0 < control_share < 1.0:
        raise ValueError(f"control_share must lie in (0, 1), got {control_share!r}")

    def gap(n: float) -> float:
        return power_diff_proportions(p0, lift, n * (1 - control_share), n * control_share, alpha) - power

    hi = 16.0
    while gap(hi) < 0:
        hi *= 2.0
        if hi > MAX_PLANNED:
            raise ValueError(
                f"no list of up to {MAX_PLANNED:.0e} customers detects a lift of {lift:g} over {p0:g}"
            )
    n = optimize.brentq(gap, 2.0, hi, xtol=1e-6) if gap(2.0) < 0 else 2.0
    n_treated = int(np.ceil(n * (1 - control_share) - 1e-9))
    n_control = int(np.ceil(n * control_share - 1e-9))
    return n_treated + n_control, n_treated, n_control


def required_control_share(
    p0: float, lift: float, n_total: float, alpha: float = 0.05, power: float = 0.8
) -> float | None:
    """Smallest control share of a list of ``n_total`` that still detects ``lift`` with ``power``.

    The smallest share keeps the most customers contacted. The power is largest near a
    balanced split; below its best share it rises with the share, and brentq finds where it
    reaches ``power``. ``None`` when no share reaches it (the list is too small for this lift).
    """
    _check_lift(p0, lift)

    def pw(s: float) -> float:
        return power_diff_proportions(p0, lift, n_total * (1 - s), n_total * s, alpha)

    best = optimize.minimize_scalar(lambda s: -pw(s), bounds=(1e-6, 1 - 1e-6), method="bounded")
    s_best = float(best.x)
    if pw(s_best) < power:
        return None
    lo = 1e-9
    if pw(lo) >= power:
        return lo
    return float(optimize.brentq(lambda s: pw(s) - power, lo, s_best, xtol=1e-10))


def sample_ratio_mismatch(n_treated: int, n_control: int, control_share: float) -> tuple[float, float]:
    """Chi-square goodness of fit (1 df) of the observed split against the drawn control share.

    A small p-value (the usual alarm is p < 0.001) says the groups were not drawn as planned
    (lost contacts, a filter applied to one group only): the lift estimate is then not trusted.
    Equal to ``scipy.stats.chisquare([n_treated, n_control], expected)``.
    """
    if not 0.0 < control_share < 1.0:
        raise ValueError(f"control_share must lie in (0, 1), got {control_share!r}")
    n = n_treated + n_control
    if n <= 0:
        return float("nan"), float("nan")
    expected = np.array([n * (1.0 - control_share), n * control_share])
    observed = np.array([n_treated, n_control], dtype="float64")
    chi2 = float(np.sum((observed - expected) ** 2 / expected))
    return chi2, float(stats.chi2.sf(chi2, 1))


def standardized_mean_difference(x1: ArrayLike, x0: ArrayLike) -> FloatOrArray:
    """Standardized mean difference (mean1 - mean0) / sqrt((s1^2 + s0^2) / 2), NaN-safe.

    The balance diagnostic of Austin (2009); for a binary feature the same formula on 0/1 values.
    1-D inputs (one feature) give a float; 2-D inputs (customers x features) one value per
    column. NaN values are ignored; a feature constant and equal in both groups gives 0, constant
    but different gives +-inf; fewer than two values in a group give NaN.
    """
    a, b = np.asarray(x1, dtype="float64"), np.asarray(x0, dtype="float64")
    if a.ndim not in (1, 2) or a.ndim != b.ndim or a.shape[1:] != b.shape[1:]:
        raise ValueError(f"x1 and x0 must both be 1-D or 2-D with the same columns: {a.shape}, {b.shape}")
    n1, n0 = np.sum(~np.isnan(a), axis=0), np.sum(~np.isnan(b), axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        m1 = np.nansum(a, axis=0) / n1
        m0 = np.nansum(b, axis=0) / n0
        v1 = np.nansum((a - m1) ** 2, axis=0) / (n1 - 1)
        v0 = np.nansum((b - m0) ** 2, axis=0) / (n0 - 1)
        diff = m1 - m0
        smd = diff / np.sqrt((v1 + v0) / 2.0)
    smd = np.where((v1 + v0 == 0) & (diff == 0), 0.0, smd)
    return _out(np.where((n1 < 2) | (n0 < 2), np.nan, smd))


def smd_table(features1: Mapping[str, ArrayLike], features0: Mapping[str, ArrayLike]) -> dict[str, float]:
    """Standardized mean difference of each feature present in both mappings (name -> values)."""
    missing = sorted(set(features1) ^ set(features0))
    if missing:
        raise ValueError(f"features missing in one group: {', '.join(missing)}")
    return {k: float(standardized_mean_difference(features1[k], features0[k])) for k in features1}


def _uplift_inputs(y: ArrayLike, treated: ArrayLike, score: ArrayLike) -> tuple[np.ndarray, ...]:
    y_, t_, s_ = (np.asarray(v) for v in (y, treated, score))
    if not (y_.ndim == t_.ndim == s_.ndim == 1 and y_.size == t_.size == s_.size):
        raise ValueError(
            f"y, treated and score must be 1-D of one length: {y_.shape}, {t_.shape}, {s_.shape}"
        )
    t_ = t_.astype(bool)
    if t_.all() or not t_.any():
        raise ValueError("treated must contain both groups (1 = contacted, 0 = control)")
    return y_.astype("float64"), t_, s_.astype("float64")


def _qini_points(
    y: np.ndarray, t: np.ndarray, ends: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Qini points at the cut positions ``ends`` of customers already sorted by score.

    Returns (targeted count, incremental responders) without the origin; with ``weights``
    (resamples x customers, bootstrap multiplicities) one row per resample.
    """
    w = np.ones_like(y) if weights is None else weights
    wt = w * t
    n_t = np.cumsum(wt, axis=-1)[..., ends]
    r_t = np.cumsum(wt * y, axis=-1)[..., ends]
    n_all = np.cumsum(w, axis=-1)[..., ends]
    n_c = n_all - n_t
    r_c = np.cumsum((w - wt) * y, axis=-1)[..., ends]
    # no control customer above a cut yet: nothing to subtract (as scikit-uplift)
    scale = np.divide(n_t, n_c, out=np.zeros_like(n_t), where=n_c > 0)
    return n_all, r_t - r_c * scale


def _sorted_cuts(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Descending stable order of the score and the last position of each run of tied scores."""
    order = np.argsort(-score, kind="stable")
    s = score[order]
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    return order, ends


def qini_curve(
    y: ArrayLike, treated: ArrayLike, score: ArrayLike, bins: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Radcliffe's Qini curve: incremental responders when the top fraction by score is targeted.

    At each cut, ``R_t - R_c * N_t / N_c``: treated responders above the cut minus control
    responders above it scaled to the treated count (Radcliffe 2007; scikit-uplift's
    ``qini_curve``). Cuts fall between distinct scores (tied customers are targeted together),
    and the curve starts at (0, 0). ``bins``: the curve read (linearly, as between two cuts) at
    ``bins + 1`` equally spaced fractions 0, 1/bins, ..., 1 instead.

    Returns ``(fraction_targeted, incremental)``: fractions of all customers, responder counts.
    """
    y_, t_, s_ = _uplift_inputs(y, treated, score)
    order, ends = _sorted_cuts(s_)
    n_all, inc = _qini_points(y_[order], t_[order], ends)
    frac = np.r_[0.0, n_all / y_.size]
    inc = np.r_[0.0, inc]
    if bins is None:
        return frac, inc
    if bins < 1:
        raise ValueError(f"bins must be a positive number of bins, got {bins!r}")
    grid = np.linspace(0.0, 1.0, bins + 1)
    return grid, np.interp(grid, frac, inc)


def _qini_coefficients(
    y: np.ndarray, t: np.ndarray, score: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Normalised Qini area of the score (see ``qini_coefficient``), per row of ``weights``."""
    n = y.size
    rows = []
    for s in (score, np.where(t, y, -y)):  # the model, then the perfect ordering
        order, ends = _sorted_cuts(s)
        w = None if weights is None else weights[..., order]
        n_all, inc = _qini_points(y[order], t[order], ends, w)
        x = np.concatenate([np.zeros(n_all.shape[:-1] + (1,)), n_all / n], axis=-1)
        q = np.concatenate([np.zeros(inc.shape[:-1] + (1,)), inc], axis=-1)
        rows.append((np.trapezoid(q, x, axis=-1), q[..., -1]))
    (model, total), (perfect, _) = rows
    random = total / 2.0  # the straight line from (0, 0) to (1, Q(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (model - random) / (perfect - random)


def qini_coefficient(y: ArrayLike, treated: ArrayLike, score: ArrayLike) -> float:
    """Qini coefficient: area between the score's Qini curve and the random line, normalised.

    ``(A_model - A_random) / (A_perfect - A_random)``, areas by the trapezoid rule over the
    fraction targeted; the random line joins (0, 0) to the whole list's incremental responders;
    the perfect curve ranks treated responders first and control responders last (score
    ``y if treated else -y``). This is scikit-uplift's ``qini_auc_score`` with
    ``negative_effect=True``: 1 is the perfect ranking, 0 no better than random, negative worse.
    NaN when the perfect curve has no area above the random line.
    """
    y_, t_, s_ = _uplift_inputs(y, treated, score)
    return float(_qini_coefficients(y_, t_, s_))


def qini_coefficient_interval(
    y: ArrayLike,
    treated: ArrayLike,
    score: ArrayLike,
    n_boot: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
) -> Interval:
    """Qini coefficient with a percentile bootstrap interval (p_value None).

    Each group is resampled separately with its size fixed. A resample is a vector of
    multiplicities over the customers, so the sort by score is done once and each resample is
    a few cumulative sums; resamples are processed in memory-bounded blocks. Deterministic for
    a given ``seed``.
    """
    y_, t_, s_ = _uplift_inputs(y, treated, score)
    _z(alpha)
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot!r}")
    rng = np.random.default_rng(seed)
    idx1, idx0 = np.flatnonzero(t_), np.flatnonzero(~t_)
    n = y_.size
    block = max(1, _BLOCK_VALUES // (8 * n))  # a block holds several (block x n) float arrays
    coefs = np.empty(n_boot)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        w = np.zeros((stop - start, n))
        for idx in (idx1, idx0):
            w[:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=stop - start)
        coefs[start:stop] = _qini_coefficients(y_, t_, s_, w)
    low, high = np.nanquantile(coefs, [alpha / 2.0, 1.0 - alpha / 2.0])
    return Interval(float(_qini_coefficients(y_, t_, s_)), float(low), float(high), None)


def incremental(estimate_interval: Interval, n_treated: ArrayLike) -> Interval:
    """Incremental responders (or revenue) of a lift: the lift and its interval times ``n_treated``.

    A lift per contacted customer times the contacted count. The p-value is the lift's: scaling
    by a known count does not change the test.
    """
    n = np.asarray(n_treated, dtype="float64")
    iv = estimate_interval

    def scaled(v: FloatOrArray) -> FloatOrArray:
        return _out(np.asarray(v) * n)

    return Interval(scaled(iv.estimate), scaled(iv.low), scaled(iv.high), iv.p_value)


def incremental_at_top(
    y: ArrayLike,
    treated: ArrayLike,
    score: ArrayLike,
    fractions: Sequence[float] = (0.1, 0.2, 0.3),
    alpha: float = 0.05,
) -> list[TopFractionRow]:
    """Incremental responders of targeting the top fractions by score, against a random list.

    For each fraction f, the top ``round(f n)`` customers by score (ties in input order): the
    treated-minus-control response rate within them (Newcombe interval) times their count is the
    model's incremental responders; the overall treated-minus-control rate times the same count
    is a random list's. Both are estimates for a list of that size contacted in full.
    """
    y_, t_, s_ = _uplift_inputs(y, treated, score)
    n = y_.size
    order = np.argsort(-s_, kind="stable")
    ys, ts = y_[order], t_[order]
    overall = diff_proportions(ys[ts].sum(), ts.sum(), ys[~ts].sum(), (~ts).sum(), alpha)
    rows = []
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise ValueError(f"fractions must lie in (0, 1], got {f!r}")
        k = int(np.floor(f * n + 0.5))
        top_t, top_y = ts[:k], ys[:k]
        n_t = int(top_t.sum())
        uplift = diff_proportions(top_y[top_t].sum(), n_t, top_y[~top_t].sum(), k - n_t, alpha)
        rows.append(
            TopFractionRow(
                fraction=float(f),
                n_targeted=k,
                n_treated=n_t,
                n_control=k - n_t,
                uplift=uplift,
                model_incremental=incremental(uplift, k),
                random_incremental=incremental(overall, k),
            )
        )
    return rows


def design_effect(y: ArrayLike, treated: ArrayLike, cluster: ArrayLike) -> float:
    """How much the correlation of outcomes within clusters (a customer counted in several
    campaigns of one cell) widens the variance of the difference of means (or rates) of the two
    groups: Kish's design effect, the cluster-robust (linearised ratio-estimator, CR1) variance
    over the variance that treats every row as independent. At least 1 (never narrower than
    independent rows); exactly 1 when no cluster holds more than one row.

    Divide the counts of ``diff_proportions`` by it (an effective sample size, as surveys do) or
    multiply a variance by it."""
    y_ = np.asarray(y, dtype="float64")
    t = np.asarray(treated, dtype=bool)
    codes, _ = _cluster_codes(cluster)
    if codes.size == 0 or np.bincount(codes).max() <= 1 or t.all() or not t.any():
        return 1.0
    g = int(codes.max()) + 1
    n1, n0 = t.sum(), (~t).sum()
    a = np.bincount(codes, weights=np.where(t, y_, 0.0), minlength=g)
    b = np.bincount(codes, weights=t.astype("float64"), minlength=g)
    c = np.bincount(codes, weights=np.where(~t, y_, 0.0), minlength=g)
    d = np.bincount(codes, weights=(~t).astype("float64"), minlength=g)
    m1, m0 = a.sum() / n1, c.sum() / n0
    e1, e0 = a - m1 * b, c - m0 * d
    small = g / (g - 1.0) if g > 1 else 1.0
    robust = small * ((e1**2).sum() / n1**2 + (e0**2).sum() / n0**2 - 2.0 * (e1 * e0).sum() / (n1 * n0))
    naive = y_[t].var(ddof=1) / n1 + y_[~t].var(ddof=1) / n0 if n1 > 1 and n0 > 1 else np.nan
    if not (np.isfinite(robust) and np.isfinite(naive)) or naive <= 0:
        return 1.0
    return float(max(1.0, robust / naive))


def _cluster_codes(cluster: ArrayLike) -> tuple[np.ndarray, int]:
    values = np.asarray(cluster)
    if values.size == 0:
        return np.zeros(0, dtype=np.intp), 0
    _, codes = np.unique(values.astype(str) if values.dtype == object else values, return_inverse=True)
    return codes.astype(np.intp).ravel(), int(codes.max()) + 1
