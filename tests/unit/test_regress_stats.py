"""The gate's statistics, both tails, against independent computations (statsmodels, scipy, by hand).

drop = baseline - current; non-inferiority: H0 drop >= margin vs H1 drop < margin (p_noninferior);
regression: H0 drop <= margin vs H1 drop > margin (p_worse).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from harness.errors import HarnessError
from harness.regress import (
    binary_noninferiority_p,
    binary_regression_p,
    bootstrap_noninferiority_p,
    bootstrap_regression_p,
    ni_items_needed,
    paired_binary_test,
    paired_bootstrap_test,
    tango_z,
)

Z95 = 1.6448536269514722


def _pairs(n10: int, n01: int, n: int) -> tuple[list[float], list[float]]:
    """Paired 0/1 outcomes with n10 items lost, n01 gained, the rest right in both runs."""
    m = n - n10 - n01
    return [1.0] * n10 + [0.0] * n01 + [1.0] * m, [0.0] * n10 + [1.0] * n01 + [1.0] * m


def _tango_reference(n10: int, n01: int, n: int, d: float) -> float:
    """Tango's Z with the restricted MLE found numerically (independent of the closed form)."""
    from scipy.optimize import minimize_scalar

    m = n - n10 - n01

    def nll(p: float) -> float:
        cells = [(n10, p + d), (n01, p), (m, 1 - 2 * p - d)]
        return -sum(k * math.log(q) for k, q in cells if k)

    lo, hi = max(0.0, -d) + 1e-12, (1 - d) / 2 - 1e-12
    p01 = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-13}).x
    return (n10 - n01 - n * d) / math.sqrt(n * (2 * p01 + d * (1 - d)))


# -- paired proportions: Tango's score test ----------------------------------------------------------
def test_tango_by_hand_both_tails() -> None:
    """n = 100, 10 items lost, none gained, margin 0.02: p01~ = 0.031, Z = 8 / sqrt(8.16) = 2.8005."""
    baseline, current = _pairs(10, 0, 100)
    z = 8 / math.sqrt(8.16)
    assert binary_regression_p(baseline, current, 0.02) == pytest.approx(float(norm.sf(z)), rel=1e-9)
    assert binary_noninferiority_p(baseline, current, 0.02) == pytest.approx(float(norm.cdf(z)), rel=1e-9)
    assert binary_regression_p(baseline, current, 0.02) == pytest.approx(0.00255, abs=2e-5)


@pytest.mark.parametrize(
    ("n10", "n01", "n", "d"), [(17, 6, 120, 0.05), (3, 9, 80, 0.02), (0, 0, 300, 0.02), (1, 0, 40, 0.1)]
)
def test_tango_matches_a_numeric_restricted_mle_in_both_tails(n10: int, n01: int, n: int, d: float) -> None:
    expected = _tango_reference(n10, n01, n, d)
    b, c = _pairs(n10, n01, n)
    assert tango_z(n10, n01, n, d) == pytest.approx(expected, rel=1e-6, abs=1e-9)
    tested = paired_binary_test(b, c, d)
    assert tested.p_worse == pytest.approx(float(norm.sf(expected)), rel=1e-6)
    assert tested.p_noninferior == pytest.approx(float(norm.cdf(expected)), rel=1e-6)


def test_tango_for_an_improvement_swaps_the_runs() -> None:
    """A negative drop (the score interval's lower side) is the mirrored test."""
    assert tango_z(3, 12, 100, -0.04) == pytest.approx(_tango_reference(3, 12, 100, -0.04), rel=1e-6)
    assert tango_z(3, 12, 100, -0.04) == pytest.approx(-tango_z(12, 3, 100, 0.04), rel=1e-12)


def test_tango_at_margin_zero_is_mcnemar_score_test_both_tails() -> None:
    """With no margin, Z^2 is McNemar's chi-square without continuity correction (statsmodels)."""
    from statsmodels.stats.contingency_tables import mcnemar

    rng = np.random.default_rng(3)
    b = (rng.random(200) < 0.7).astype(float)
    c = np.where(rng.random(200) < 0.15, 1 - b, b)
    n10, n01 = int(((b == 1) & (c == 0)).sum()), int(((b == 0) & (c == 1)).sum())
    table = [[int(((b == 1) & (c == 1)).sum()), n10], [n01, int(((b == 0) & (c == 0)).sum())]]
    two_sided = mcnemar(table, exact=False, correction=False).pvalue
    tested = paired_binary_test(b, c, 0.0)
    worse, better = (two_sided / 2, 1 - two_sided / 2) if n10 > n01 else (1 - two_sided / 2, two_sided / 2)
    assert tested.p_worse == pytest.approx(worse, rel=1e-9)
    assert tested.p_noninferior == pytest.approx(better, rel=1e-9)


def test_tango_agrees_with_a_normal_test_of_the_paired_difference_with_a_shifted_null() -> None:
    """Large n: Tango's restricted variance is close to the observed one, so statsmodels' one-sample
    z-test of the per-item differences against the margin gives nearly the same p in both tails."""
    from statsmodels.stats.weightstats import ztest

    rng = np.random.default_rng(11)
    n = 4000
    u = rng.random(n)
    b = np.where(u < 0.07, 1.0, np.where(u < 0.12, 0.0, 1.0))  # 7% lost, 5% gained: drop 0.02
    c = np.where(u < 0.07, 0.0, np.where(u < 0.12, 1.0, 1.0))
    for margin in (0.01, 0.03):
        tested = paired_binary_test(b, c, margin)
        assert tested.p_noninferior == pytest.approx(
            ztest(b - c, value=margin, alternative="smaller")[1], abs=0.01
        )
        assert tested.p_worse == pytest.approx(ztest(b - c, value=margin, alternative="larger")[1], abs=0.01)


def test_tango_upper_bound_inverts_the_test() -> None:
    """drop_upper solves Z(d) = -z_0.95; just past it the non-inferiority test rejects, just before not."""
    b, c = _pairs(9, 4, 150)
    tested = paired_binary_test(b, c, 0.02)
    assert tango_z(9, 4, 150, tested.drop_upper) == pytest.approx(-Z95, abs=1e-8)
    assert 5 / 150 < tested.drop_upper < 0.2
    assert binary_noninferiority_p(b, c, tested.drop_upper + 1e-4) < 0.05
    assert binary_noninferiority_p(b, c, tested.drop_upper - 1e-4) > 0.05


def test_identical_outputs_finite_statistic_and_the_items_they_need() -> None:
    """No discordant pair: p01~ = 0, Z = -sqrt(n m / (1 - m)) (finite); it shows non-inferiority at
    alpha 0.05 only from n > 2.706 (1 - m) / m: 133 items at a 2-point margin, 52 at 5 points."""
    for n, margin in ((24, 0.02), (133, 0.02), (600, 0.02), (52, 0.05)):
        b, _ = _pairs(0, 0, n)
        expected = -math.sqrt(n * margin / (1 - margin))
        assert tango_z(0, 0, n, margin) == pytest.approx(expected, rel=1e-12)
        tested = paired_binary_test(b, b, margin)
        assert tested.p_noninferior == pytest.approx(float(norm.cdf(expected)), rel=1e-9)
        assert tested.p_worse == pytest.approx(float(norm.sf(expected)), rel=1e-9)
        assert tested.drop_upper == pytest.approx(Z95**2 / (n + Z95**2), rel=1e-6)  # the score bound
    assert paired_binary_test(*_pairs(0, 0, 24), 0.02).p_noninferior == pytest.approx(0.2420, abs=1e-4)
    assert paired_binary_test(*_pairs(0, 0, 133), 0.02).p_noninferior < 0.05
    assert paired_binary_test(*_pairs(0, 0, 132), 0.02).p_noninferior > 0.05
    assert paired_binary_test(*_pairs(0, 0, 600), 0.02).p_noninferior < 1e-3  # Phi(-3.5)
    nothing = paired_binary_test(*_pairs(0, 0, 50), 0.0)  # 0/0: no evidence either way
    assert (nothing.p_noninferior, nothing.p_worse) == (1.0, 1.0)
    with pytest.raises(HarnessError, match="0/1"):
        paired_binary_test([1.0, 0.5], [1.0, 1.0], 0.02)


def _simulate(n: int, p10: float, p01: float, margin: float, sims: int, seed: int, tail: str) -> float:
    """Rejection rate at alpha 0.05 of one tail of the binary test on simulated paired outcomes."""
    rng = np.random.default_rng(seed)
    rejected = 0
    for _ in range(sims):
        u = rng.random(n)
        n10, n01 = int((u < p10).sum()), int(((u >= p10) & (u < p10 + p01)).sum())
        z = tango_z(n10, n01, n, margin)
        rejected += (norm.sf(z) if tail == "worse" else norm.cdf(z)) < 0.05
    return rejected / sims


def test_size_at_the_margin_and_power_in_both_tails() -> None:
    """GSM8K-sized (n = 1319), margin 2 points. At a true drop of exactly 2 points each tail rejects
    about 5% of the time. A 5-point drop (10% lost, 5% gained) is flagged as worse with the power of a
    one-sided paired t-test (statsmodels TTestPower, about 0.88); no drop with 10% discordance is
    shown non-inferior with about the power ni_items_needed plans for (1319 < 1578 items: ~0.74)."""
    from statsmodels.stats.power import TTestPower

    for tail, seed in (("worse", 0), ("ni", 2)):
        assert 0.02 <= _simulate(1319, 0.06, 0.04, 0.02, sims=800, seed=seed, tail=tail) <= 0.085
    p10, p01 = 0.10, 0.05
    mean, var = p10 - p01, p10 + p01 - (p10 - p01) ** 2
    reference = TTestPower().power(
        effect_size=(mean - 0.02) / math.sqrt(var), nobs=1319, alpha=0.05, alternative="larger"
    )
    assert reference == pytest.approx(0.88, abs=0.03)
    assert _simulate(1319, p10, p01, 0.02, sims=800, seed=1, tail="worse") == pytest.approx(
        reference, abs=0.05
    )
    planned = norm.cdf(math.sqrt(1319 / ni_items_needed(0.1, 0.02)) * (Z95 + norm.ppf(0.8)) - Z95)
    assert _simulate(1319, 0.05, 0.05, 0.02, sims=800, seed=3, tail="ni") == pytest.approx(planned, abs=0.05)


@pytest.mark.parametrize(("discordance", "margin"), [(0.1, 0.05), (0.2, 0.05), (0.1, 0.02)])
def test_items_needed_reach_80_percent_power_in_simulation(discordance: float, margin: float) -> None:
    n = ni_items_needed(discordance, margin)
    power = _simulate(n, discordance / 2, discordance / 2, margin, sims=1000, seed=int(n), tail="ni")
    assert power == pytest.approx(0.8, abs=0.045)


def test_items_needed_table() -> None:
    """The README's table (alpha 0.05 one-sided, 80% power, no true drop)."""
    table = {(d, m): ni_items_needed(d, m) for d in (0.0, 0.05, 0.1, 0.2) for m in (0.02, 0.05, 0.1)}
    assert table[(0.0, 0.02)] == 133 and table[(0.0, 0.05)] == 52
    assert table[(0.1, 0.02)] == 1578 and table[(0.2, 0.05)] == 507
    assert table[(0.1, 0.05)] < table[(0.2, 0.05)] < table[(0.2, 0.02)]
    with pytest.raises(HarnessError, match="drop < margin"):
        ni_items_needed(0.1, 0.02, drop=0.03)


# -- the bootstrap ------------------------------------------------------------------------------------
def _continuous(n: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    b = rng.normal(0.6, 0.2, n)
    c = b - shift + rng.normal(0, 0.1, n)
    ones = np.ones(n)
    return np.stack([b, ones]), np.stack([c, ones]), b - c


def test_bootstrap_agrees_with_one_sided_paired_t_tests_in_both_tails() -> None:
    from scipy.stats import t as student_t
    from scipy.stats import ttest_1samp

    b, c, diff = _continuous(400, 0.03, 5)
    for margin in (0.01, 0.04):
        tested = paired_bootstrap_test(b, c, margin, n_boot=8000, seed=1)
        assert tested.p_worse == pytest.approx(
            ttest_1samp(diff, margin, alternative="greater").pvalue, abs=0.01
        )
        assert tested.p_noninferior == pytest.approx(
            ttest_1samp(diff, margin, alternative="less").pvalue, abs=0.01
        )
    upper = diff.mean() + student_t.ppf(0.95, diff.size - 1) * diff.std(ddof=1) / math.sqrt(diff.size)
    assert tested.drop_upper == pytest.approx(upper, abs=0.002)
    assert bootstrap_regression_p(b, c, 0.01, n_boot=8000, seed=1) < 0.05  # a 3-point drop, 1-point margin
    assert bootstrap_noninferiority_p(b, c, 0.04, n_boot=8000, seed=1) < 0.05  # ... within a 4-point one


def test_bootstrap_of_identical_runs() -> None:
    """Every replicate's drop is exactly 0: below any margin > 0 (p = 1 / (B + 1)), never above it."""
    x = np.stack([np.linspace(0, 1, 50), np.ones(50)])
    tested = paired_bootstrap_test(x, x.copy(), 0.02, n_boot=4000)
    assert tested.p_noninferior == pytest.approx(1 / 4001) and tested.p_worse == 1.0
    assert tested.drop_upper == 0.0
    assert bootstrap_regression_p(x, x.copy(), 0.0) == 1.0
    assert bootstrap_noninferiority_p(x, x.copy(), 0.0) == 1.0  # margin 0: a tie is not "better"


def test_lower_is_better_metrics_regress_upwards() -> None:
    b = np.stack([np.full(30, 0.5), np.ones(30)])
    c = np.stack([np.full(30, 0.9) + np.linspace(-0.01, 0.01, 30), np.ones(30)])
    assert bootstrap_regression_p(b, c, 0.05, higher_is_better=False) < 0.01
    assert bootstrap_noninferiority_p(b, c, 0.05, higher_is_better=False) == 1.0
    assert bootstrap_regression_p(b, c, 0.05, higher_is_better=True) == 1.0
    assert bootstrap_noninferiority_p(b, c, 0.05, higher_is_better=True) < 0.01
