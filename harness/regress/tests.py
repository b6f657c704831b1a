"""The gate's statistical tests: a one-sided paired test of a drop against a margin, both tails.

`drop` is how much worse the current run is than the baseline on the units both scored (baseline -
current for a higher-is-better metric, current - baseline for a lower-is-better one such as KL), and
`margin` >= 0 the drop tolerated. Every test here returns both one-sided p-values:

    p_noninferior   H0: drop >= margin (inferior)   vs  H1: drop < margin (non-inferior)
    p_worse         H0: drop <= margin              vs  H1: drop > margin (worse than the margin)

and `drop_upper`, the one-sided upper confidence bound of the drop at `confidence` (default 95%).
The unadjusted non-inferiority test rejects at level alpha exactly when the bound at confidence
1 - alpha is below the margin.

- Paired 0/1 outcomes (one per item): Tango's (1998) score statistic at drop = d,
      Z(d) = (n10 - n01 - n d) / sqrt(n (2 p01~ + d (1 - d))),
  n10 = items the baseline got right and the current run wrong, n01 the reverse, p01~ the maximum-
  likelihood estimate of P(01) restricted to p10 - p01 = d (the root of a quadratic). p_noninferior =
  Phi(Z(margin)), p_worse = 1 - Phi(Z(margin)); drop_upper solves Z(d) = -z_confidence (the score
  interval). With margin 0, Z^2 is McNemar's statistic without continuity correction.
  Zero discordant pairs (identical outputs): p01~ = 0 and Z(margin) = -sqrt(n margin / (1 - margin)),
  finite and negative, but below -1.645 only from n > 2.706 (1 - margin) / margin items (133 at a
  2-point margin): fewer agreeing items do not show non-inferiority, as a model that differs on 2% of
  all items would often agree on all of a few. Margin 0 and no discordant pair is 0/0, no evidence
  either way: both p-values are 1.
- Anything else (fractional scores, items clustered by prompt, KD tokens): a paired bootstrap over
  units or clusters, both runs drawing the same groups in every replicate:
      p_noninferior = (1 + #{drop* >= margin}) / (B + 1),   p_worse = (1 + #{drop* <= margin}) / (B + 1),
  drop_upper the `confidence` quantile of drop* (the inversion of the percentile interval). Identical
  runs give drop* = 0 in every replicate, so p_noninferior = 1 / (B + 1) for any margin > 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness import stats
from harness.errors import HarnessError

N_BOOT = 4000
_EDGE = 1e-9  # the score interval is searched on [-1 + _EDGE, 1 - _EDGE]


@dataclass(frozen=True)
class TailTest:
    """Both one-sided p-values of a drop against a margin, and the drop's upper confidence bound."""

    p_noninferior: float  # H0: drop >= margin
    p_worse: float  # H0: drop <= margin
    drop_upper: float  # one-sided upper bound of the drop at `confidence`
    confidence: float


def _z(confidence: float) -> float:
    from scipy.stats import norm

    if not 0.5 <= confidence < 1.0:
        raise HarnessError(f"confidence {confidence!r}: use a level in [0.5, 1), e.g. 0.95")
    return float(norm.ppf(confidence))


# -- paired proportions: Tango's score test -----------------------------------------------------------
def restricted_p01(n10: float, n01: float, n: float, d: float) -> float:
    """The MLE of P(baseline wrong, current right) under p10 - p01 = d, for 0 <= d < 1.

    The positive root of 2n p^2 + B p + C = 0, B = -n10 - n01 + (2n - n10 + n01) d,
    C = -n01 d (1 - d); written to avoid cancellation when B > 0. Only ratios matter, so counts may
    be fractions of n (n = 1) as well.
    """
    big_b = -n10 - n01 + (2 * n - n10 + n01) * d
    big_c = -n01 * d * (1 - d)
    root = math.sqrt(max(big_b * big_b - 8 * n * big_c, 0.0))
    p = -2 * big_c / (big_b + root) if big_b > 0 else (-big_b + root) / (4 * n)
    return min(max(p, 0.0), (1 - d) / 2)


def tango_z(n10: float, n01: float, n: float, d: float) -> float:
    """Tango's score statistic at drop = d in (-1, 1); large when the drop exceeds d.

    A negative d swaps the roles of the two runs (Z(n10, n01, d) = -Z(n01, n10, -d)). The 0/0 case
    (d = 0, no discordant pair) is 0, the limit from either side.
    """
    if n <= 0:
        raise HarnessError("tango_z needs at least one item")
    if not -1.0 < d < 1.0:
        raise HarnessError(f"drop {d!r} is outside (-1, 1)")
    if d < 0:
        return -tango_z(n01, n10, n, -d)
    variance = n * (2 * restricted_p01(n10, n01, n, d) + d * (1 - d))
    numerator = n10 - n01 - n * d
    if variance <= 0.0:  # d == 0 and n10 == n01 == 0 (else p01~ > 0 or d (1 - d) > 0)
        return 0.0
    return numerator / math.sqrt(variance)


def _tango_upper(n10: float, n01: float, n: float, z: float) -> float:
    """The largest drop d the score test at level z does not reject as too large: Z(d) = -z."""
    from scipy.optimize import brentq

    lo, hi = -1.0 + _EDGE, 1.0 - _EDGE
    if tango_z(n10, n01, n, hi) + z >= 0:
        return 1.0
    if tango_z(n10, n01, n, lo) + z <= 0:
        return -1.0
    return float(brentq(lambda d: tango_z(n10, n01, n, d) + z, lo, hi, xtol=1e-12))


def _binary_counts(baseline: Sequence[float], current: Sequence[float]) -> tuple[float, float, int]:
    b = np.asarray(baseline, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if b.shape != c.shape or not np.isin(b, (0.0, 1.0)).all() or not np.isin(c, (0.0, 1.0)).all():
        raise HarnessError("the paired proportions test needs paired 0/1 outcomes of equal length")
    return float(((b == 1) & (c == 0)).sum()), float(((b == 0) & (c == 1)).sum()), int(b.size)


def paired_binary_test(
    baseline: Sequence[float], current: Sequence[float], margin: float, *, confidence: float = 0.95
) -> TailTest:
    """Both tails of Tango's score test at drop = margin, and the score interval's upper bound."""
    from scipy.stats import norm

    n10, n01, n = _binary_counts(baseline, current)
    if not 0.0 <= margin < 1.0:
        raise HarnessError(f"margin {margin!r} is invalid for a proportion: use a value in [0, 1)")
    z_conf = _z(confidence)
    if n == 0:
        return TailTest(1.0, 1.0, 1.0, confidence)
    upper = _tango_upper(n10, n01, n, z_conf)
    if margin == 0.0 and n10 == n01 == 0:  # 0/0: no evidence either way
        return TailTest(1.0, 1.0, upper, confidence)
    z = tango_z(n10, n01, n, margin)
    return TailTest(float(norm.cdf(z)), float(norm.sf(z)), upper, confidence)


def binary_regression_p(baseline: Sequence[float], current: Sequence[float], margin: float) -> float:
    """One-sided p of H1 "drop > margin" for paired 0/1 outcomes (Tango's score test)."""
    return paired_binary_test(baseline, current, margin).p_worse


def binary_noninferiority_p(baseline: Sequence[float], current: Sequence[float], margin: float) -> float:
    """One-sided p of H1 "drop < margin" (non-inferiority) for paired 0/1 outcomes (Tango's score test)."""
    return paired_binary_test(baseline, current, margin).p_noninferior


# -- a paired bootstrap over groups -------------------------------------------------------------------
def paired_bootstrap_test(
    baseline: np.ndarray,
    current: np.ndarray,
    margin: float,
    *,
    higher_is_better: bool = True,
    n_boot: int = N_BOOT,
    seed: int = 0,
    confidence: float = 0.95,
) -> TailTest:
    """Both tails from a paired bootstrap over groups, and the percentile upper bound of the drop.

    baseline, current: (2, G) arrays of per-group (sum, count); both runs draw the same groups in every
    resample (one index matrix: bootstrap_group_means with the same seed and group count).
    """
    _z(confidence)
    b_rep = stats.bootstrap_group_means(baseline[0][None, :], baseline[1], n_boot, seed)[:, 0]
    c_rep = stats.bootstrap_group_means(current[0][None, :], current[1], n_boot, seed)[:, 0]
    with np.errstate(invalid="ignore"):
        drop = (b_rep - c_rep) if higher_is_better else (c_rep - b_rep)
    drop = drop[~np.isnan(drop)]
    if drop.size == 0:
        return TailTest(1.0, 1.0, math.inf, confidence)
    p_ni = (1 + np.count_nonzero(drop >= margin)) / (drop.size + 1)
    p_worse = (1 + np.count_nonzero(drop <= margin)) / (drop.size + 1)
    upper = float(np.quantile(drop, confidence, method="higher"))
    return TailTest(float(p_ni), float(p_worse), upper, confidence)


def bootstrap_regression_p(
    baseline: np.ndarray,
    current: np.ndarray,
    margin: float,
    *,
    higher_is_better: bool = True,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> float:
    """One-sided p of H1 "drop > margin" from a paired bootstrap over groups."""
    return paired_bootstrap_test(
        baseline, current, margin, higher_is_better=higher_is_better, n_boot=n_boot, seed=seed
    ).p_worse


def bootstrap_noninferiority_p(
    baseline: np.ndarray,
    current: np.ndarray,
    margin: float,
    *,
    higher_is_better: bool = True,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> float:
    """One-sided p of H1 "drop < margin" (non-inferiority) from a paired bootstrap over groups."""
    return paired_bootstrap_test(
        baseline, current, margin, higher_is_better=higher_is_better, n_boot=n_boot, seed=seed
    ).p_noninferior


# -- planning: items needed ---------------------------------------------------------------------------
def ni_items_needed(
    discordance: float, margin: float, *, drop: float = 0.0, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Items the paired-proportions non-inferiority test needs to reach `power` (normal approximation).

    discordance: the share of items on which the two runs disagree (either way); drop: the true drop
    (p10 - p01), below the margin. Under it, n10 - n01 ~ N(n drop, n (discordance - drop^2)) and the
    test rejects when Z(margin) < -z_(1-alpha), where the restricted p01~ tends to its value at the
    true cell shares: n = ((z_(1-alpha) sqrt(V0) + z_power sqrt(V1)) / (margin - drop))^2 with
    V0 = 2 p01~ + margin (1 - margin), V1 = discordance - drop^2.
    """
    if not 0.0 < margin < 1.0 or not margin > drop or not abs(drop) <= discordance <= 1.0:
        raise HarnessError(
            f"ni_items_needed: need 0 < margin < 1, drop < margin and |drop| <= discordance <= 1 "
            f"(got margin {margin}, drop {drop}, discordance {discordance})"
        )
    z_a, z_b = _z(1 - alpha), _z(power)
    p10, p01 = (discordance + drop) / 2, (discordance - drop) / 2
    v0 = 2 * restricted_p01(p10, p01, 1.0, margin) + margin * (1 - margin)
    v1 = discordance - drop * drop
    return math.ceil(((z_a * math.sqrt(v0) + z_b * math.sqrt(v1)) / (margin - drop)) ** 2)
