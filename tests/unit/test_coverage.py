"""Coverage of the 95% bootstrap intervals on synthetic data whose true values are known.

Each test draws 1,000 seeded data sets and counts how often the interval holds the truth: a correct
95% interval does so in 93-97% of them (the binomial standard error of the count is 0.7 points).
The teacher-student pairs are correlated Bernoulli outcomes with a fixed 2x2 table, as right/wrong
items of two models on the same questions are. Seeded, so the counts are the same on every run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from harness import stats

pytestmark = pytest.mark.slow

REPS, N_ITEMS, N_BOOT = 1000, 200, 1000
# P(both right), P(teacher only), P(student only), P(neither): teacher 0.70, student 0.60, correlated
CELLS = (0.55, 0.15, 0.05, 0.25)
TEACHER, STUDENT = CELLS[0] + CELLS[1], CELLS[0] + CELLS[2]
COVERAGE_RANGE = (0.93, 0.97)


def _pairs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(student, teacher) right/wrong outcomes on N_ITEMS shared items."""
    cell = rng.choice(4, size=N_ITEMS, p=CELLS)
    return ((cell == 0) | (cell == 2)).astype(float), ((cell == 0) | (cell == 1)).astype(float)


def _coverage(
    truth: float, interval: Callable[[np.random.Generator, int], stats.Estimate], seed: int
) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for rep in range(REPS):
        est = interval(rng, rep)
        assert est.ci_low is not None and est.ci_high is not None
        hits += est.ci_low <= truth <= est.ci_high
    return hits / REPS


def _assert_covers(coverage: float) -> None:
    low, high = COVERAGE_RANGE
    assert low <= coverage <= high, f"95% interval covered the truth in {coverage:.1%} of {REPS} data sets"


def test_paired_difference_interval_covers_95_percent() -> None:
    def interval(rng: np.random.Generator, rep: int) -> stats.Estimate:
        student, teacher = _pairs(rng)
        return stats.paired_bootstrap_diff(student, teacher, n_boot=N_BOOT, seed=rep)

    _assert_covers(_coverage(STUDENT - TEACHER, interval, seed=2024))


def test_retention_ratio_interval_covers_95_percent() -> None:
    def interval(rng: np.random.Generator, rep: int) -> stats.Estimate:
        student, teacher = _pairs(rng)
        return stats.paired_bootstrap_ratio(student, teacher, n_boot=N_BOOT, seed=rep)

    _assert_covers(_coverage(STUDENT / TEACHER, interval, seed=2025))


def test_chance_corrected_retention_interval_covers_95_percent() -> None:
    chance = 0.25

    def interval(rng: np.random.Generator, rep: int) -> stats.Estimate:
        student, teacher = _pairs(rng)
        return stats.chance_corrected_retention(student, teacher, chance, n_boot=N_BOOT, seed=rep)

    _assert_covers(_coverage((STUDENT - chance) / (TEACHER - chance), interval, seed=2026))


def test_gap_closed_interval_covers_95_percent() -> None:
    # The base is right with P 0.55 where the student is right, 0.175 where not: mean 0.40
    base_mean = STUDENT * 0.55 + (1 - STUDENT) * 0.175

    def interval(rng: np.random.Generator, rep: int) -> stats.Estimate:
        student, teacher = _pairs(rng)
        base = (rng.random(N_ITEMS) < np.where(student == 1, 0.55, 0.175)).astype(float)
        return stats.gap_closed(student, base, teacher, n_boot=N_BOOT, seed=rep)

    _assert_covers(_coverage((STUDENT - base_mean) / (TEACHER - base_mean), interval, seed=2027))


def test_clustered_instruction_accuracy_interval_covers_95_percent() -> None:
    """IFEval-like: 200 prompts of 1-4 instructions, each prompt easy or hard for all its instructions."""
    n_prompts, mean_ease = 200, 0.7

    def interval(rng: np.random.Generator, rep: int) -> stats.Estimate:
        sizes = rng.integers(1, 5, n_prompts)
        ease = rng.beta(3.5, 1.5, n_prompts)  # mean 0.7, independent of the prompt's size
        prompt = np.repeat(np.arange(n_prompts), sizes)
        verdicts = (rng.random(prompt.size) < ease[prompt]).astype(float)
        return stats.bootstrap_mean_ci(verdicts, prompt, n_boot=N_BOOT, seed=rep)

    _assert_covers(_coverage(mean_ease, interval, seed=7))
