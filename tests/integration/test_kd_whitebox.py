"""White-box KD extras on real transformers engines (tiny models built in the session): hidden states and
only-scored-position logits against plain forwards, CKA against a float64 reference, and a compare run
that records CKA, gold-text divergences (checked against scipy on independently built gold text) and the
ECE of a multiple-choice suite (checked against a loop over items.jsonl)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.special import rel_entr

from harness.backends.base import ScoreRequest
from harness.compare import run_compare
from harness.config import CompareConfig
from harness.kd import KDSequence
from harness.kd_cka import cka_entry, collect_features, positions_for
from harness.suites import load_suite
from tests.unit.test_cka import reference_cka

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MC_SUITE = """name: tiny-mc
ability: icl
description: yes/no by log-likelihood.
chance: 0.5
task: task.yaml
shots: [0]
primary_metric: acc,none
"""
MC_TASK = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: data.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Is {{q}} a number?"
doc_to_choice: ["yes", "no"]
doc_to_target: "{{label}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
MC_WORDS = ["one", "cat", "seven", "dog", "ten", "red"]
LIMIT = 2


@pytest.fixture(scope="module")
def hf_other(tiny_model_dir_other_weights: Path) -> Iterator[Any]:
    from harness.backends.hf import HFBackend

    backend = HFBackend(str(tiny_model_dir_other_weights), dtype="float32", device="cpu", batch_size=8)
    yield backend
    backend.close()


def _texts(backend: Any) -> list[tuple[int, ...]]:
    words = [
        "The cat learns",
        "what the teacher knows so the student",
        "a dog",
        "how many apples has the red bird",
    ]
    return [tuple(ids) for ids in backend.tokenize(words)]


def test_hidden_features_equal_unbatched_hidden_states(hf_tiny: Any) -> None:
    seqs = _texts(hf_tiny)
    positions = [np.array([0, len(s) - 1]) if i != 2 else np.array([], dtype=int) for i, s in enumerate(seqs)]
    positions[1] = np.arange(1, len(seqs[1]), 2)
    features = hf_tiny.hidden_features(seqs, positions)
    n_layers, hidden = hf_tiny.n_hidden_layers()
    assert features.shape == (n_layers, sum(len(p) for p in positions), hidden) == (3, features.shape[1], 64)
    offset = 0
    for seq, pos in zip(seqs, positions, strict=True):
        alone = hf_tiny.hidden_states([list(seq)], layers=list(range(n_layers)))[0]  # unpadded, one at a time
        np.testing.assert_allclose(
            features[:, offset : offset + len(pos)], alone[:, pos], rtol=1e-4, atol=1e-4
        )
        offset += len(pos)


def test_scoring_keeps_only_the_scored_logits_and_gives_the_same_values(hf_tiny: Any) -> None:
    seqs = _texts(hf_tiny)
    requests = [
        ScoreRequest(
            s, start=max(1, len(s) - 3 - i), top_k=4, full_vocab=True, target_ids=((1, 2),) * (3 + i)
        )
        for i, s in enumerate(seqs)
        if len(s) > 5
    ]
    assert hf_tiny._keeps_logits
    kept = hf_tiny.score_tokens(requests)
    hf_tiny._keeps_logits = False
    try:
        full = hf_tiny.score_tokens(requests)
    finally:
        hf_tiny._keeps_logits = True
    for a, b in zip(kept, full, strict=True):
        assert a.full_logprobs.shape == b.full_logprobs.shape
        np.testing.assert_allclose(a.full_logprobs, b.full_logprobs, atol=1e-5)
        np.testing.assert_allclose(a.target_logprobs, b.target_logprobs, atol=1e-5)
        np.testing.assert_array_equal(a.topk_ids, b.topk_ids)


def test_cka_entry_against_the_hsic_reference(hf_tiny: Any, hf_other: Any, tmp_path: Path) -> None:
    seqs = [KDSequence(f"kd-{i}", s, 2) for i, s in enumerate(_texts(hf_tiny))]
    t_path = collect_features(hf_tiny, "teacher-fp", seqs, 12, 0, tmp_path)
    assert collect_features(hf_tiny, "teacher-fp", seqs, 12, 0, tmp_path) == t_path  # stored once
    same = cka_entry(t_path, collect_features(hf_tiny, "copy-fp", seqs, 12, 0, tmp_path), len(seqs))
    np.testing.assert_allclose(np.diag(np.asarray(same["matrix"], dtype=float)), 1.0, atol=1e-6)
    other = cka_entry(t_path, collect_features(hf_other, "other-fp", seqs, 12, 0, tmp_path), len(seqs))
    assert other["n_positions"] == 12 and other["teacher_layers"] == other["student_layers"] == 3
    # reference: unbatched hidden states at the same sampled positions, HSIC with the centring matrix
    positions = positions_for(seqs, 12, 0)

    def layers(backend: Any) -> list[np.ndarray]:
        per_seq = [backend.hidden_states([list(s.token_ids)], [0, 1, 2])[0] for s in seqs]
        return [
            np.concatenate([h[layer][p] for h, p in zip(per_seq, positions, strict=True)])
            for layer in range(3)
        ]

    a, b = layers(hf_tiny), layers(hf_other)
    expected = [[reference_cka(x, y) for y in b] for x in a]
    np.testing.assert_allclose(np.asarray(other["matrix"], dtype=float), expected, atol=2e-5)
    assert (
        max(abs(v - 1.0) for row in other["matrix"][1:] for v in row) > 1e-3
    )  # other weights: not identical


def _write_mc_suite(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "suite.yaml").write_text(MC_SUITE)
    (root / "task.yaml").write_text(MC_TASK)
    lines = [json.dumps({"q": w, "label": 0 if w in ("one", "seven", "ten") else 1}) for w in MC_WORDS]
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    return root / "suite.yaml"


@pytest.fixture(scope="module")
def runs(
    tiny_model_dir: Path, tiny_model_dir_other_weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """An exact run and a lower-bound run (same cache) of the tiny models on icl, cot and the MC suite."""
    from harness.backends import parse_model_spec

    root = tmp_path_factory.mktemp("whitebox")
    suites = ("icl-basic", "cot-basic", str(_write_mc_suite(root / "mc")))
    out = {}
    for mode in ("exact", "lower-bound"):
        config = CompareConfig(
            teacher=parse_model_spec(f"hf:{tiny_model_dir}"),
            students=(parse_model_spec(f"hf:{tiny_model_dir_other_weights}"),),
            suites=suites,
            limit=LIMIT,
            out_dir=root / mode,
            cache_dir=root / "cache",
            bootstrap=50,
            kd_max_tokens=12,
            kd_mode=mode,
            kd_cka_positions=64,
            engine_args={"batch_size": 8},
        )
        loaded = [load_suite(s, limit=LIMIT) for s in suites]
        out[mode] = run_compare(config, loaded)
    return out


def _independent_gold_kl(teacher: Any, student: Any) -> tuple[float, int]:
    """Mean forward KL (T = 1) over every token of the gold texts, built from the data files by hand:
    icl-basic's first answer and cot-basic's "The answer is N." (its direct exemplars' form)."""
    pairs = []
    for name, gold in (
        ("icl-basic", lambda d: d["answers"][0]),
        ("cot-basic", lambda d: f"The answer is {d['answer']}."),
    ):
        suite = load_suite(name, limit=LIMIT)
        docs = [json.loads(line) for line in (suite.path.parent / "data/test.jsonl").read_text().splitlines()]
        pairs += [(p, " " + gold(d)) for p, d in zip(suite.kd_prompts()[:LIMIT], docs, strict=False)]
    total, n = 0.0, 0
    for prompt, gold in pairs:
        ctx = teacher.tokenize([prompt])[0]
        whole = teacher.tokenize([prompt + gold])[0]
        assert whole[: len(ctx)] == ctx
        req = ScoreRequest(tuple(whole[: len(ctx) + 12]), len(ctx), full_vocab=True)
        t, s = teacher.score_tokens([req])[0].full_logprobs, student.score_tokens([req])[0].full_logprobs
        p, q = np.exp(t.astype(np.float64)), np.exp(s.astype(np.float64))
        p, q = p / p.sum(axis=1, keepdims=True), q / q.sum(axis=1, keepdims=True)
        total += float(rel_entr(p, q).sum())
        n += t.shape[0]
    return total / n, n


def test_compare_records_gold_text_divergences(runs: dict[str, Any], hf_tiny: Any, hf_other: Any) -> None:
    metrics = json.loads((runs["exact"] / "metrics.json").read_text())
    kd = next(iter(metrics["kd"].values()))
    gold = kd["gold"]
    assert gold["skipped"] is None and gold["text"].startswith("gold references")
    assert set(gold["suites"]) == {"icl-basic", "cot-basic"} and "tiny-mc" in gold["suites_skipped"]
    expected, n_tokens = _independent_gold_kl(hf_tiny, hf_other)
    assert gold["n_tokens"] == n_tokens and gold["n_sequences"] == 2 * LIMIT
    assert gold["temperatures"]["1"]["forward_kl"]["mean"] == pytest.approx(expected, rel=1e-5)
    texts = {row["text"] for row in gold["worst"]["sequences"]}
    assert any("The answer is" in t for t in texts)
    # per suite: the teacher's text split by suite adds up to the whole
    assert sum(v["n_tokens"] for v in kd["suites"].values()) == kd["n_tokens"]
    # the lower-bound run: same gold tokens, values that can only be smaller, with the teacher's coverage
    lower = next(iter(json.loads((runs["lower-bound"] / "metrics.json").read_text())["kd"].values()))["gold"]
    assert "lower bound" in lower["semantics"] and lower["n_tokens"] == gold["n_tokens"]
    assert 0 < lower["coverage"]["mean"] <= 1
    assert (
        lower["temperatures"]["1"]["forward_kl"]["mean"]
        <= gold["temperatures"]["1"]["forward_kl"]["mean"] + 1e-9
    )


def test_compare_records_cka_in_both_modes(runs: dict[str, Any]) -> None:
    kd = next(iter(json.loads((runs["exact"] / "metrics.json").read_text())["kd"].values()))
    exact = kd["cka"]
    lower = next(iter(json.loads((runs["lower-bound"] / "metrics.json").read_text())["kd"].values()))["cka"]
    assert exact["skipped"] is None and exact["teacher_layers"] == exact["student_layers"] == 3
    assert exact["n_positions"] == min(64, kd["n_tokens"]) and all(
        0.0 <= v <= 1.0 for row in exact["matrix"] for v in row
    )
    assert lower["matrix"] == exact["matrix"]  # the teacher closed before the student: features from disk
    from harness.report.html import render_html
    from harness.store.record import read_record

    html = render_html(read_record(runs["exact"]), runs["exact"] / "index.html").read_text()
    assert (
        "hidden-state similarity to the teacher (linear CKA)" in html and "Divergence by text scored" in html
    )


def _ece(conf: list[float], hits: list[float], bins: int = 15) -> float:
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [i for i, c in enumerate(conf) if (lo < c <= hi) or (b == 0 and c == 0.0)]
        if inside:
            acc = sum(hits[i] for i in inside) / len(inside)
            mean_conf = sum(conf[i] for i in inside) / len(inside)
            total += len(inside) / len(conf) * abs(acc - mean_conf)
    return total


def test_compare_records_the_ece_of_the_multiple_choice_suite(runs: dict[str, Any]) -> None:
    run = runs["exact"]
    calibration = json.loads((run / "metrics.json").read_text())["calibration"]
    items = [json.loads(line) for line in (run / "items.jsonl").read_text().splitlines() if line]
    per_model = calibration["suites"]["tiny-mc"]["k=0"]
    assert set(calibration["suites"]) == {"tiny-mc"} and len(per_model) == 2
    for model, stats in per_model.items():
        rows = [r for r in items if r["suite"] == "tiny-mc" and r["model"] == model]
        conf = []
        for r in rows:
            lp = np.asarray(r["details"]["option_logprobs"])
            conf.append(float(np.exp(lp.max() - np.logaddexp.reduce(lp))))
        hits = [r["metrics"]["acc,none"] for r in rows]
        assert stats["n"] == len(rows) == LIMIT
        assert stats["ece"] == pytest.approx(_ece(conf, hits), abs=1e-12)
        assert stats["accuracy"] == pytest.approx(np.mean(hits))
