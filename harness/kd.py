"""The standard-KD check: token-level divergences between teacher and student under teacher forcing.

Text scored: the teacher's own greedy generations on the suites' prompts (off-policy). Two modes:
- exact: both models in memory; full-vocabulary logprobs from both, any temperature, streamed in
  small batches so no (positions x vocab) array outlives its batch.
- lower bound: one model at a time; the teacher's top-k (+ a tail bucket) is kept, and the student
  is scored on those categories at its turn. Merging categories can only shrink KL/JS/TVD, so the
  values are lower bounds at T = 1 and are labelled so, with the teacher's top-k coverage.
Per-sequence results are cached (keyed by both fingerprints and the token ids), so a resumed run
does not score again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.backends.base import Backend, ScoreRequest, TokenScores
from harness.metrics.divergence import (
    METRIC_NAMES,
    PositionDivergences,
    full_vocab_divergences,
    student_full_vs_teacher_topk,
    truncated_divergences,
)
from harness.metrics.summary import summarize
from harness.store.cache import ResponseCache, blob_key

ProgressFn = Callable[[int, int], None]
EXACT = "full-vocab"
LOWER_BOUND = "top-k+tail lower bound"


@dataclass(frozen=True)
class KDSequence:
    """A token sequence to score: prompt ids then the teacher's generated ids from `start` on."""

    seq_id: str
    token_ids: tuple[int, ...]
    start: int


def build_sequences(
    teacher: Backend, prompts: Sequence[str], generations: Sequence[tuple[int, ...]], ids: Sequence[str]
) -> list[KDSequence]:
    """Join each prompt's tokens with the generated tokens; empty generations are dropped."""
    prompt_ids = teacher.tokenize(list(prompts))
    sequences = []
    for seq_id, prompt, generated in zip(ids, prompt_ids, generations, strict=False):
        if generated and prompt:
            sequences.append(KDSequence(seq_id, tuple(prompt) + tuple(generated), len(prompt)))
    return sequences


def _divergences_to_arrays(div: PositionDivergences) -> dict[str, np.ndarray]:
    return {name: np.asarray(value) for name, value in div.metrics().items()}


def _arrays_to_divergences(arrays: dict[str, np.ndarray]) -> PositionDivergences:
    return PositionDivergences(**{name: arrays[name] for name in METRIC_NAMES})


def exact_divergences(
    teacher: Backend,
    student: Backend,
    pair: tuple[str, str],
    sequences: Sequence[KDSequence],
    temperatures: Sequence[float],
    cache: ResponseCache,
    *,
    batch_size: int = 8,
    progress: ProgressFn | None = None,
) -> dict[float, list[PositionDivergences]]:
    """Full-vocabulary divergences per sequence at each temperature (both models loaded)."""
    results: dict[float, list[PositionDivergences | None]] = {
        t: [None] * len(sequences) for t in temperatures
    }
    todo = []
    for index, seq in enumerate(sequences):
        cached = [
            cache.get_arrays(blob_key("kd-exact", *pair, seq.token_ids, seq.start, t)) for t in temperatures
        ]
        if all(c is not None for c in cached):
            for t, arrays in zip(temperatures, cached, strict=False):
                results[t][index] = _arrays_to_divergences(arrays)  # type: ignore[arg-type]
        else:
            todo.append(index)
    done = len(sequences) - len(todo)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        requests = [ScoreRequest(sequences[i].token_ids, sequences[i].start, full_vocab=True) for i in batch]
        t_scores, s_scores = teacher.score_tokens(requests), student.score_tokens(requests)
        blobs = []
        for index, t_sc, s_sc in zip(batch, t_scores, s_scores, strict=False):
            assert t_sc.full_logprobs is not None and s_sc.full_logprobs is not None
            seq = sequences[index]
            for t in temperatures:
                div = full_vocab_divergences(t_sc.full_logprobs, s_sc.full_logprobs, T=t)
                results[t][index] = div
                key = blob_key("kd-exact", *pair, seq.token_ids, seq.start, t)
                blobs.append((key, _divergences_to_arrays(div)))
        cache.put_arrays_many(pair[1], blobs)
        done += len(batch)
        if progress:
            progress(done, len(sequences))
    return {t: [d for d in divs if d is not None] for t, divs in results.items()}


def teacher_topk(
    teacher: Backend,
    fingerprint: str,
    sequences: Sequence[KDSequence],
    top_k: int,
    cache: ResponseCache,
    *,
    batch_size: int = 16,
) -> list[dict[str, np.ndarray]]:
    """The teacher's top-k ids and logprobs per position (cached), for the lower-bound mode."""
    keys = [blob_key("kd-topk", fingerprint, s.token_ids, s.start, top_k) for s in sequences]
    out: list[dict[str, np.ndarray] | None] = [cache.get_arrays(key) for key in keys]
    todo = [i for i, found in enumerate(out) if found is None]
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        scores = teacher.score_tokens(
            [ScoreRequest(sequences[i].token_ids, sequences[i].start, top_k=top_k) for i in batch]
        )
        blobs = []
        for i, sc in zip(batch, scores, strict=False):
            out[i] = {"ids": sc.topk_ids, "logprobs": sc.topk_logprobs}
            blobs.append((keys[i], out[i]))
        cache.put_arrays_many(fingerprint, blobs)  # type: ignore[arg-type]
    return [o for o in out if o is not None]


def lower_bound_divergences(
    student: Backend,
    pair: tuple[str, str],
    sequences: Sequence[KDSequence],
    teacher_top: Sequence[dict[str, np.ndarray]],
    cache: ResponseCache,
    *,
    batch_size: int = 8,
) -> tuple[list[PositionDivergences], list[np.ndarray]]:
    """Divergences over the teacher's top-k + tail (T = 1), and the teacher's top-k coverage per position."""
    divs, coverage = [], []
    full = student.capabilities().full_vocab_logprobs
    for start in range(0, len(sequences), batch_size):
        batch = list(range(start, min(start + batch_size, len(sequences))))
        requests = [
            ScoreRequest(
                sequences[i].token_ids,
                sequences[i].start,
                top_k=5,
                full_vocab=full,
                target_ids=tuple(tuple(int(x) for x in row) for row in teacher_top[i]["ids"]),
            )
            for i in batch
        ]
        for i, sc in zip(batch, student.score_tokens(requests), strict=False):
            div, cov = _lower_bound_one(teacher_top[i], sc)
            divs.append(div)
            coverage.append(cov)
    return divs, coverage


def _lower_bound_one(top: dict[str, np.ndarray], sc: TokenScores) -> tuple[PositionDivergences, np.ndarray]:
    if sc.full_logprobs is not None:
        return student_full_vs_teacher_topk(top["ids"], top["logprobs"], sc.full_logprobs)
    assert sc.target_logprobs is not None
    return truncated_divergences(
        top["ids"],
        top["logprobs"],
        sc.target_logprobs,
        student_top1_ids=sc.topk_ids[:, 0],
        student_top5_ids=sc.topk_ids[:, :5],
    )


def summarize_divergences(per_sequence: Sequence[PositionDivergences], seed: int) -> dict[str, Any]:
    """Mean (CI over sequences), median and tail percentiles for every divergence."""
    summary: dict[str, Any] = {}
    for name in METRIC_NAMES:
        values = [np.asarray(d.metrics()[name], dtype=np.float64) for d in per_sequence]
        summary[name] = summarize(values, seed=seed)
    return summary
