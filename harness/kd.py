"""The standard-KD check: token-level divergences between teacher and student under teacher forcing.

Text scored: the teacher's own greedy generations on the suites' prompts (off-policy). Two modes:
- exact: both models in memory; full-vocabulary logprobs from both, any temperature, streamed in
  small batches so no (positions x vocab) array outlives its batch.
- lower bound: one model at a time; the teacher's top-k (+ a tail bucket) is kept, and the student
  is scored on those categories at its turn. Merging categories can only shrink KL/JS/TVD, so the
  values are lower bounds at T = 1 and are labelled so, with the teacher's top-k coverage.
Sequences are scored in batches of whole sequences bounded by a number of scored POSITIONS
(`BATCH_POSITIONS`, and at most `batch_size` sequences), so the full-vocabulary logprobs alive at once
are O(batch), whatever the number or length of the sequences (one sequence longer than the budget
is a batch of its own). Per-sequence results are cached (keyed by both fingerprints and the token
ids), so a resumed run does not score again. Besides the divergences, each pass keeps per position
the text's token, both models' logprobs of it and their top-1 tokens (`PositionTokens`): the
student's NLL / perplexity on the text and the worst-token lists with context come from those, at no
extra model cost.
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
from harness.metrics.summary import log_histogram, summarize
from harness.metrics.worst import PositionTokens, top_positions, top_sequences
from harness.sequence import nll_summary
from harness.stats import quantiles
from harness.store.cache import ResponseCache, blob_key

ProgressFn = Callable[[int, int], None]
EXACT = "full-vocab"
LOWER_BOUND = "top-k+tail lower bound"
# Divergences shown as histograms (fixed log-spaced bins): the KL-like ones; EAR and the flags are not.
HISTOGRAM_METRICS = ("forward_kl", "reverse_kl", "js", "tvd")
WORST_N = 10  # sequences and tokens listed per student
CONTEXT_BEFORE, CONTEXT_AFTER = 24, 8  # tokens of context shown around a worst token
TEXT_CHARS = 600  # longest text kept per worst sequence (from its start) and per prompt tail
BATCH_POSITIONS = 512  # scored positions per batch: 2 x 512 x 49,152 float32 logprobs = 200 MB at once


def position_batches(
    indices: Sequence[int], sequences: Sequence[KDSequence], max_positions: int, max_sequences: int
) -> list[list[int]]:
    """`indices` cut, in order, into batches of at most `max_sequences` sequences whose scored positions
    sum to at most `max_positions` (a longer sequence goes alone)."""
    batches: list[list[int]] = []
    used = 0
    for i in indices:
        n = len(sequences[i].token_ids) - sequences[i].start
        if batches and len(batches[-1]) < max_sequences and used + n <= max_positions:
            batches[-1].append(i)
            used += n
        else:
            batches.append([i])
            used = n
    return batches


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


@dataclass(frozen=True)
class KDScores:
    """One KD pass over a list of sequences: divergences per temperature, and the tokens per sequence."""

    per_t: dict[float, list[PositionDivergences]]
    tokens: list[PositionTokens]


def _top1(logprobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(argmax id, its logprob) per row of (n, k or V) logprobs."""
    best = np.argmax(logprobs, axis=-1)
    return best, np.take_along_axis(logprobs, best[:, None], axis=-1)[:, 0]


def _tokens_exact(seq: KDSequence, t_sc: TokenScores, s_sc: TokenScores) -> PositionTokens:
    assert t_sc.full_logprobs is not None and s_sc.full_logprobs is not None
    t_id, t_lp = _top1(t_sc.full_logprobs)
    s_id, s_lp = _top1(s_sc.full_logprobs)
    return PositionTokens.from_arrays(
        {
            "token_id": np.asarray(seq.token_ids[seq.start :]),
            "teacher_logprob": t_sc.token_logprobs,
            "student_logprob": s_sc.token_logprobs,
            "teacher_top1_id": t_id,
            "teacher_top1_logprob": t_lp,
            "student_top1_id": s_id,
            "student_top1_logprob": s_lp,
        }
    )


def exact_divergences(
    teacher: Backend,
    student: Backend,
    pair: tuple[str, str],
    sequences: Sequence[KDSequence],
    temperatures: Sequence[float],
    cache: ResponseCache,
    *,
    batch_size: int = 64,
    max_positions: int = BATCH_POSITIONS,
    progress: ProgressFn | None = None,
) -> KDScores:
    """Full-vocabulary divergences per sequence at each temperature (both models loaded), and tokens."""
    results: dict[float, list[PositionDivergences | None]] = {
        t: [None] * len(sequences) for t in temperatures
    }
    tokens: list[PositionTokens | None] = [None] * len(sequences)
    todo = []
    for index, seq in enumerate(sequences):
        cached = [
            cache.get_arrays(blob_key("kd-exact", *pair, seq.token_ids, seq.start, t)) for t in temperatures
        ]
        cached_tokens = cache.get_arrays(blob_key("kd-tokens", *pair, seq.token_ids, seq.start))
        if all(c is not None for c in cached) and cached_tokens is not None:
            for t, arrays in zip(temperatures, cached, strict=False):
                results[t][index] = _arrays_to_divergences(arrays)  # type: ignore[arg-type]
            tokens[index] = PositionTokens.from_arrays(cached_tokens)
        else:
            todo.append(index)
    done = len(sequences) - len(todo)
    for batch in position_batches(todo, sequences, max_positions, batch_size):
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
            found = tokens[index] = _tokens_exact(seq, t_sc, s_sc)
            blobs.append((blob_key("kd-tokens", *pair, seq.token_ids, seq.start), found.arrays()))
        cache.put_arrays_many(pair[1], blobs)
        done += len(batch)
        if progress:
            progress(done, len(sequences))
    return KDScores(
        {t: [d for d in divs if d is not None] for t, divs in results.items()},
        [tok for tok in tokens if tok is not None],
    )


def teacher_topk(
    teacher: Backend,
    fingerprint: str,
    sequences: Sequence[KDSequence],
    top_k: int,
    cache: ResponseCache,
    *,
    batch_size: int = 16,
) -> list[dict[str, np.ndarray]]:
    """The teacher's top-k ids and logprobs per position, and its logprob of the text's token (cached).

    For the lower-bound mode. An entry cached without "token_logprobs" (an older harness) is redone.
    """
    keys = [blob_key("kd-topk", fingerprint, s.token_ids, s.start, top_k) for s in sequences]
    out: list[dict[str, np.ndarray] | None] = [cache.get_arrays(key) for key in keys]
    out = [o if o is not None and "token_logprobs" in o else None for o in out]
    todo = [i for i, found in enumerate(out) if found is None]
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        scores = teacher.score_tokens(
            [ScoreRequest(sequences[i].token_ids, sequences[i].start, top_k=top_k) for i in batch]
        )
        blobs = []
        for i, sc in zip(batch, scores, strict=False):
            out[i] = {"ids": sc.topk_ids, "logprobs": sc.topk_logprobs, "token_logprobs": sc.token_logprobs}
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
    batch_size: int = 64,
    max_positions: int = BATCH_POSITIONS,
) -> tuple[list[PositionDivergences], list[np.ndarray], list[PositionTokens]]:
    """Divergences over the teacher's top-k + tail (T = 1), the teacher's top-k coverage per position,
    and the tokens (the teacher's top-1 is the best of its top-k, which is its true top-1)."""
    divs, coverage, tokens = [], [], []
    full = student.capabilities().full_vocab_logprobs
    for batch in position_batches(range(len(sequences)), sequences, max_positions, batch_size):
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
            tokens.append(_tokens_lower_bound(sequences[i], teacher_top[i], sc))
    return divs, coverage, tokens


def _tokens_lower_bound(seq: KDSequence, top: dict[str, np.ndarray], sc: TokenScores) -> PositionTokens:
    best = np.argmax(top["logprobs"], axis=-1)[:, None]
    if sc.full_logprobs is not None:
        s_id, s_lp = _top1(sc.full_logprobs)
    else:
        s_id, s_lp = sc.topk_ids[:, 0], sc.topk_logprobs[:, 0]
    return PositionTokens.from_arrays(
        {
            "token_id": np.asarray(seq.token_ids[seq.start :]),
            "teacher_logprob": top["token_logprobs"],
            "student_logprob": sc.token_logprobs,
            "teacher_top1_id": np.take_along_axis(top["ids"], best, axis=-1)[:, 0],
            "teacher_top1_logprob": np.take_along_axis(top["logprobs"], best, axis=-1)[:, 0],
            "student_top1_id": s_id,
            "student_top1_logprob": s_lp,
        }
    )


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


def coverage_summary(coverage: Sequence[np.ndarray]) -> dict[str, Any]:
    """The teacher's top-k mass per position: its mean and its LOW tail (where the bound is loosest)."""
    flat = np.concatenate([np.asarray(c, dtype=np.float64).ravel() for c in coverage]) if coverage else None
    if flat is None or flat.size == 0:
        return {"mean": None, "p1": None, "p10": None, "median": None, "min": None, "n_tokens": 0}
    p1, p10, median = quantiles(flat, [1.0, 10.0, 50.0])
    return {
        "mean": float(flat.mean()),
        "p1": p1,
        "p10": p10,
        "median": median,
        "min": float(flat.min()),
        "n_tokens": int(flat.size),
    }


def summarize_divergences(per_sequence: Sequence[PositionDivergences], seed: int) -> dict[str, Any]:
    """Mean (CI over sequences), median and tail percentiles for every divergence; histograms for
    the KL-like ones (fixed log-spaced bins, under "histogram")."""
    summary: dict[str, Any] = {}
    for name in METRIC_NAMES:
        values = [np.asarray(d.metrics()[name], dtype=np.float64) for d in per_sequence]
        summary[name] = summarize(values, seed=seed)
        if name in HISTOGRAM_METRICS:
            summary[name]["histogram"] = log_histogram(values)
    return summary


def kd_extras(
    sequences: Sequence[KDSequence],
    per_t: dict[float, list[PositionDivergences]],
    tokens: Sequence[PositionTokens],
    detokenize: Callable[[list[int]], str],
    seed: int,
    *,
    n_worst: int = WORST_N,
) -> dict[str, Any]:
    """The NLL of each model on the scored text, and the worst sequences and tokens with context.

    Returns {"nll": {"student": ..., "teacher": ...}, "worst": {...}} (shapes in `nll_summary` and
    `worst_lists`). The worst lists rank by forward KL at T = 1 (the lowest T when 1 was not run).
    """
    n_bytes = [len(detokenize(list(s.token_ids[s.start :])).encode("utf-8")) for s in sequences]
    nll = {
        who: nll_summary(
            [-float(np.sum(getattr(t, f"{who}_logprob"))) for t in tokens],
            [len(t) for t in tokens],
            n_bytes,
            seed=seed,
        )
        for who in ("student", "teacher")
    }
    if not per_t:
        return {"nll": nll, "worst": None}
    t_key = 1.0 if 1.0 in per_t else min(per_t)
    fkl = [np.asarray(d.forward_kl) for d in per_t[t_key]]
    worst = worst_lists(sequences, fkl, tokens, detokenize, n_worst)
    return {"nll": nll, "worst": {"t": f"{t_key:g}", "metric": "forward_kl", **worst}}


def _text(detokenize: Callable[[list[int]], str], ids: Sequence[int]) -> str:
    return detokenize([int(i) for i in ids])


def _prob(logprob: float) -> float | None:
    return None if np.isnan(logprob) else float(np.exp(logprob))


def _token(detokenize: Callable[[list[int]], str], token_id: int, logprob: float) -> dict[str, Any]:
    return {"id": int(token_id), "text": _text(detokenize, [token_id]), "prob": _prob(logprob)}


def worst_lists(
    sequences: Sequence[KDSequence],
    values: Sequence[np.ndarray],
    tokens: Sequence[PositionTokens],
    detokenize: Callable[[list[int]], str],
    n: int = WORST_N,
) -> dict[str, Any]:
    """The n sequences with the largest mean value and the n largest single positions, with context.

    Model text is untrusted: it is returned as plain strings (the report escapes it). Returns
    {"sequences": [{"seq_id", "mean", "max", "n_tokens", "prompt_tail", "text"}],
     "tokens": [{"seq_id", "position", "value", "before", "after", "token", "teacher_top1",
                 "student_top1"}]}, where position counts from the first scored token, "token" is
    the text's token with the teacher's and student's probabilities of it, and each top-1 is
    {"id", "text", "prob"} (T = 1).
    """
    worst_seqs = []
    for index, mean in top_sequences(values, n):
        seq = sequences[index]
        worst_seqs.append(
            {
                "seq_id": seq.seq_id,
                "mean": mean,
                "max": float(np.nanmax(values[index])),
                "n_tokens": int(np.asarray(values[index]).size),
                "prompt_tail": _text(detokenize, seq.token_ids[: seq.start])[-TEXT_CHARS:],
                "text": _text(detokenize, seq.token_ids[seq.start :])[:TEXT_CHARS],
            }
        )
    worst_tokens = []
    for index, position, value in top_positions(values, n):
        seq, tok = sequences[index], tokens[index]
        at = seq.start + position
        token = {
            "id": int(seq.token_ids[at]),
            "text": _text(detokenize, [seq.token_ids[at]]),
            "teacher_prob": _prob(float(tok.teacher_logprob[position])),
            "student_prob": _prob(float(tok.student_logprob[position])),
        }
        worst_tokens.append(
            {
                "seq_id": seq.seq_id,
                "position": position,
                "value": value,
                "before": _text(detokenize, seq.token_ids[max(0, at - CONTEXT_BEFORE) : at]),
                "after": _text(detokenize, seq.token_ids[at + 1 : at + 1 + CONTEXT_AFTER]),
                "token": token,
                "teacher_top1": _token(
                    detokenize, tok.teacher_top1_id[position], float(tok.teacher_top1_logprob[position])
                ),
                "student_top1": _token(
                    detokenize, tok.student_top1_id[position], float(tok.student_top1_logprob[position])
                ),
            }
        )
    return {"sequences": worst_seqs, "tokens": worst_tokens}
