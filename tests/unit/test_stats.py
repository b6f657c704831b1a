"""Bootstrap intervals, paired statistics, McNemar, and per-token summaries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness import stats
from harness.errors import HarnessError
from harness.metrics.summary import histogram, summarize

MCNEMAR_CASES = json.loads((Path(__file__).parent / "cases" / "mcnemar_cases.json").read_text())["cases"]


def _outcomes(case: dict) -> tuple[np.ndarray, np.ndarray]:
    """Teacher/student right-wrong vectors realising a 2x2 table, shuffled."""
    pairs = (
        [(1, 1)] * case["both_right"]
        + [(1, 0)] * case["teacher_only"]
        + [(0, 1)] * case["student_only"]
        + [(0, 0)] * case["neither"]
    )
    arr = np.array(pairs, dtype=float).reshape(-1, 2)
    np.random.default_rng(0).shuffle(arr)
    return arr[:, 0], arr[:, 1]


@pytest.mark.parametrize("case", MCNEMAR_CASES)
def test_mcnemar_table_and_exact_p_value(case: dict) -> None:
    teacher, student = _outcomes(case)
    result = stats.mcnemar(teacher, student)
    assert result.table() == [
        [case["both_right"], case["teacher_only"]],
        [case["student_only"], case["neither"]],
    ]
    assert result.n == len(teacher)
    assert result.p_value == pytest.approx(case["p_value"], rel=1e-12)
    swapped = stats.mcnemar(student, teacher)
    assert swapped.p_value == pytest.approx(result.p_value, rel=1e-12)
    assert (swapped.teacher_only, swapped.student_only) == (result.student_only, result.teacher_only)


@pytest.mark.parametrize("case", MCNEMAR_CASES)
def test_mcnemar_matches_statsmodels(case: dict) -> None:
    tables = pytest.importorskip("statsmodels.stats.contingency_tables")
    teacher, student = _outcomes(case)
    expected = tables.mcnemar(stats.mcnemar(teacher, student).table(), exact=True).pvalue
    assert stats.mcnemar(teacher, student).p_value == pytest.approx(expected, rel=1e-10)


def test_mcnemar_input_handling() -> None:
    result = stats.mcnemar([True, True, False, np.nan], [True, False, False, True])
    assert result.table() == [[1, 1], [0, 1]] and result.n == 3
    with pytest.raises(HarnessError, match="0/1"):
        stats.mcnemar([0.5, 1.0], [1.0, 1.0])
    with pytest.raises(HarnessError, match="same items"):
        stats.mcnemar([1, 0, 1], [1, 0])


def test_bootstrap_mean_ci_basics_and_seeding() -> None:
    scores = np.random.default_rng(0).normal(2.0, 1.0, 60)
    est = stats.bootstrap_mean_ci(scores, n_boot=2000, seed=1)
    assert est.value == pytest.approx(scores.mean())
    assert est.ci_low < est.value < est.ci_high and est.n == 60 and est.note is None
    se = scores.std(ddof=1) / np.sqrt(60)
    assert est.ci_high - est.ci_low == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert stats.bootstrap_mean_ci(scores, n_boot=2000, seed=1) == est
    assert stats.bootstrap_mean_ci(scores, n_boot=2000, seed=2) != est
    narrow = stats.bootstrap_mean_ci(scores, n_boot=2000, seed=1, confidence=0.5)
    assert est.ci_low < narrow.ci_low < narrow.ci_high < est.ci_high


def test_bootstrap_group_means_equals_an_explicit_resample() -> None:
    sums, counts = np.array([[1.0, 5.0, 2.0, 7.0]]), np.array([1.0, 2.0, 1.0, 3.0])
    replicates = stats.bootstrap_group_means(sums, counts, n_boot=7, seed=3)
    idx = np.random.default_rng(3).integers(0, 4, size=(7, 4))
    expected = sums[0][idx].sum(1) / counts[idx].sum(1)
    np.testing.assert_allclose(replicates[:, 0], expected)


def test_bootstrap_ci_covers_the_true_mean_about_95_percent() -> None:
    rng = np.random.default_rng(42)
    data = rng.exponential(1.0, size=(300, 80))  # skewed scores, true mean 1
    hits = 0
    for i, sample in enumerate(data):
        est = stats.bootstrap_mean_ci(sample, n_boot=500, seed=i)
        hits += est.ci_low <= 1.0 <= est.ci_high
    assert 0.89 <= hits / len(data) <= 0.985


def test_clustered_bootstrap_accounts_for_shared_prompts() -> None:
    rng = np.random.default_rng(7)
    clusters = np.repeat(np.arange(25), 8)
    naive_hits = clustered_hits = 0
    for i in range(200):
        scores = rng.normal(0, 1, 25)[clusters] + rng.normal(0, 0.2, 200)  # items share a prompt effect
        naive = stats.bootstrap_mean_ci(scores, n_boot=400, seed=i)
        clustered = stats.bootstrap_mean_ci(scores, clusters, n_boot=400, seed=i)
        naive_hits += naive.ci_low <= 0.0 <= naive.ci_high
        clustered_hits += clustered.ci_low <= 0.0 <= clustered.ci_high
        assert clustered.value == pytest.approx(scores.mean())
    assert 0.88 <= clustered_hits / 200 <= 0.99
    assert naive_hits / 200 < 0.75, "ignoring clusters must undercover here"


def test_paired_resampling_keeps_the_pairing() -> None:
    teacher = np.random.default_rng(0).random(50)
    ratio = stats.paired_bootstrap_ratio(teacher * 0.8, teacher)
    assert ratio.value == pytest.approx(0.8) and ratio.ci_low == pytest.approx(0.8)
    assert ratio.ci_high == pytest.approx(0.8)
    diff = stats.paired_bootstrap_diff(teacher + 0.1, teacher)
    assert (diff.value, diff.ci_low, diff.ci_high) == pytest.approx((0.1, 0.1, 0.1))
    assert stats.gain(teacher + 0.1, teacher) == diff


def test_retention_with_real_spread() -> None:
    rng = np.random.default_rng(1)
    teacher = (rng.random(200) < 0.7).astype(float)
    student = teacher * (rng.random(200) < 0.8)
    est = stats.paired_bootstrap_ratio(student, teacher, seed=0)
    assert est.value == pytest.approx(student.mean() / teacher.mean())
    assert est.ci_low < est.value < est.ci_high <= 1.0


def test_retention_undefined_when_teacher_scores_zero() -> None:
    est = stats.paired_bootstrap_ratio([1.0, 0.0, 1.0], [0.0, 0.0, 0.0])
    assert est.value is None and est.ci_low is None and est.ci_high is None
    assert est.note is not None and "teacher mean is 0" in est.note


def test_retention_of_gain() -> None:
    t0, tk = np.array([0, 0, 1, 0, 1, 0, 0, 1.0] * 5), np.array([1, 0, 1, 1, 1, 0, 1, 1.0] * 5)
    s0, sk = np.array([0, 0, 1, 0, 0, 0, 0, 1.0] * 5), np.array([1, 0, 1, 0, 0, 0, 1, 1.0] * 5)
    est = stats.retention_of_gain(sk, s0, tk, t0, n_boot=500)
    assert est.value == pytest.approx((sk.mean() - s0.mean()) / (tk.mean() - t0.mean()))
    assert est.ci_low <= est.value <= est.ci_high
    flat = stats.retention_of_gain(sk, s0, t0, t0)
    assert flat.value is None and flat.note == "teacher gain is not positive"
    worse = stats.retention_of_gain(sk, s0, t0, tk)
    assert worse.value is None and worse.note == "teacher gain is not positive"


def test_gap_closed() -> None:
    teacher, base = np.full(10, 0.9), np.full(10, 0.3)
    student = np.full(10, 0.75)
    assert stats.gap_closed(student, base, teacher).value == pytest.approx(0.75)
    assert stats.gap_closed(student, teacher, base).value is None


def test_nan_items_dropped_and_bad_input_refused() -> None:
    est = stats.paired_bootstrap_diff([1.0, np.nan, 3.0, 4.0], [0.0, 1.0, np.nan, 1.0])
    assert est.n == 2 and est.value == pytest.approx(2.0) and "2 items with a NaN score" in (est.note or "")
    with pytest.raises(HarnessError, match="same items"):
        stats.paired_bootstrap_diff([1.0, 2.0], [1.0])
    with pytest.raises(HarnessError, match="n_boot"):
        stats.bootstrap_mean_ci([1.0, 2.0], n_boot=0)
    with pytest.raises(HarnessError, match="confidence"):
        stats.bootstrap_mean_ci([1.0, 2.0], confidence=95)
    with pytest.raises(HarnessError, match="one id per item"):
        stats.bootstrap_mean_ci([1.0, 2.0], clusters=[0])
    single = stats.bootstrap_mean_ci([0.5])
    assert single.value == 0.5 and single.ci_low is None and "no interval" in (single.note or "")
    assert stats.bootstrap_mean_ci([]).value is None
    assert stats.Estimate(1.0, 0.5, 1.5, 3).as_dict() == {
        "value": 1.0,
        "ci_low": 0.5,
        "ci_high": 1.5,
        "n": 3,
        "note": None,
    }


def test_summarize_is_token_weighted_and_resamples_sequences() -> None:
    seqs = [np.ones(4), np.array([5.0])]
    summary = summarize(seqs, n_boot=200)
    assert summary["mean"] == pytest.approx(9 / 5)
    assert summary["n_tokens"] == 5 and summary["n_sequences"] == 2
    flat = np.concatenate(seqs)
    for key, q in (("median", 50), ("p90", 90), ("p99", 99), ("p99_9", 99.9)):
        assert summary[key] == pytest.approx(np.percentile(flat, q))
    assert summary["max"] == 5.0
    # Two long constant sequences: resampling tokens would give a CI near 0.5 +- 0.03; sequences give [0, 1].
    two = summarize([np.zeros(1000), np.ones(1000)], n_boot=500)
    assert two["ci_low"] == 0.0 and two["ci_high"] == 1.0


def test_summarize_nan_inf_empty_and_single() -> None:
    summary = summarize([np.array([1.0, np.nan, 3.0]), np.array([np.nan]), np.array([2.0])])
    assert summary["n_tokens"] == 3 and summary["n_sequences"] == 2 and summary["mean"] == pytest.approx(2.0)
    infinite = summarize([np.array([1.0, np.inf]), np.array([2.0, 3.0])], n_boot=100)
    assert infinite["mean"] == np.inf and infinite["max"] == np.inf
    assert not any(isinstance(v, float) and np.isnan(v) for v in infinite.values())
    empty = summarize([np.array([np.nan]), np.array([])])
    assert empty["n_tokens"] == 0 and empty["mean"] is None and empty["ci_low"] is None
    single = summarize([np.array([1.0, 2.0])])
    assert single["mean"] == 1.5 and single["ci_low"] is None and single["ci_high"] is None
    json.dumps(summary)  # JSON-ready: plain floats and ints


def test_summarize_ci_covers_the_true_mean() -> None:
    rng = np.random.default_rng(9)
    hits = 0
    for i in range(150):
        seq_means = rng.gamma(2.0, 0.5, 40)  # true mean 1.0, sequences of varied length
        seqs = [rng.exponential(m, rng.integers(5, 30)) for m in seq_means]
        s = summarize(seqs, seed=i, n_boot=400)
        hits += s["ci_low"] <= 1.0 <= s["ci_high"]
    assert 0.87 <= hits / 150 <= 0.99


def test_histogram() -> None:
    h = histogram([np.array([0.1, 0.2, np.inf]), np.array([0.9, np.nan])], bins=[0.0, 0.5, 1.0])
    assert h == {"edges": [0.0, 0.5, 1.0], "counts": [2, 1], "n_nonfinite": 2}
    auto = histogram(np.random.default_rng(0).random(100), bins=10)
    assert sum(auto["counts"]) == 100 and len(auto["edges"]) == 11
    with pytest.raises(HarnessError, match="bins"):
        histogram([1.0], bins=0)


def test_chance_corrected_retention() -> None:
    teacher = np.array([1.0] * 15 + [0.0] * 5)  # 0.75
    student = np.array([1.0] * 10 + [0.0] * 10)  # 0.50
    est = stats.chance_corrected_retention(student, teacher, 0.5, n_boot=500, seed=3)
    assert est.value == pytest.approx(0.0)  # at chance the student kept none of the above-chance skill
    assert stats.chance_corrected_retention(student, teacher, 0.25).value == pytest.approx(0.5)
    assert stats.chance_corrected_retention(student, teacher, 0.0).value == pytest.approx(
        stats.paired_bootstrap_ratio(student, teacher).value
    )
    assert est.ci_low is not None and est.ci_high is not None and est.ci_low < 0.0 < est.ci_high
    for chance in (0.75, 0.9):  # teacher at or below chance: undefined, never a number
        undefined = stats.chance_corrected_retention(student, teacher, chance)
        assert undefined.value is None and undefined.ci_low is None
        assert undefined.note is not None and "not above chance" in undefined.note
    with pytest.raises(HarnessError, match="chance"):
        stats.chance_corrected_retention(student, teacher, float("nan"))


HOLM_P = [0.01, 0.04, 0.03, 0.005, 0.5, 0.04, 1.0, 0.0, 0.2, 0.012]


def test_holm_matches_statsmodels_multipletests() -> None:
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    expected = multitest.multipletests(HOLM_P, alpha=0.05, method="holm")[1]
    np.testing.assert_allclose(stats.holm(HOLM_P), expected, rtol=0, atol=1e-15)
    # by hand for the three smallest: 0.0 * 10, 0.005 * 9, 0.01 * 8; ties keep the running maximum
    assert stats.holm(HOLM_P)[7] == 0.0 and stats.holm(HOLM_P)[3] == pytest.approx(0.045)
    assert stats.holm(HOLM_P)[0] == pytest.approx(0.08)
    assert stats.holm([0.3]) == [0.3] and stats.holm([]) == []
    with pytest.raises(HarnessError, match="p-values"):
        stats.holm([0.1, float("nan")])
    with pytest.raises(HarnessError, match="p-values"):
        stats.holm([1.5])


def _width(est: stats.Estimate) -> float:
    assert est.ci_low is not None and est.ci_high is not None
    return est.ci_high - est.ci_low


def _prompts(n_prompts: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """IFEval-like data: 1-4 instructions per prompt, verdicts correlated within a prompt."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, n_prompts)
    ease = rng.beta(2, 1, n_prompts)  # a prompt's instructions are all easy or all hard
    clusters = np.repeat(np.arange(n_prompts), sizes)
    verdicts = (rng.random(clusters.size) < ease[clusters]).astype(float)
    return verdicts, clusters


def test_clustered_ci_is_the_percentile_of_an_explicit_cluster_resample() -> None:
    verdicts, clusters = _prompts(40, seed=5)
    est = stats.bootstrap_mean_ci(verdicts, clusters, n_boot=999, seed=11)
    sums = np.bincount(clusters, weights=verdicts)
    counts = np.bincount(clusters).astype(float)
    idx = np.random.default_rng(11).integers(0, 40, size=(999, 40))
    replicates = sums[idx].sum(1) / counts[idx].sum(1)  # pooled accuracy of each resampled prompt set
    assert est.value == pytest.approx(verdicts.mean())
    assert (est.ci_low, est.ci_high) == pytest.approx(tuple(np.percentile(replicates, [2.5, 97.5])))
    assert est.n == verdicts.size


def test_clustered_ci_matches_scipy_bootstrap_percentile() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    verdicts, clusters = _prompts(60, seed=3)
    sums = np.bincount(clusters, weights=verdicts)
    counts = np.bincount(clusters).astype(float)
    ours = stats.bootstrap_mean_ci(verdicts, clusters, n_boot=20_000, seed=0)
    reference = scipy_stats.bootstrap(
        (sums, counts),
        lambda s, c, axis=-1: s.sum(axis=axis) / c.sum(axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=20_000,
        method="percentile",
        random_state=np.random.default_rng(1),
    ).confidence_interval
    assert ours.ci_low == pytest.approx(reference.low, abs=0.006)
    assert ours.ci_high == pytest.approx(reference.high, abs=0.006)
    naive = stats.bootstrap_mean_ci(verdicts, n_boot=20_000, seed=0)
    assert _width(ours) > 1.15 * _width(naive)  # clustering widens it


def test_clusters_of_identical_verdicts_equal_a_bootstrap_over_prompts() -> None:
    """Equal-size prompts whose instructions agree: resampling prompts IS resampling prompt verdicts."""
    prompt_verdicts = (np.random.default_rng(2).random(30) < 0.6).astype(float)
    clustered = stats.bootstrap_mean_ci(np.repeat(prompt_verdicts, 3), np.repeat(np.arange(30), 3), seed=4)
    per_prompt = stats.bootstrap_mean_ci(prompt_verdicts, seed=4)
    assert (clustered.value, clustered.ci_low, clustered.ci_high) == pytest.approx(
        (per_prompt.value, per_prompt.ci_low, per_prompt.ci_high)
    )


def test_singleton_clusters_agree_with_the_wilson_interval() -> None:
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    verdicts = np.array([1.0] * 280 + [0.0] * 120)  # 0.7 of 400
    est = stats.bootstrap_mean_ci(verdicts, np.arange(400), n_boot=20_000, seed=0)
    low, high = proportion.proportion_confint(280, 400, alpha=0.05, method="wilson")
    assert est.value == pytest.approx(0.7)
    assert est.ci_low == pytest.approx(low, abs=0.006) and est.ci_high == pytest.approx(high, abs=0.006)
