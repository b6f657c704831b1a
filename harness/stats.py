"""Confidence intervals and paired tests for per-item scores of a teacher and its students.

Every interval is a seeded percentile bootstrap (numpy's default_rng(seed)), vectorised through a matrix of
resampled indices. Paired statistics resample ITEMS jointly (one index matrix for all arrays), so the
correlation between teacher and student on the same item is kept. With `clusters` (e.g. items that share
one prompt), whole clusters are resampled and each resample's mean is weighted by item count.

Undefined quantities (a ratio whose denominator is not positive or is 0) give an Estimate with value None
and a note saying why, never a NaN or a crash. NaN scores are dropped (pairwise for paired statistics) and
the count dropped is noted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from harness.errors import HarnessError

# Largest index matrix drawn at once (entries); bounds memory for any number of items.
_MAX_DRAWS = 2_000_000


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval; None values when undefined (see note)."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int = 0  # items used (after dropping NaN)
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class McNemarResult:
    """Paired right/wrong outcomes of teacher and student on the same items, and the exact test."""

    both_right: int
    teacher_only: int  # teacher right, student wrong
    student_only: int  # student right, teacher wrong
    neither: int
    p_value: float  # two-sided exact binomial test on the discordant pairs
    n: int

    def table(self) -> list[list[int]]:
        """Rows: teacher right / wrong; columns: student right / wrong."""
        return [[self.both_right, self.teacher_only], [self.student_only, self.neither]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantiles(values: np.ndarray, qs: Sequence[float]) -> list[float]:
    """Percentiles (0-100) of the non-NaN values; no interpolation when infinities are present.

    Linear interpolation between a finite value and inf gives NaN, so with any inf the nearest-rank
    ("inverted_cdf") method is used instead. Empty input gives NaN for every percentile.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        return [float("nan")] * len(qs)
    if np.isfinite(x).all():
        return [float(v) for v in np.percentile(x, list(qs), method="linear")]
    return [float(v) for v in np.percentile(x, list(qs), method="inverted_cdf")]


def bootstrap_group_means(
    sums: np.ndarray, counts: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> np.ndarray:
    """Bootstrap replicates of weighted means: resample groups (columns) with replacement.

    sums: (m, G) per-group sums of m quantities; counts: (G,) items per group. Returns (n_boot, m):
    for each replicate, sum of the drawn groups' sums / sum of their counts. Drawn in blocks of
    replicates so the index matrix never exceeds ~2M entries.
    """
    sums = np.atleast_2d(np.asarray(sums, dtype=np.float64))
    counts = np.asarray(counts, dtype=np.float64)
    n_groups = counts.shape[0]
    if n_boot < 1 or n_groups < 1 or sums.shape[1] != n_groups:
        raise HarnessError(
            f"bootstrap needs n_boot >= 1 and >= 1 group, got n_boot={n_boot}, groups={n_groups}"
        )
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, sums.shape[0]))
    block = max(1, _MAX_DRAWS // n_groups)
    # Finite sums: count how often each group was drawn and take a matrix product (one pass over the
    # index matrix, whatever the number of quantities). An infinite sum must only count when drawn
    # (0 * inf is NaN), so then the drawn groups are gathered instead. Same draws either way.
    finite = bool(np.isfinite(sums).all())
    for lo in range(0, n_boot, block):
        hi = min(n_boot, lo + block)
        idx = rng.integers(0, n_groups, size=(hi - lo, n_groups))
        with np.errstate(invalid="ignore", divide="ignore"):
            if finite:
                offsets = (np.arange(hi - lo) * n_groups)[:, None]
                drawn = np.bincount((idx + offsets).ravel(), minlength=(hi - lo) * n_groups)
                drawn = drawn.reshape(hi - lo, n_groups).astype(np.float64)
                out[lo:hi] = (drawn @ sums.T) / (drawn @ counts)[:, None]
            else:
                out[lo:hi] = sums[:, idx].sum(axis=-1).T / counts[idx].sum(axis=-1)[:, None]
    return out


def _check_settings(n_boot: int, confidence: float) -> None:
    if not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise HarnessError(f"n_boot={n_boot!r} is invalid: use a whole number of bootstrap resamples >= 1")
    if not 0.0 < confidence < 1.0:
        raise HarnessError(f"confidence={confidence!r} is invalid: use a level in (0, 1), e.g. 0.95")


def _stack(arrays: Sequence[Any], names: Sequence[str]) -> np.ndarray:
    stacked = [np.asarray(a, dtype=np.float64).ravel() for a in arrays]
    lengths = {len(a) for a in stacked}
    if len(lengths) > 1:
        shown = ", ".join(f"{name}={len(a)}" for name, a in zip(names, stacked, strict=True))
        raise HarnessError(f"paired scores must cover the same items, got lengths {shown}")
    return np.stack(stacked)


def _groups(scores: np.ndarray, clusters: Any | None) -> tuple[np.ndarray, np.ndarray]:
    """(m, G) per-group sums and (G,) counts; every item is its own group without clusters."""
    if clusters is None:
        return scores, np.ones(scores.shape[1])
    _, inverse = np.unique(np.asarray(clusters).ravel(), return_inverse=True)
    counts = np.bincount(inverse).astype(np.float64)
    sums = np.stack([np.bincount(inverse, weights=row, minlength=counts.size) for row in scores])
    return sums, counts


def _bootstrap(
    arrays: Sequence[Any],
    names: Sequence[str],
    statistic: Callable[[np.ndarray], np.ndarray],
    undefined_note: str,
    clusters: Any | None,
    n_boot: int,
    seed: int,
    confidence: float,
) -> Estimate:
    """statistic maps (r, m) means -> (r,) values (NaN where undefined); CI from its bootstrap replicates."""
    _check_settings(n_boot, confidence)
    scores = _stack(arrays, names)
    keep = ~np.isnan(scores).any(axis=0)
    notes = [] if keep.all() else [f"{int((~keep).sum())} items with a NaN score left out"]
    if clusters is not None:
        cluster_ids = np.asarray(clusters).ravel()
        if cluster_ids.shape[0] != scores.shape[1]:
            raise HarnessError(
                f"clusters has {cluster_ids.shape[0]} ids for {scores.shape[1]} items: one id per item"
            )
        clusters = cluster_ids[keep]
    scores = scores[:, keep]
    n = int(scores.shape[1])
    if n == 0:
        return Estimate(None, None, None, 0, "; ".join([*notes, "no items to score"]))
    sums, counts = _groups(scores, clusters)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = float(statistic((sums.sum(axis=1) / counts.sum())[None, :])[0])
    if not np.isfinite(value):
        return Estimate(None, None, None, n, "; ".join([*notes, undefined_note]))
    if counts.size < 2:
        return Estimate(value, None, None, n, "; ".join([*notes, "one item (or cluster): no interval"]))
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = statistic(bootstrap_group_means(sums, counts, n_boot, seed))
    dropped = int((~np.isfinite(replicates)).sum())
    if dropped:
        notes.append(
            f"{dropped} of {n_boot} resamples undefined ({undefined_note}) and left out of the interval"
        )
    alpha = 100.0 * (1.0 - confidence) / 2.0
    low, high = quantiles(replicates[np.isfinite(replicates)], [alpha, 100.0 - alpha])
    if np.isnan(low):
        return Estimate(value, None, None, n, "; ".join(notes))
    return Estimate(value, low, high, n, "; ".join(notes) or None)


def bootstrap_mean_ci(
    scores: Any, clusters: Any | None = None, *, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> Estimate:
    """Mean of per-item scores with a percentile-bootstrap CI (over clusters when cluster ids are given)."""
    return _bootstrap(
        [scores], ["scores"], lambda m: m[:, 0], "no finite mean", clusters, n_boot, seed, confidence
    )


def paired_bootstrap_diff(
    a: Any,
    b: Any,
    clusters: Any | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """mean(a) - mean(b) on the same items, items resampled jointly."""
    return _bootstrap(
        [a, b],
        ["a", "b"],
        lambda m: m[:, 0] - m[:, 1],
        "no finite difference",
        clusters,
        n_boot,
        seed,
        confidence,
    )


def gain(
    scores_k: Any,
    scores_0: Any,
    clusters: Any | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """Gain of a variant over its baseline on the same items (k shots vs 0, CoT vs direct), paired."""
    return paired_bootstrap_diff(
        scores_k, scores_0, clusters, n_boot=n_boot, seed=seed, confidence=confidence
    )


def _ratio(num: np.ndarray, den: np.ndarray, positive_only: bool) -> np.ndarray:
    bad = den <= 0 if positive_only else den == 0
    return np.where(bad, np.nan, num / np.where(bad, 1.0, den))


def paired_bootstrap_ratio(
    student: Any,
    teacher: Any,
    clusters: Any | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """Retention mean(student) / mean(teacher), items resampled jointly; undefined if teacher mean is 0."""
    return _bootstrap(
        [student, teacher],
        ["student", "teacher"],
        lambda m: _ratio(m[:, 0], m[:, 1], positive_only=False),
        "teacher mean is 0: retention undefined",
        clusters,
        n_boot,
        seed,
        confidence,
    )


def retention_of_gain(
    student_k: Any,
    student_0: Any,
    teacher_k: Any,
    teacher_0: Any,
    clusters: Any | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """Student gain / teacher gain on the same items; undefined when the teacher gain is not positive."""
    return _bootstrap(
        [student_k, student_0, teacher_k, teacher_0],
        ["student_k", "student_0", "teacher_k", "teacher_0"],
        lambda m: _ratio(m[:, 0] - m[:, 1], m[:, 2] - m[:, 3], positive_only=True),
        "teacher gain is not positive",
        clusters,
        n_boot,
        seed,
        confidence,
    )


def gap_closed(
    student: Any,
    base: Any,
    teacher: Any,
    clusters: Any | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """(S - B) / (T - B): share of the base-to-teacher gap the student closed; undefined when T <= B."""
    return _bootstrap(
        [student, base, teacher],
        ["student", "base", "teacher"],
        lambda m: _ratio(m[:, 0] - m[:, 1], m[:, 2] - m[:, 1], positive_only=True),
        "teacher is not better than the base",
        clusters,
        n_boot,
        seed,
        confidence,
    )


def chance_corrected_retention(
    student: Any,
    teacher: Any,
    chance: float,
    clusters: Any | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """(S - c) / (T - c) with c the suite's chance score; undefined when the teacher is not above chance.

    Plain retention flatters a student on easy-to-guess tasks (a random guesser keeps half of a two-way
    task); subtracting chance from both scores measures the share of above-chance skill that was kept.
    """
    c = float(chance)
    if not np.isfinite(c):
        raise HarnessError(f"chance={chance!r} is invalid: give the suite's chance score as a finite number")
    return _bootstrap(
        [student, teacher],
        ["student", "teacher"],
        lambda m: _ratio(m[:, 0] - c, m[:, 1] - c, positive_only=True),
        "teacher is not above chance",
        clusters,
        n_boot,
        seed,
        confidence,
    )


def _outcomes(name: str, values: Any) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if not np.isin(x[~np.isnan(x)], (0.0, 1.0)).all():
        raise HarnessError(
            f"McNemar needs right/wrong outcomes: {name} holds values other than 0/1 (or True/False)"
        )
    return x


def mcnemar(teacher_correct: Any, student_correct: Any) -> McNemarResult:
    """Exact McNemar test: two-sided binomial test (p = 1/2) on the discordant pairs; NaN pairs dropped."""
    from scipy.stats import binomtest  # lazy: scipy.stats takes ~0.5 s to import

    t = _outcomes("teacher_correct", teacher_correct)
    s = _outcomes("student_correct", student_correct)
    if t.shape != s.shape:
        raise HarnessError(f"paired outcomes must cover the same items, got {t.shape[0]} and {s.shape[0]}")
    keep = ~(np.isnan(t) | np.isnan(s))
    t, s = t[keep].astype(bool), s[keep].astype(bool)
    teacher_only, student_only = int((t & ~s).sum()), int((s & ~t).sum())
    discordant = teacher_only + student_only
    p_value = 1.0 if discordant == 0 else float(binomtest(teacher_only, discordant, 0.5).pvalue)
    return McNemarResult(
        both_right=int((t & s).sum()),
        teacher_only=teacher_only,
        student_only=student_only,
        neither=int((~t & ~s).sum()),
        p_value=min(1.0, p_value),
        n=int(t.size),
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order.

    The i-th smallest p is multiplied by (m - i + 1), a running maximum keeps the order, and values
    are capped at 1: the same numbers as statsmodels' multipletests(method="holm").
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if p.size == 0:
        return []
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise HarnessError("Holm correction needs p-values in [0, 1], got NaN or a value outside")
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((p.size - np.arange(p.size)) * p[order]))
    out = np.empty(p.size)
    out[order] = adjusted
    return [float(v) for v in out]
