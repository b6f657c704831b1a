"""Token divergences against independent float64 references (scipy, torch) and their properties."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import log_softmax, rel_entr, softmax

from harness.errors import HarnessError
from harness.metrics import divergence
from harness.metrics.divergence import (
    METRIC_NAMES,
    concat_divergences,
    full_vocab_divergences,
    student_full_vs_teacher_topk,
    temper,
    truncated_divergences,
)

CASES = json.loads((Path(__file__).parent / "cases" / "divergence_cases.json").read_text())["cases"]


def _array(rows: list) -> np.ndarray:
    return np.array([[float(v) for v in row] for row in rows], dtype=np.float64)


def _reference(teacher: np.ndarray, student: np.ndarray, T: float) -> dict[str, np.ndarray]:
    """Per-row values from scipy in float64, one row at a time (no shared code with the module)."""
    ref: dict[str, list[float]] = {name: [] for name in ("forward_kl", "reverse_kl", "js", "tvd", "ear")}
    for t_row, s_row in zip(teacher, student, strict=True):
        p, q = softmax(t_row / T), softmax(s_row / T)
        ref["forward_kl"].append(float(np.sum(rel_entr(p, q))))
        ref["reverse_kl"].append(float(np.sum(rel_entr(q, p))))
        ref["js"].append(float(jensenshannon(p, q)) ** 2)  # natural base by default; squared = divergence
        ref["tvd"].append(0.5 * float(np.sum(np.abs(p - q))))
        ref["ear"].append(float(np.sum(np.minimum(p, q))))
    return {name: np.array(values) for name, values in ref.items()}


def _log_space_reference(teacher: np.ndarray, student: np.ndarray, T: float) -> dict[str, np.ndarray]:
    """KL in log space, where a probability that underflows to 0 still has a finite log."""
    lp, lq = log_softmax(teacher / T, axis=-1), log_softmax(student / T, axis=-1)
    p, q = np.exp(lp), np.exp(lq)
    with np.errstate(invalid="ignore"):
        forward = np.where(np.isneginf(lp), 0.0, p * (lp - lq)).sum(-1)
        reverse = np.where(np.isneginf(lq), 0.0, q * (lq - lp)).sum(-1)
        lm = np.logaddexp(lp, lq) - np.log(2.0)
        js_p = np.where(np.isneginf(lp), 0.0, p * (lp - lm)).sum(-1)
        js_q = np.where(np.isneginf(lq), 0.0, q * (lq - lm)).sum(-1)
    return {
        "forward_kl": forward,
        "reverse_kl": reverse,
        "js": 0.5 * (js_p + js_q),
        "tvd": 0.5 * np.abs(p - q).sum(-1),
        "ear": np.minimum(p, q).sum(-1),
    }


def _random_logits(rng: np.random.Generator, n: int, vocab: int, scale: float) -> np.ndarray:
    return (rng.standard_normal((n, vocab)) * scale).astype(np.float32)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case_matches_hand_values_and_scipy(case: dict) -> None:
    teacher, student = _array(case["teacher"]), _array(case["student"])
    result = full_vocab_divergences(teacher, student, T=case["T"])
    for name, expected in case["expected"].items():
        given = [i for i, v in enumerate(expected) if v is not None]  # null: only the reference checks it
        want = [float(expected[i]) for i in given]
        np.testing.assert_allclose(getattr(result, name)[given], want, rtol=1e-9, atol=1e-12, err_msg=name)
    reference = _log_space_reference if case.get("log_space_reference") else _reference
    for name, expected in reference(teacher, student, case["T"]).items():
        np.testing.assert_allclose(getattr(result, name), expected, rtol=1e-9, atol=1e-12, err_msg=name)


def test_random_float32_inputs_match_scipy_across_seeds_and_temperatures() -> None:
    for seed in range(8):
        rng = np.random.default_rng(seed)
        teacher = _random_logits(rng, 16, 300, scale=1.0 + seed)
        student = teacher + _random_logits(rng, 16, 300, scale=0.3 * (seed + 1))
        for T in (0.7, 1.0, 2.0):
            result = full_vocab_divergences(teacher, student, T=T)
            ref = _reference(teacher.astype(np.float64), student.astype(np.float64), T)
            for name, expected in ref.items():
                np.testing.assert_allclose(
                    getattr(result, name), expected, rtol=1e-8, atol=1e-12, err_msg=name
                )
            assert np.array_equal(result.top1_agree, teacher.argmax(1) == student.argmax(1))


def test_forward_kl_matches_torch_kl_div() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    teacher, student = _random_logits(rng, 8, 500, 2.0), _random_logits(rng, 8, 500, 2.0)
    for T in (1.0, 2.0):
        lp = torch.log_softmax(torch.from_numpy(teacher).double() / T, dim=-1)
        lq = torch.log_softmax(torch.from_numpy(student).double() / T, dim=-1)
        expected = torch.nn.functional.kl_div(lq, lp, reduction="none", log_target=True).sum(-1).numpy()
        reverse = torch.nn.functional.kl_div(lp, lq, reduction="none", log_target=True).sum(-1).numpy()
        result = full_vocab_divergences(teacher, student, T=T)
        np.testing.assert_allclose(result.forward_kl, expected, rtol=1e-9)
        np.testing.assert_allclose(result.reverse_kl, reverse, rtol=1e-9)


def test_properties_over_many_random_pairs() -> None:
    rng = np.random.default_rng(0)
    teacher = _random_logits(rng, 400, 64, 3.0)
    student = np.where(rng.random((400, 64)) < 0.5, teacher, _random_logits(rng, 400, 64, 3.0))
    student[:50] = teacher[:50]  # equal rows
    result = full_vocab_divergences(teacher, student)
    for name in ("forward_kl", "reverse_kl", "js", "tvd"):
        values = getattr(result, name)
        assert (values >= 0).all(), name
        assert np.all(values[50:] > 1e-6), f"{name} must be positive for different rows"
    assert np.all(result.forward_kl[:50] == 0) and np.all(result.reverse_kl[:50] == 0)
    assert np.all(result.tvd[:50] == 0)
    np.testing.assert_allclose(result.ear[:50], 1.0, atol=1e-14)
    assert np.all(result.js[:50] < 1e-14), "JS is computed from entropies: zero up to float64 rounding"
    assert (result.js <= np.log(2)).all()
    assert (result.tvd <= 1).all()
    np.testing.assert_allclose(result.ear, 1.0 - result.tvd, atol=1e-12)
    assert set(np.unique(result.top1_agree)) <= {0.0, 1.0}
    assert (result.teacher_top1_in_student_top5 >= result.top1_agree).all()


def test_chunked_equals_single_pass_and_mixes_fast_and_exact_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    teacher, student = _random_logits(rng, 37, 200, 2.0), _random_logits(rng, 37, 200, 2.0)
    teacher[3, :50] = -np.inf  # masked tokens: zero probabilities
    student[10, 100:] = -np.inf  # the student masks tokens the teacher allows: infinite forward KL
    teacher[20:, :30] = student[20:, :30] = -np.inf  # both mask the same tokens
    teacher[30, 0] = 0.0  # ... but for one the teacher allows: infinite forward KL
    whole = full_vocab_divergences(teacher, student, T=1.5)
    monkeypatch.setattr(divergence, "_TEMP_BYTES", 8 * 200 * 4)  # 4 rows per chunk
    chunked = full_vocab_divergences(teacher, student, T=1.5)
    ref = _reference(teacher.astype(np.float64), student.astype(np.float64), 1.5)
    for name in METRIC_NAMES:
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name))
    for name, expected in ref.items():
        np.testing.assert_allclose(getattr(chunked, name), expected, rtol=1e-8, atol=1e-12, err_msg=name)
    assert np.isinf(whole.forward_kl[[10, 30]]).all() and np.isinf(whole.reverse_kl[3])
    assert np.isfinite(np.delete(whole.forward_kl, [10, 30])).all()


def test_temper_identity_and_high_temperature_limit() -> None:
    rng = np.random.default_rng(1)
    logprobs = log_softmax(rng.standard_normal((5, 50)) * 4, axis=-1)
    np.testing.assert_allclose(temper(logprobs, 1.0), logprobs, atol=1e-12)
    logits = rng.standard_normal((5, 50)) * 4 + 17.0
    np.testing.assert_allclose(temper(logits, 1.0), logprobs * 0 + log_softmax(logits, axis=-1), atol=1e-12)
    np.testing.assert_allclose(temper(logprobs, 2.0), log_softmax(logprobs / 2.0, axis=-1), atol=1e-12)
    flat = temper(logprobs, 1e6)
    np.testing.assert_allclose(flat, -np.log(50), atol=1e-4)
    np.testing.assert_allclose(np.exp(temper(logprobs, 3.0)).sum(-1), 1.0, atol=1e-12)
    distances = [np.abs(np.exp(temper(logprobs, T)) - 1 / 50).sum() for T in (1, 2, 8, 64)]
    assert distances == sorted(distances, reverse=True), "higher T must be closer to uniform"


@pytest.mark.parametrize("T", [0.0, -1.0, float("nan"), float("inf")])
def test_invalid_temperature_is_a_harness_error(T: float) -> None:
    with pytest.raises(HarnessError, match="temperature"):
        full_vocab_divergences(np.zeros((1, 3)), np.zeros((1, 3)), T=T)


def test_bad_inputs_are_harness_errors_naming_the_problem() -> None:
    with pytest.raises(HarnessError, match="differ in shape"):
        full_vocab_divergences(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(HarnessError, match="2-D"):
        full_vocab_divergences(np.zeros(3), np.zeros(3))
    bad = np.zeros((4, 3))
    bad[2, 1] = np.nan
    with pytest.raises(HarnessError, match="student_logprobs at position 2"):
        full_vocab_divergences(np.zeros((4, 3)), bad)
    with pytest.raises(HarnessError, match="teacher_logprobs at position 0"):
        full_vocab_divergences(np.full((1, 3), -np.inf), np.zeros((1, 3)))
    with pytest.raises(HarnessError, match="not logits"):
        truncated_divergences(np.array([[0, 1]]), np.array([[0.0, 0.0]]), np.array([[-1.0, -2.0]]))
    with pytest.raises(HarnessError, match="share one"):
        truncated_divergences(np.array([[0, 1]]), np.array([[-1.0]]), np.array([[-1.0, -2.0]]))


def test_empty_input_gives_empty_arrays() -> None:
    result = full_vocab_divergences(np.zeros((0, 10)), np.zeros((0, 10)))
    assert len(result) == 0 and all(v.shape == (0,) for v in result.metrics().values())


def _topk(logprobs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.argsort(-logprobs, axis=-1)[:, :k]
    return ids, np.take_along_axis(logprobs, ids, axis=-1)


def test_truncated_is_a_lower_bound_of_full_vocab() -> None:
    for seed in range(20):
        rng = np.random.default_rng(seed)
        teacher = log_softmax(rng.standard_normal((30, 100)) * (1 + seed % 4), axis=-1)
        student = log_softmax(teacher + rng.standard_normal((30, 100)) * (0.2 + seed % 3), axis=-1)
        full = full_vocab_divergences(teacher, student)
        for k in (1, 5, 20):
            ids, t_lp = _topk(teacher, k)
            lower, coverage = truncated_divergences(ids, t_lp, np.take_along_axis(student, ids, axis=-1))
            for name in ("forward_kl", "reverse_kl", "js", "tvd"):
                assert (getattr(lower, name) <= getattr(full, name) + 1e-12).all(), (seed, k, name)
            assert (lower.ear >= full.ear - 1e-12).all()
            assert ((coverage > 0) & (coverage <= 1)).all()
            np.testing.assert_allclose(coverage, np.exp(t_lp).sum(-1), rtol=1e-12)
            assert np.isnan(lower.top1_agree).all() and np.isnan(lower.teacher_top1_in_student_top5).all()


def test_truncated_matches_scipy_on_the_k_plus_1_categories() -> None:
    rng = np.random.default_rng(11)
    teacher = log_softmax(rng.standard_normal((6, 40)) * 2, axis=-1)
    student = log_softmax(rng.standard_normal((6, 40)) * 2, axis=-1)
    ids, t_lp = _topk(teacher, 4)
    s_lp = np.take_along_axis(student, ids, axis=-1)
    lower, _ = truncated_divergences(ids[:, ::-1], t_lp[:, ::-1], s_lp[:, ::-1])  # order must not matter
    p = np.concatenate([np.exp(t_lp), 1 - np.exp(t_lp).sum(-1, keepdims=True)], axis=-1)
    q = np.concatenate([np.exp(s_lp), 1 - np.exp(s_lp).sum(-1, keepdims=True)], axis=-1)
    np.testing.assert_allclose(lower.forward_kl, rel_entr(p, q).sum(-1), rtol=1e-9)
    np.testing.assert_allclose(lower.reverse_kl, rel_entr(q, p).sum(-1), rtol=1e-9)
    np.testing.assert_allclose(lower.js, jensenshannon(p, q, axis=-1) ** 2, rtol=1e-9)
    np.testing.assert_allclose(lower.tvd, 0.5 * np.abs(p - q).sum(-1), rtol=1e-9)


def test_truncated_with_the_whole_vocabulary_is_exact() -> None:
    rng = np.random.default_rng(2)
    teacher = log_softmax(rng.standard_normal((5, 12)) * 2, axis=-1)
    student = log_softmax(rng.standard_normal((5, 12)) * 2, axis=-1)
    ids, t_lp = _topk(teacher, 12)
    lower, coverage = truncated_divergences(ids, t_lp, np.take_along_axis(student, ids, axis=-1))
    full = full_vocab_divergences(teacher, student)
    for name in ("forward_kl", "reverse_kl", "js", "tvd", "ear"):
        np.testing.assert_allclose(getattr(lower, name), getattr(full, name), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(coverage, 1.0, atol=1e-12)


def test_student_full_vs_teacher_topk_collapses_the_student_and_flags_are_exact() -> None:
    rng = np.random.default_rng(4)
    teacher = log_softmax(rng.standard_normal((25, 80)) * 3, axis=-1)
    student_logits = (teacher + rng.standard_normal((25, 80))).astype(
        np.float32
    ) + 5.0  # logits, not logprobs
    student = log_softmax(student_logits.astype(np.float64), axis=-1)
    ids, t_lp = _topk(teacher, 10)
    collapsed, coverage = student_full_vs_teacher_topk(ids, t_lp, student_logits)
    order = np.argsort(-student, axis=-1)
    direct, coverage2 = truncated_divergences(
        ids, t_lp, np.take_along_axis(student, ids, axis=-1), order[:, 0], order[:, :5]
    )
    full = full_vocab_divergences(teacher, student)
    for name in METRIC_NAMES:
        np.testing.assert_allclose(getattr(collapsed, name), getattr(direct, name), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(collapsed.top1_agree, full.top1_agree)
    np.testing.assert_array_equal(collapsed.teacher_top1_in_student_top5, full.teacher_top1_in_student_top5)
    assert (collapsed.forward_kl <= full.forward_kl + 1e-9).all()
    np.testing.assert_allclose(coverage, coverage2)


def test_truncated_top1_flags_from_student_ids() -> None:
    ids = np.array([[7, 3], [2, 9]])
    t_lp = np.log(np.array([[0.3, 0.6], [0.5, 0.1]]))  # teacher top-1: 3, then 2
    s_lp = np.log(np.array([[0.2, 0.2], [0.1, 0.1]]))
    result, _ = truncated_divergences(
        ids, t_lp, s_lp, np.array([3, 5]), np.array([[1, 2, 3, 4, 5], [5, 6, 7, 8, 9]])
    )
    np.testing.assert_array_equal(result.top1_agree, [1.0, 0.0])
    np.testing.assert_array_equal(result.teacher_top1_in_student_top5, [1.0, 0.0])


def test_concat_keeps_order() -> None:
    rng = np.random.default_rng(0)
    a, b = _random_logits(rng, 3, 20, 1.0), _random_logits(rng, 3, 20, 1.0)
    joined = concat_divergences([full_vocab_divergences(a[:1], b[:1]), full_vocab_divergences(a[1:], b[1:])])
    np.testing.assert_allclose(joined.forward_kl, full_vocab_divergences(a, b).forward_kl)


def test_rounding_noise_in_a_near_complete_top_k_is_not_an_infinite_kl() -> None:
    ids = np.array([[0, 1, 2]])
    teacher = np.log(np.array([[0.5, 0.3, 0.2 - 1e-9]]))  # tail 1e-9: rounding noise
    student = np.log(np.array([[0.5, 0.3, 0.2 + 1e-7]]))  # sums a hair past 1 (float32 rounding)
    result, coverage = truncated_divergences(ids, teacher, student)
    assert np.isfinite(result.forward_kl).all() and result.forward_kl[0] < 1e-6
    np.testing.assert_allclose(coverage, 1.0, atol=1e-8)
    lost = np.log(np.array([[0.5, 0.3, 0.1]]))  # a real tail of 0.1 the student lacks entirely
    assert truncated_divergences(ids, lost, student)[0].forward_kl[0] > 1.0
