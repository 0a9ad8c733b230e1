"""Campaign-result statistics: equal to the reference implementations (statsmodels, scipy) and to a
published number, with the coverage they promise in simulation, and hand-computed uplift tables."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats import proportion as smp
from statsmodels.stats.multitest import multipletests

from kundenwert.models.lift import (
    Interval,
    benjamini_hochberg,
    diff_means_bootstrap,
    diff_means_welch,
    diff_proportions,
    incremental,
    incremental_at_top,
    minimum_detectable_effect,
    power_diff_proportions,
    qini_coefficient,
    qini_coefficient_interval,
    qini_curve,
    ratio_proportions,
    required_control_share,
    required_sizes,
    sample_ratio_mismatch,
    smd_table,
    standardized_mean_difference,
)

# (x1, n1, x0, n0): ordinary tables, and the edges: no responder, all responders, tiny groups
TABLES = [
    (56, 70, 48, 80),
    (3, 1000, 1, 900),
    (120, 2400, 31, 610),
    (0, 10, 3, 12),
    (10, 10, 0, 5),
    (1, 3, 2, 2),
    (0, 5, 0, 5),
    (5, 5, 5, 5),
    (7, 7, 1, 9),
]
NONZERO = [t for t in TABLES if t[0] > 0 and t[2] > 0]


def _sm(fn, t, **kw):
    """statsmodels on numpy floats: it divides by the counts, and Python floats would raise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*(np.float64(v) for v in t), **kw)


def test_newcombe_published_example():
    # Newcombe (1998), Table II: 56/70 vs 48/80, method 10 gives 0.2 (0.0524, 0.3339)
    r = diff_proportions(56, 70, 48, 80)
    assert r.estimate == pytest.approx(0.2)
    assert (round(r.low, 4), round(r.high, 4)) == (0.0524, 0.3339)


@pytest.mark.parametrize("table", TABLES)
def test_diff_interval_equals_statsmodels_newcombe(table):
    r = diff_proportions(*table)
    low, high = _sm(smp.confint_proportions_2indep, table, method="newcomb", compare="diff")
    assert (r.low, r.high) == pytest.approx((low, high), abs=1e-12)
    assert r.low <= r.estimate <= r.high and r.low >= -1 and r.high <= 1


@pytest.mark.parametrize("table", TABLES)
def test_diff_pvalue_is_the_pooled_z_test(table):
    x1, n1, x0, n0 = table
    r = diff_proportions(*table)
    if x1 + x0 in (0, n1 + n0):  # no variation at all: no test
        assert np.isnan(r.p_value)
        return
    chi = stats.chi2_contingency([[x1, n1 - x1], [x0, n0 - x0]], correction=False)
    sm = _sm(smp.test_proportions_2indep, table, method="score", correction=False)
    assert r.p_value == pytest.approx(chi.pvalue, rel=1e-9)
    assert r.p_value == pytest.approx(sm.pvalue, rel=1e-9)


def test_diff_proportions_broadcasts_and_handles_empty_groups():
    x1, n1, x0, n0 = (np.array(c) for c in zip(*TABLES, strict=True))
    r = diff_proportions(x1, n1, x0, n0)
    for i, t in enumerate(TABLES):
        one = diff_proportions(*t)
        assert (r.estimate[i], r.low[i], r.high[i]) == pytest.approx((one.estimate, one.low, one.high))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = diff_proportions(3, 10, 0, 0)
    assert all(np.isnan(v) for v in (empty.estimate, empty.low, empty.high, empty.p_value))


@pytest.mark.parametrize("table", NONZERO)
def test_ratio_interval_equals_statsmodels_log(table):
    r = ratio_proportions(*table)
    low, high = _sm(smp.confint_proportions_2indep, table, method="log", compare="ratio")
    x1, n1, x0, n0 = table
    assert r.estimate == pytest.approx((x1 / n1) / (x0 / n0) - 1)
    assert (r.low, r.high) == pytest.approx((low - 1, high - 1), rel=1e-12, abs=1e-12)
    assert r.p_value == pytest.approx(diff_proportions(*table).p_value, nan_ok=True)


def test_ratio_with_zero_counts_is_defined_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        no_control = ratio_proportions(4, 50, 0, 40)
        no_one = ratio_proportions(0, 50, 0, 40)
        no_treated = ratio_proportions(0, 50, 3, 40)
    assert no_control.estimate == np.inf and np.isnan(no_control.low) and np.isnan(no_control.high)
    assert np.isnan(no_one.estimate) and np.isnan(no_one.low)
    assert no_treated.estimate == -1.0 and np.isnan(no_treated.high)


def test_welch_equals_scipy():
    rng = np.random.default_rng(3)
    y1, y0 = rng.lognormal(3.0, 1.0, 400), rng.lognormal(3.1, 1.4, 150)
    for alpha in (0.05, 0.1):
        r = diff_means_welch(y1, y0, alpha=alpha)
        ref = stats.ttest_ind(y1, y0, equal_var=False)
        ci = ref.confidence_interval(1 - alpha)
        assert r.estimate == pytest.approx(y1.mean() - y0.mean())
        assert (r.low, r.high, r.p_value) == pytest.approx((ci.low, ci.high, ref.pvalue), rel=1e-10)


@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_bootstrap_equals_scipy_bootstrap_with_the_same_seed(method):
    # Same generator, same draws (group 1's resamples, then group 0's): scipy's interval exactly,
    # also when the resamples are drawn in more than one block (n_boot * n above the block size).
    rng = np.random.default_rng(5)
    y1, y0 = rng.lognormal(0.0, 1.0, 300), rng.lognormal(0.1, 1.0, 250)
    for n_boot in (999, 15_000):
        r = diff_means_bootstrap(y1, y0, n_boot=n_boot, seed=11, method=method)
        ref = stats.bootstrap(
            (y1, y0),
            lambda a, b, axis: a.mean(axis) - b.mean(axis),
            method="BCa" if method == "bca" else "percentile",
            n_resamples=n_boot,
            rng=11,
        ).confidence_interval
        assert (r.low, r.high) == pytest.approx((ref.low, ref.high), rel=1e-10)
    again = diff_means_bootstrap(y1, y0, n_boot=999, seed=11, method=method)
    assert again == diff_means_bootstrap(y1, y0, n_boot=999, seed=11, method=method)


def test_bootstrap_pvalue_inverts_its_interval():
    # at alpha = p the interval has 0 on its boundary
    rng = np.random.default_rng(8)
    y1, y0 = rng.lognormal(0.2, 1.0, 300), rng.lognormal(0.0, 1.0, 300)
    r = diff_means_bootstrap(y1, y0, n_boot=4000, seed=1)
    assert 0.001 < r.p_value < 0.5
    at_p = diff_means_bootstrap(y1, y0, alpha=r.p_value, n_boot=4000, seed=1)
    assert min(abs(at_p.low), abs(at_p.high)) < 0.01 * (r.high - r.low)


def test_benjamini_hochberg_equals_statsmodels_and_skips_nan():
    rng = np.random.default_rng(2)
    p = np.r_[rng.uniform(size=30) ** 3, [0.0, 1.0, 0.004, 0.004]]
    with_nan = np.insert(p, [3, 10], np.nan)
    adjusted, significant = benjamini_hochberg(with_nan, alpha=0.1)
    reject, ref, _, _ = multipletests(p, alpha=0.1, method="fdr_bh")
    ok = ~np.isnan(with_nan)
    np.testing.assert_allclose(adjusted[ok], ref, rtol=1e-12)
    np.testing.assert_array_equal(significant[ok], reject)
    assert np.isnan(adjusted[~ok]).all() and not significant[~ok].any()


def test_sample_ratio_mismatch_equals_scipy_and_flags_a_wrong_split():
    chi2, p = sample_ratio_mismatch(1000, 1000, 0.15)
    ref = stats.chisquare([1000, 1000], [2000 * 0.85, 2000 * 0.15])
    assert (chi2, p) == pytest.approx((ref.statistic, ref.pvalue))
    assert p < 1e-6
    chi2, p = sample_ratio_mismatch(8437, 1511, 0.15)
    ref = stats.chisquare([8437, 1511], [9948 * 0.85, 9948 * 0.15])
    assert (chi2, p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-10)
    n = 20_000
    control = int(np.random.default_rng(0).binomial(n, 0.15))  # a proper draw
    assert sample_ratio_mismatch(n - control, control, 0.15)[1] > 0.01


def test_mde_has_the_target_power():
    for p0, n1, n0 in [(0.05, 9000, 1000), (0.2, 400, 400), (0.01, 50_000, 5000)]:
        d = minimum_detectable_effect(p0, n1, n0)
        power = smp.power_proportions_2indep(d, p0, n1, ratio=n0 / n1).power  # diff = p1 - p2, p2 = p0
        assert power == pytest.approx(0.8, abs=1e-8)
        # the usual one-tail closed form (Fleiss) leaves out the far tail: it is a close approximation
        z_a, z_b = stats.norm.isf(0.025), stats.norm.isf(0.2)
        p1, pooled = p0 + d, (n1 * (p0 + d) + n0 * p0) / (n1 + n0)
        closed = z_a * np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0)) + z_b * np.sqrt(
            p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0
        )
        assert closed == pytest.approx(d, rel=1e-4)
    assert np.isnan(minimum_detectable_effect(0.5, 3, 3))


def test_required_sizes_and_share_round_trip():
    p0, lift, share = 0.05, 0.01, 0.1
    n_total, n_treated, n_control = required_sizes(p0, lift, share)
    assert n_total == n_treated + n_control
    assert n_control / n_total == pytest.approx(share, abs=1e-3)
    assert power_diff_proportions(p0, lift, n_treated, n_control) >= 0.8
    assert power_diff_proportions(p0, lift, 0.998 * n_treated, 0.998 * n_control) < 0.8
    assert minimum_detectable_effect(p0, n_treated, n_control) <= lift

    s = required_control_share(p0, lift, 20_000)
    assert s is not None and 0 < s < 0.5
    assert power_diff_proportions(p0, lift, 20_000 * (1 - s), 20_000 * s) == pytest.approx(0.8, abs=1e-6)
    assert power_diff_proportions(p0, lift, 20_000 * (1 - 0.9 * s), 20_000 * 0.9 * s) < 0.8
    # the smallest list at that share needs about the same 20,000
    assert required_sizes(p0, lift, s)[0] == pytest.approx(20_000, abs=2)
    assert required_control_share(p0, lift, 2_000) is None


def test_standardized_mean_difference():
    x1 = np.array([1.0, 2.0, 3.0, np.nan])
    x0 = np.array([2.0, 4.0, 6.0])
    # means 2 and 4, variances 1 and 4: -2 / sqrt(2.5)
    assert standardized_mean_difference(x1, x0) == pytest.approx(-2 / np.sqrt(2.5))
    b1, b0 = np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0, 0])  # binary: rates 0.5 and 0.2
    expected = (0.5 - 0.2) / np.sqrt((1 / 3 + 0.2) / 2)
    assert standardized_mean_difference(b1, b0) == pytest.approx(expected)
    both = standardized_mean_difference(np.c_[x1[:3], b1[:3]], np.c_[x0, b0[:3]])
    assert both[0] == pytest.approx(-2 / np.sqrt(2.5)) and both.shape == (2,)
    assert standardized_mean_difference([3, 3, 3], [3, 3]) == 0.0
    table = smd_table({"age": x1, "member": b1}, {"age": x0, "member": b0})
    assert table == pytest.approx({"age": -2 / np.sqrt(2.5), "member": expected})


def test_newcombe_coverage_by_simulation():
    rng = np.random.default_rng(20261201)
    for p0, p1, n1, n0 in [(0.05, 0.07, 800, 200), (0.3, 0.4, 60, 40), (0.02, 0.02, 3000, 500)]:
        x1, x0 = rng.binomial(n1, p1, 2000), rng.binomial(n0, p0, 2000)
        r = diff_proportions(x1, n1, x0, n0)
        covered = np.mean((r.low <= p1 - p0) & (p1 - p0 <= r.high))
        assert 0.93 <= covered <= 0.97, (p0, p1, n1, n0, covered)


def test_bootstrap_coverage_of_zero_inflated_lognormal_revenue():
    # most customers buy nothing; buyers' revenue is lognormal: the mean is exp(mu + s^2 / 2) q
    rng = np.random.default_rng(7)
    (q1, mu1), (q0, mu0), s, n1, n0 = (0.3, 3.2), (0.25, 3.0), 1.2, 400, 200
    truth = q1 * np.exp(mu1 + s**2 / 2) - q0 * np.exp(mu0 + s**2 / 2)
    covered = 0
    for rep in range(200):
        y1 = rng.binomial(1, q1, n1) * rng.lognormal(mu1, s, n1)
        y0 = rng.binomial(1, q0, n0) * rng.lognormal(mu0, s, n0)
        r = diff_means_bootstrap(y1, y0, n_boot=400, seed=rep)
        covered += r.low <= truth <= r.high
    assert 0.90 <= covered / 200 <= 0.98


def test_benjamini_hochberg_controls_false_flags_under_the_null():
    rng = np.random.default_rng(11)
    x1, x0 = rng.binomial(2000, 0.1, (200, 20)), rng.binomial(500, 0.1, (200, 20))
    p = diff_proportions(x1, 2000, x0, 500).p_value
    flagged = np.mean([benjamini_hochberg(row)[1].any() for row in p])
    unadjusted = np.mean((p < 0.05).any(axis=1))
    assert flagged <= 0.10 and unadjusted > 0.5  # without the adjustment most runs flag something


# six customers by falling score; Qini by hand: 0, 1, 1, 2, 2, 2, 1 at 0..6 targeted
Y = np.array([1, 0, 1, 0, 0, 1])
T = np.array([1, 0, 1, 0, 1, 0])
S = np.array([6.0, 5, 4, 3, 2, 1])


def test_qini_curve_by_hand():
    frac, inc = qini_curve(Y, T, S)
    np.testing.assert_allclose(frac, np.arange(7) / 6)
    np.testing.assert_allclose(inc, [0, 1, 1, 2, 2, 2, 1])
    grid, binned = qini_curve(Y, T, S, bins=3)
    np.testing.assert_allclose(grid, [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(binned, [0, 1, 2, 1])
    # tied scores are targeted together: one cut after the first four
    frac, inc = qini_curve(Y, T, np.array([1.0, 1, 1, 1, 0, 0]))
    np.testing.assert_allclose(frac, [0, 4 / 6, 1])
    np.testing.assert_allclose(inc, [0, 2, 1])


def test_qini_coefficient_by_hand():
    # model area 8.5/6, random line 3/6, perfect (treated responders first) 9.5/6
    assert qini_coefficient(Y, T, S) == pytest.approx(5.5 / 6.5)
    assert qini_coefficient(Y, T, np.where(T == 1, Y, -Y)) == pytest.approx(1.0)


def _uplift_world(seed: int, n: int = 4000):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=n)
    tau = 0.2 * x - 0.05  # the true uplift: negative for a fifth of the customers
    t = rng.binomial(1, 0.5, n)
    y = rng.binomial(1, 0.1 + t * np.clip(tau, -0.1, None) + 0.1 * x)
    return y, t, tau, rng


def test_qini_true_uplift_beats_random_and_random_is_near_zero():
    coefs = []
    for seed in range(30):
        y, t, tau, rng = _uplift_world(seed)
        coefs.append(qini_coefficient(y, t, rng.uniform(size=y.size)))
        assert qini_coefficient(y, t, tau) > coefs[-1]
    coefs = np.array(coefs)
    assert abs(coefs.mean()) < 3 * coefs.std() / np.sqrt(coefs.size) + 0.01
    assert abs(coefs.mean()) < 0.05


def test_qini_interval_of_a_random_score_covers_zero_and_the_true_uplift_is_above_it():
    covers = 0
    for seed in range(20):
        y, t, tau, rng = _uplift_world(seed)
        random_iv = qini_coefficient_interval(y, t, rng.uniform(size=y.size), n_boot=60, seed=seed)
        assert random_iv.low < random_iv.estimate < random_iv.high and random_iv.p_value is None
        covers += random_iv.low < 0 < random_iv.high
    assert covers >= 17  # 95% intervals: 19 of 20 expected
    true_iv = qini_coefficient_interval(y, t, tau, n_boot=100, seed=1)
    assert true_iv.estimate == pytest.approx(qini_coefficient(y, t, tau))
    assert true_iv.low > 0
    assert true_iv == qini_coefficient_interval(y, t, tau, n_boot=100, seed=1)


def test_incremental_at_top_by_hand():
    # top 5 by score: 3 treated (2 respond), 2 control (none); top 10: 5 treated (3), 5 control (1);
    # bottom 10: 5 treated (1), 5 control (1). Overall: 4/10 treated vs 2/10 control respond.
    t = np.array([1, 1, 1, 0, 0, 1, 1, 0, 0, 0] + [1] * 5 + [0] * 5)
    y = np.array([1, 1, 0, 0, 0, 1, 0, 1, 0, 0] + [1, 0, 0, 0, 0] + [1, 0, 0, 0, 0])
    score = np.arange(20, 0, -1.0)
    top25, top50 = incremental_at_top(y, t, score, fractions=(0.25, 0.5))
    assert (top25.n_targeted, top25.n_treated, top25.n_control) == (5, 3, 2)
    assert top25.uplift.estimate == pytest.approx(2 / 3)
    assert top25.model_incremental.estimate == pytest.approx(5 * 2 / 3)
    assert top25.random_incremental.estimate == pytest.approx(5 * 0.2)
    assert (top50.n_targeted, top50.n_treated, top50.n_control) == (10, 5, 5)
    assert top50.model_incremental.estimate == pytest.approx(10 * (3 / 5 - 1 / 5))
    assert top50.random_incremental.estimate == pytest.approx(10 * 0.2)
    within = diff_proportions(3, 5, 1, 5)
    assert (top50.model_incremental.low, top50.model_incremental.high) == pytest.approx(
        (10 * within.low, 10 * within.high)
    )


def test_incremental_scales_the_interval_by_the_treated_count():
    lift = diff_proportions(56, 70, 48, 80)
    inc = incremental(lift, 10_000)
    assert (inc.estimate, inc.low, inc.high) == pytest.approx((2000.0, 524.3147240236, 3338.7265403691))
    assert inc.p_value == lift.p_value
    arr = incremental(
        Interval(np.array([0.1, 0.2]), np.array([0.0, 0.1]), np.array([0.2, 0.3]), None), [10, 100]
    )
    np.testing.assert_allclose(arr.estimate, [1.0, 20.0])
    np.testing.assert_allclose(arr.high, [2.0, 30.0])


def test_welch_of_two_constant_groups_is_their_difference_without_a_test():
    # a campaign where nobody bought: no sampling variation, no division by zero
    iv = diff_means_welch(np.zeros(50), np.zeros(20))
    assert (iv.estimate, iv.low, iv.high) == (0.0, 0.0, 0.0) and np.isnan(iv.p_value)
    iv = diff_means_welch(np.full(5, 3.0), np.full(4, 1.0))
    assert (iv.estimate, iv.low, iv.high) == (2.0, 2.0, 2.0)


def test_design_effect_counts_a_customer_repeated_k_times_once():
    from kundenwert.models.lift import design_effect

    rng = np.random.default_rng(8)
    y = (rng.random(2_000) < 0.1).astype(float)
    t = rng.random(2_000) < 0.8
    ids = np.arange(2_000)
    assert design_effect(y, t, ids) == 1.0  # every row its own customer
    # every customer's row four times over (the same outcome, the same group): four times the variance
    k = design_effect(np.repeat(y, 4), np.repeat(t, 4), np.repeat(ids, 4))
    assert k == pytest.approx(4.0, rel=0.01)
    # rows of one customer that are independent draws carry no design effect to speak of
    k = design_effect((rng.random(8_000) < 0.1).astype(float), np.repeat(t, 4), np.repeat(ids, 4))
    assert 1.0 <= k < 1.2
