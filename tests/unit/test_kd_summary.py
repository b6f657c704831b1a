"""KD summaries beyond the mean: histograms, p99.9, worst sequences/tokens with context, NLL, coverage,
and how they reach metrics.json and the report (mock engines)."""

from __future__ import annotations

import bisect
import math
import re
from pathlib import Path

import numpy as np
import pytest

from harness.compare import run_compare
from harness.errors import HarnessError
from harness.kd import (
    KDSequence,
    coverage_summary,
    kd_extras,
    summarize_divergences,
    worst_lists,
)
from harness.metrics.divergence import full_vocab_divergences
from harness.metrics.summary import KL_BIN_EDGES, log_histogram
from harness.metrics.worst import PositionTokens, top_positions, top_sequences
from harness.report.html import render_html
from harness.report.kd import histogram_chart
from harness.store.record import read_record
from tests.unit.test_compare_mock import EchoSuite, _config, scripted  # noqa: F401 - fixture

# ---- histograms ---------------------------------------------------------------------------------


def _reference_counts(values: list[float], edges: list[float]) -> list[int]:
    """Bin by hand with bisect: [e_i, e_{i+1}), last bin closed, out-of-range values clamped."""
    counts = [0] * (len(edges) - 1)
    for v in values:
        if math.isnan(v):
            continue
        i = bisect.bisect_right(edges, v) - 1
        counts[min(max(i, 0), len(counts) - 1)] += 1
    return counts


def test_kl_bins_are_fixed_log_spaced_from_zero() -> None:
    assert KL_BIN_EDGES[0] == 0.0 and len(KL_BIN_EDGES) == 34
    np.testing.assert_allclose(KL_BIN_EDGES[1:], [10.0 ** (-6 + k / 4) for k in range(33)], rtol=1e-12)


def test_log_histogram_counts_every_position_and_matches_a_hand_binning() -> None:
    rng = np.random.default_rng(0)
    values = list(np.exp(rng.uniform(np.log(1e-9), np.log(500.0), 2000)))
    values += [0.0, 0.0, 1e-6, 100.0, 150.0, math.inf, 1e-7]  # edges exactly, above the range, inf
    hist = log_histogram([np.array(values[:1000]), np.array(values[1000:])])
    assert hist["counts"] == _reference_counts(values, list(KL_BIN_EDGES))
    assert sum(hist["counts"]) == len(values)
    assert hist["n_above"] == sum(v > 100.0 for v in values) and hist["n_nan"] == 0
    assert hist["counts"][0] == sum(v < 1e-6 for v in values)  # zeros and 1e-7 in the first bin
    assert hist["counts"][1] >= 1  # 1e-6 opens the second bin
    with_nan = log_histogram(np.array([0.1, np.nan, 0.2]))
    assert sum(with_nan["counts"]) == 2 and with_nan["n_nan"] == 1
    with pytest.raises(HarnessError, match="increasing"):
        log_histogram([1.0], edges=[1.0, 0.5])


def test_summarize_divergences_has_p99_9_and_histograms_summing_to_positions() -> None:
    rng = np.random.default_rng(1)
    parts = []
    for n in (40, 3, 200, 17):
        teacher = rng.standard_normal((n, 50)) * 3
        parts.append(full_vocab_divergences(teacher, teacher + rng.standard_normal((n, 50))))
    summary = summarize_divergences(parts, seed=0)
    n_positions = sum(len(p) for p in parts)
    for name in ("forward_kl", "reverse_kl", "js", "tvd"):
        hist = summary[name]["histogram"]
        assert sum(hist["counts"]) == n_positions == summary[name]["n_tokens"], name
        flat = np.concatenate([getattr(p, name) for p in parts])
        assert summary[name]["p99_9"] == pytest.approx(np.percentile(flat, 99.9), rel=1e-12)
        assert summary[name]["max"] == flat.max()
    assert "histogram" not in summary["ear"] and "histogram" not in summary["top1_agree"]


def test_histogram_chart_geometry() -> None:
    hist = log_histogram(np.array([0.0, 1e-3, 1e-3, 0.5, math.inf]))
    chart = histogram_chart(hist)
    assert chart is not None and len(chart["bars"]) == 33
    tallest = max(chart["bars"], key=lambda b: b["height"])
    assert "2 tokens (40.0%)" in tallest["title"]
    assert chart["above"] == 1 and chart["bars"][-1]["title"].endswith("1 tokens (20.0%)")
    assert [t["label"] for t in chart["ticks"]] == ["1e-6", "1e-4", "1e-2", "1e0", "1e2"]
    assert histogram_chart({}) is None and histogram_chart({"edges": [0, 1], "counts": [0]}) is None


# ---- worst lists --------------------------------------------------------------------------------


def _brute_force_positions(values: list[np.ndarray], n: int) -> list[tuple[int, int, float]]:
    rows = [(float(v), s, p) for s, arr in enumerate(values) for p, v in enumerate(arr) if not math.isnan(v)]
    rows.sort(key=lambda r: (-r[0], r[1], r[2]))
    return [(s, p, v) for v, s, p in rows[:n]]


def test_top_positions_is_sorted_and_holds_the_true_maximum() -> None:
    rng = np.random.default_rng(2)
    for trial in range(30):
        values = [np.round(rng.exponential(1.0, rng.integers(0, 40)), 1) for _ in range(rng.integers(1, 8))]
        if trial % 3 == 0 and values[0].size:
            values[0][0] = np.inf
        if trial % 4 == 0 and values[-1].size:
            values[-1][-1] = np.nan
        for n in (0, 1, 5, 10, 500):
            got = top_positions(values, n)
            assert got == _brute_force_positions(values, n), (trial, n)
            vals = [v for _, _, v in got]
            assert vals == sorted(vals, reverse=True)
            finite = [v for arr in values for v in arr if not np.isnan(v)]
            if n and finite:
                assert vals[0] == max(finite)


def test_top_sequences_by_mean_against_brute_force() -> None:
    values = [
        np.array([1.0, 3.0]),
        np.array([]),
        np.array([2.0, np.nan]),
        np.array([0.5, np.inf]),
        np.array([2.0]),
    ]
    got = top_sequences(values, 3)
    assert got == [(3, math.inf), (0, 2.0), (2, 2.0)]  # tie at 2.0: earlier sequence first
    assert top_sequences(values, 10) == [
        (3, math.inf),
        (0, 2.0),
        (2, 2.0),
        (4, 2.0),
    ]  # the empty one left out
    with pytest.raises(HarnessError, match=">= 0"):
        top_sequences(values, -1)


def _detok(ids: list[int]) -> str:
    return "".join(f"<{i}>" for i in ids)


def _tokens(seq: KDSequence, rng: np.random.Generator) -> PositionTokens:
    n = len(seq.token_ids) - seq.start
    return PositionTokens.from_arrays(
        {
            "token_id": np.array(seq.token_ids[seq.start :]),
            "teacher_logprob": np.log(rng.uniform(0.1, 1.0, n)),
            "student_logprob": np.log(rng.uniform(0.01, 1.0, n)),
            "teacher_top1_id": rng.integers(0, 50, n),
            "teacher_top1_logprob": np.log(rng.uniform(0.3, 1.0, n)),
            "student_top1_id": rng.integers(0, 50, n),
            "student_top1_logprob": np.log(rng.uniform(0.3, 1.0, n)),
        }
    )


def test_worst_lists_carry_the_context_around_each_token() -> None:
    rng = np.random.default_rng(3)
    sequences = [KDSequence(f"kd-{i}", tuple(range(100 * i, 100 * i + 40)), 30) for i in range(3)]
    tokens = [_tokens(s, rng) for s in sequences]
    values = [rng.uniform(0, 1, 10) for _ in sequences]
    values[1][4] = 9.0  # the worst token: sequence 1, position 4 -> token id 134
    values[2][:] = 5.0  # the worst sequence by mean
    out = worst_lists(sequences, values, tokens, _detok, n=4)
    assert [s["seq_id"] for s in out["sequences"]][0] == "kd-2"
    assert out["sequences"][0]["mean"] == pytest.approx(5.0)
    assert out["sequences"][0]["text"] == _detok(list(range(230, 240)))
    assert out["sequences"][0]["prompt_tail"] == _detok(list(range(200, 230)))
    top = out["tokens"][0]
    assert (top["seq_id"], top["position"], top["value"]) == ("kd-1", 4, 9.0)
    assert top["token"]["id"] == 134 and top["token"]["text"] == "<134>"
    assert top["before"] == _detok(list(range(110, 134)))  # 24 tokens of context, prompt included
    assert top["after"] == _detok(list(range(135, 140)))  # up to 8 tokens, cut at the end
    assert top["token"]["teacher_prob"] == pytest.approx(np.exp(tokens[1].teacher_logprob[4]))
    assert top["token"]["student_prob"] == pytest.approx(np.exp(tokens[1].student_logprob[4]))
    assert top["teacher_top1"]["id"] == int(tokens[1].teacher_top1_id[4])
    assert top["student_top1"]["prob"] == pytest.approx(np.exp(tokens[1].student_top1_logprob[4]))
    assert [t["value"] for t in out["tokens"]] == sorted((t["value"] for t in out["tokens"]), reverse=True)


def test_kd_extras_nll_against_a_float64_reference() -> None:
    rng = np.random.default_rng(4)
    sequences = [KDSequence(f"kd-{i}", tuple(range(20 + i)), 12) for i in range(5)]
    tokens = [_tokens(s, rng) for s in sequences]
    per_t = {
        2.0: [
            full_vocab_divergences(rng.standard_normal((len(t), 9)), rng.standard_normal((len(t), 9)))
            for t in tokens
        ]
    }
    extras = kd_extras(sequences, per_t, tokens, lambda ids: "ab" * len(ids), seed=0)
    nll = -np.concatenate([t.student_logprob for t in tokens])
    student = extras["nll"]["student"]
    assert student["nll_per_token"] == pytest.approx(nll.mean(), rel=1e-12)
    assert student["perplexity"] == pytest.approx(math.exp(nll.mean()), rel=1e-12)
    assert student["bits_per_byte"] == pytest.approx(nll.sum() / math.log(2) / (2 * nll.size), rel=1e-12)
    assert student["ci_low"] < student["nll_per_token"] < student["ci_high"]
    teacher_nll = -np.concatenate([t.teacher_logprob for t in tokens])
    assert extras["nll"]["teacher"]["nll_per_token"] == pytest.approx(teacher_nll.mean(), rel=1e-12)
    assert extras["worst"]["t"] == "2" and extras["worst"]["metric"] == "forward_kl"  # no T = 1: lowest T


def test_coverage_summary_reports_the_low_tail() -> None:
    coverage = [np.array([0.5, 0.9, 1.0]), np.array([0.2])]
    out = coverage_summary(coverage)
    flat = np.array([0.5, 0.9, 1.0, 0.2])
    assert out["mean"] == pytest.approx(flat.mean()) and out["min"] == 0.2 and out["n_tokens"] == 4
    assert out["p10"] == pytest.approx(np.percentile(flat, 10))
    assert coverage_summary([])["mean"] is None


# ---- through compare (mock engines) --------------------------------------------------------------


def test_compare_records_histograms_worst_lists_nll_and_the_tokenizer_verdict(
    tmp_path: Path,
    scripted: dict[str, int],  # noqa: F811
) -> None:
    record = read_record(run_compare(_config(tmp_path), [EchoSuite()]))
    kd = record.metrics["kd"]["student"]
    t1 = kd["temperatures"]["1"]
    assert sum(t1["forward_kl"]["histogram"]["counts"]) == kd["n_tokens"]
    worst = kd["worst"]
    assert worst["tokens"][0]["value"] == t1["forward_kl"]["max"]  # the list holds the true maximum
    assert len(worst["tokens"]) == min(10, kd["n_tokens"]) and len(worst["sequences"]) == kd["n_sequences"]
    assert kd["nll"]["student"]["n_tokens"] == kd["n_tokens"] and kd["nll"]["tokenization"] == "shared"
    assert kd["nll"]["student"]["perplexity"] > kd["nll"]["teacher"]["perplexity"]  # its own greedy text
    assert kd["tokenizer"]["identical"] and kd["tokenizer"]["compared"].startswith("tokenizer_id")
    on = kd["on_policy"]
    assert on["worst"]["tokens"][0]["value"] == on["temperatures"]["1"]["forward_kl"]["max"]
    assert on["nll"]["text"] == "student generations"
    # per suite: the one echo suite holds every sequence; no hidden states and no gold text from mocks
    assert kd["suites"]["echo"]["n_sequences"] == kd["n_sequences"]
    assert kd["suites"]["echo"]["temperatures"]["1"]["forward_kl"]["mean"] == pytest.approx(
        t1["forward_kl"]["mean"]
    )
    assert on["suites"]["echo"]["n_tokens"] == on["n_tokens"]
    assert "(mock) does not return hidden states" in kd["cka"]["skipped"]
    assert kd["gold"]["skipped"] and "echo" in kd["gold"]["suites_skipped"]
    assert record.metrics["calibration"]["skipped"] and record.metrics["calibration"]["suites"] == {}
    html = render_html(record, tmp_path / "index.html").read_text()
    assert "Worst tokens (forward KL)" in html and "p99.9" in html
    assert "CKA of hidden states skipped: the teacher&#39;s backend (mock)" in html
    assert "mean forward KL per suite and text" in html and "Calibration on multiple-choice suites" in html
    assert 'aria-label="forward KL per token at T = 1"' in html


def test_lower_bound_mode_records_coverage_detail_and_worst_lists(
    tmp_path: Path,
    scripted: dict[str, int],  # noqa: F811
) -> None:
    record = read_record(run_compare(_config(tmp_path, kd_mode="lower-bound", kd_top_k=8), [EchoSuite()]))
    kd = record.metrics["kd"]["student"]
    assert kd["coverage"]["mean"] == pytest.approx(kd["coverage_mean"])
    assert 0 < kd["coverage"]["min"] <= kd["coverage"]["p10"] <= kd["coverage"]["median"] <= 1
    assert kd["worst"]["tokens"][0]["value"] == kd["temperatures"]["1"]["forward_kl"]["max"]
    assert kd["nll"]["student"]["nll_per_token"] > 0
    html = render_html(record, tmp_path / "index.html").read_text()
    assert re.search(r"<td class=\"num\">≥ [0-9.]+</td>", html)  # worst values labelled as lower bounds


# ---- report: untrusted text in the new parts -----------------------------------------------------

EVIL = "<script>alert(1)</script>"


def _evil_token(token_id: int) -> dict[str, object]:
    return {"id": token_id, "text": EVIL, "prob": 0.25}


def test_worst_lists_and_the_sequence_section_escape_model_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.report import build
    from harness.report.kd import build_kd
    from harness.sequence import sequence_checks
    from harness.suites.base import ItemResult
    from tests.fake_record import write_fake_record

    record = read_record(write_fake_record(tmp_path / "run", n_items=4, hostile=True))
    record.metrics["kd"]["student"]["worst"] = {
        "t": "1",
        "metric": "forward_kl",
        "sequences": [
            {"seq_id": EVIL, "mean": 1.5, "max": 2.0, "n_tokens": 3, "prompt_tail": EVIL, "text": EVIL}
        ],
        "tokens": [
            {
                "seq_id": "kd-0",
                "position": 1,
                "value": 2.0,
                "before": EVIL,
                "after": EVIL,
                "token": {"id": 5, "text": EVIL, "teacher_prob": 0.5, "student_prob": 0.01},
                "teacher_top1": _evil_token(6),
                "student_top1": _evil_token(7),
            }
        ],
    }
    items = [ItemResult(**row) for row in record.items]
    roles = {label: entry["role"] for label, entry in record.manifest["models"].items()}
    sequence = sequence_checks(items, roles, n_boot=50)
    monkeypatch.setattr(build, "build_kd", lambda kd, models, *_rest: build_kd(kd, models, sequence))
    html = render_html(record, tmp_path / "index.html").read_text()
    assert "<script>" not in html and "<img src=x" not in html and "Worst tokens (forward KL)" in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 7
    assert "Final-answer agreement with the teacher" in html and "ROUGE-L (F-measure)" in html
    assert "Output diagnostics (generate items)" in html


def test_a_run_from_the_cache_gives_the_same_kd_record(
    tmp_path: Path,
    scripted: dict[str, int],  # noqa: F811
) -> None:
    first = read_record(run_compare(_config(tmp_path), [EchoSuite()])).metrics["kd"]
    again = read_record(run_compare(_config(tmp_path, out_dir=tmp_path / "again"), [EchoSuite()])).metrics[
        "kd"
    ]
    assert again == first  # divergences and tokens (worst lists, NLL) read back from the cache
    assert first["student"]["worst"]["tokens"] and first["student"]["nll"]["student"]["n_tokens"] > 0


# ---- batching by positions, per-suite breakdowns, gold texts ----------------------------------------


def test_position_batches_bound_the_scored_positions() -> None:
    from harness.kd import KDSequence, position_batches

    sizes = [5, 3, 9, 2, 2, 20, 1]
    seqs = [KDSequence(f"kd-{i}", tuple(range(n + 2)), 2) for i, n in enumerate(sizes)]
    batches = position_batches(range(len(seqs)), seqs, max_positions=10, max_sequences=3)
    assert [i for b in batches for i in b] == list(range(len(seqs)))  # every sequence once, in order
    assert batches == [[0, 1], [2], [3, 4], [5], [6]]  # 20 > 10 goes alone
    assert all(sum(sizes[i] for i in b) <= 10 or len(b) == 1 for b in batches)
    assert position_batches(range(4), seqs, max_positions=100, max_sequences=2) == [[0, 1], [2, 3]]


def test_by_suite_splits_sequences_and_summarises_each_group() -> None:
    from harness.kd import KDSequence
    from harness.kd_extras import by_suite, suite_map

    rng = np.random.default_rng(3)
    seqs = [KDSequence(f"kd-on-{i}", tuple(range(6)), 2) for i in range(4)]
    divs = [full_vocab_divergences(rng.normal(size=(4, 9)), rng.normal(size=(4, 9))) for _ in seqs]
    suite_of = suite_map(seqs, ["a", "b", "a", "b"])
    assert suite_of == {"kd-on-0": "a", "kd-on-1": "b", "kd-on-2": "a", "kd-on-3": "b"}
    out = by_suite(seqs, {1.0: divs}, suite_of, seed=0)
    assert set(out) == {"a", "b"} and out["a"]["n_sequences"] == 2 and out["a"]["n_tokens"] == 8
    expected = np.concatenate([divs[0].forward_kl, divs[2].forward_kl]).mean()
    assert out["a"]["temperatures"]["1"]["forward_kl"]["mean"] == pytest.approx(expected)


def test_gold_pairs_follow_the_exemplar_format_and_skip_suites_without_references() -> None:
    from harness.kd_gold import NO_REFERENCE, gold_pairs
    from harness.suites import load_suite

    def render(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return "".join(m["content"] for m in messages)

    cot = load_suite("cot-basic", limit=2)  # KD variant "direct": exemplars end "The answer is N."
    pairs, reason = gold_pairs(cot, None, 2)
    assert reason is None and [g for _, g in pairs] == [" The answer is 6.", " The answer is 8."]
    assert [p for p, _ in pairs] == cot.kd_prompts()[:2] and pairs[0][0].endswith("have now?\nA:")
    icl = load_suite("icl-basic", limit=3)
    assert [g for _, g in gold_pairs(icl, None, 2)[0]] == [" right", " girl"]  # first answer, limit 2
    assert gold_pairs(load_suite("if-basic", limit=2), render, 2) == ([], NO_REFERENCE)
