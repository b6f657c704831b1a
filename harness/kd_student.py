"""The KD check of one student at its turn in `harness compare`: which KD mode the teacher allows, the
tokenizer verdict, token-level divergences on the teacher's text (exact or lower bound) and on the
student's own text (on-policy), or sequence-level checks only when tokens cannot be compared."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from harness.backends.base import Backend, LoglikelihoodRequest, ModelInfo
from harness.config import CompareConfig
from harness.errors import HarnessError
from harness.kd import (
    EXACT,
    LOWER_BOUND,
    KDSequence,
    build_sequences,
    coverage_summary,
    exact_divergences,
    kd_extras,
    lower_bound_divergences,
    summarize_divergences,
)
from harness.kd_extras import kd_prompt_list, kd_suites
from harness.metrics.tokenizers import SEQUENCE_ONLY, TOKEN_LEVEL, compare_vocabularies, vocabulary_of
from harness.regress import kd_per_sequence
from harness.sequence import nll_summary
from harness.suites.base import Request

if TYPE_CHECKING:
    from harness.compare import _Run

BLACK_BOX = "sequence-level only (black-box teacher)"
BLACK_BOX_SKIP = (
    "the teacher returns no logprobs (a black-box model), so token-level KD divergences cannot be computed: "
    "only sequence-level checks apply (the student's NLL on the teacher's text, answer agreement, ROUGE)"
)


def _kd_mode(config: CompareConfig, teacher: Backend) -> str:
    if config.kd_mode == "exact" and not teacher.capabilities().full_vocab_logprobs:
        raise HarnessError(
            "--kd-mode exact needs full-vocabulary logprobs from the teacher's backend: use hf"
        )
    if teacher.capabilities().max_top_k == 0 and not teacher.capabilities().full_vocab_logprobs:
        return BLACK_BOX  # no logprobs at all (an API teacher): text-level checks only
    if config.kd_mode != "auto":
        return EXACT if config.kd_mode == "exact" else LOWER_BOUND
    return EXACT if teacher.capabilities().full_vocab_logprobs else LOWER_BOUND


def _fit_top_k(run: _Run, teacher: Backend) -> CompareConfig:
    """The run's config with kd_top_k lowered to what a (served) teacher returns, noted in the report."""
    limit = teacher.capabilities().max_top_k
    if run.config.kd_top_k <= limit:
        return run.config
    run.notes.append(f"the teacher returns at most {limit} top logprobs: KD lower bound over its top-{limit}")
    run.config = replace(run.config, kd_top_k=limit)
    return run.config


def _scores_targets(student: Backend, mode: str) -> bool:
    """Whether the student can be scored on the teacher's tokens in this KD mode."""
    caps = student.capabilities()
    return mode != BLACK_BOX and (
        caps.full_vocab_logprobs or (mode == LOWER_BOUND and caps.target_token_logprobs)
    )


def _vocabulary(backend: Backend) -> tuple[dict[str, int], dict[str, str]] | None:
    """(token -> id, special-token roles) of a backend that holds a transformers tokenizer, else None."""
    tok = getattr(backend, "_tok", None)  # both local-weights backends keep theirs there
    return vocabulary_of(tok) if tok is not None and hasattr(tok, "get_vocab") else None


def _tokenizer_verdict(run: _Run, student: Backend, t_info: ModelInfo, s_info: ModelInfo) -> dict[str, Any]:
    """Vocabularies compared (token -> id and special tokens); the tokenizer_id hashes where not readable."""
    t_vocab, s_vocab = getattr(run, "teacher_vocab", None), _vocabulary(student)
    same_id = t_info.tokenizer_id == s_info.tokenizer_id
    if t_vocab is None or s_vocab is None:
        verdict: dict[str, Any] = {"identical": same_id, "verdict": TOKEN_LEVEL if same_id else SEQUENCE_ONLY}
        verdict["compared"] = "tokenizer_id (vocabulary hash)"
    else:
        verdict = compare_vocabularies(t_vocab[0], s_vocab[0], t_vocab[1], s_vocab[1])
        verdict["compared"] = "vocabularies"
        verdict["identical"] = verdict["identical"] and same_id
        verdict["verdict"] = TOKEN_LEVEL if verdict["identical"] else SEQUENCE_ONLY
    return verdict


def _text_only(run: _Run, base: dict[str, Any], student: Backend, reason: str) -> dict[str, Any]:
    """A KD entry without token-level divergences: why, and the student's NLL on the teacher's text
    (re-tokenized its own way) when the student can score text."""
    caps = student.capabilities()
    base["skipped"] = reason
    base["nll"] = {
        "text": "teacher generations",
        "tokenization": "each model's own (the teacher's text re-tokenized for the student)",
        "student": _nll_retokenized(run, student) if caps.full_vocab_logprobs or caps.max_top_k else None,
        "teacher": None,
    }
    return base


def _nll_retokenized(run: _Run, student: Backend) -> dict[str, Any]:
    """The student's NLL on the teacher's KD text, tokenized its own way (prompts in its own template)."""
    prompts = kd_prompt_list(run, student)
    texts = getattr(run, "kd_texts", [])
    if len(prompts) != len(texts):
        prompts = run.kd_prompts
    pairs = [(p, t) for p, t in zip(prompts, texts, strict=False) if t]
    scores = student.loglikelihood([LoglikelihoodRequest(p, t) for p, t in pairs]) if pairs else []
    return nll_summary(
        [-s.logprob for s in scores],
        [s.n_tokens for s in scores],
        [len(t.encode("utf-8")) for _, t in pairs],
        seed=run.config.seed,
    )


def _text_only_reason(mode: str, tokenizer: dict[str, Any], student: Backend, label: str) -> str | None:
    """Why this student gets sequence-level checks only, or None when its tokens can be compared."""
    if mode == BLACK_BOX:
        return BLACK_BOX_SKIP
    if not tokenizer["identical"]:
        return (
            f"{label} has a different tokenizer from the teacher (its vocabulary differs), so token-level "
            "divergences are undefined: only sequence-level checks apply"
        )
    if not _scores_targets(student, mode):
        return (
            f"{label}'s backend returns no logprobs of the teacher's tokens: only sequence-level checks apply"
        )
    return None


def _kd_for_student(
    run: _Run, mode: str, teacher: Backend, student: Backend, t_info: ModelInfo, s_info: ModelInfo, label: str
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "text": "teacher generations (off-policy)",
        "semantics": mode,
        "n_sequences": len(run.kd_sequences),
        "skipped": None,
        "top_k": None,
        "coverage_mean": None,
        "temperatures": {},
    }
    base["tokenizer"] = _tokenizer_verdict(run, student, t_info, s_info)
    reason = _text_only_reason(mode, base["tokenizer"], student, label)
    if reason is not None:
        return _text_only(run, base, student, reason)
    if not run.kd_sequences:
        base["skipped"] = "the teacher generated no text to score"
        return base
    pair = (t_info.fingerprint, s_info.fingerprint)
    started = time.perf_counter()
    if mode == EXACT:
        _exact_entry(run, base, teacher, student, pair, label)
    else:
        _lower_bound_entry(run, base, student, pair)
    run.models[label]["timings"]["kd_scoring_seconds"] = time.perf_counter() - started
    if "on_policy" not in base:
        base["on_policy"] = {
            "text": "student generations (on-policy)",
            "skipped": "on-policy scoring needs teacher and student in memory together (--kd-mode exact)",
        }
    return base


def _exact_entry(
    run: _Run, base: dict[str, Any], teacher: Backend, student: Backend, pair: tuple[str, str], label: str
) -> None:
    """Exact divergences on the teacher's text at every temperature, then the on-policy entry."""
    config = run.config
    scores = exact_divergences(
        teacher,
        student,
        pair,
        run.kd_sequences,
        config.kd_temperatures,
        run.cache,
        progress=run._report(f"{label}: KD scoring"),
    )
    per_t = scores.per_t
    base["temperatures"] = {f"{t:g}": summarize_divergences(divs, config.seed) for t, divs in per_t.items()}
    base["n_tokens"] = int(sum(len(d.forward_kl) for d in next(iter(per_t.values()))))
    base.update(_kd_extras(run, per_t, scores.tokens, run.kd_sequences, student, "teacher generations"))
    base["suites"] = kd_suites(run, run.kd_sequences, per_t)
    if 1.0 in per_t:  # per-sequence values the regression gate pairs across runs
        base["per_sequence"] = kd_per_sequence(run.kd_sequences, per_t[1.0])
    base["on_policy"] = _on_policy(run, teacher, student, pair, label)


def _lower_bound_entry(run: _Run, base: dict[str, Any], student: Backend, pair: tuple[str, str]) -> None:
    """The top-k+tail lower bound at T = 1 against the teacher's kept top-k, with its coverage."""
    config = run.config
    divs, coverage, tokens = lower_bound_divergences(
        student, pair, run.kd_sequences, run.teacher_top, run.cache
    )
    base["temperatures"] = {"1": summarize_divergences(divs, config.seed)}
    base["top_k"] = config.kd_top_k
    base["coverage_mean"] = float(
        sum(float(c.sum()) for c in coverage) / max(1, sum(len(c) for c in coverage))
    )
    base["coverage"] = coverage_summary(coverage)
    base["per_sequence"] = kd_per_sequence(run.kd_sequences, divs)
    base["n_tokens"] = int(sum(len(d.forward_kl) for d in divs))
    base.update(_kd_extras(run, {1.0: divs}, tokens, run.kd_sequences, student, "teacher generations"))
    base["suites"] = kd_suites(run, run.kd_sequences, {1.0: divs})
    if any(t != 1.0 for t in config.kd_temperatures):
        run.notes.append("KD at T != 1 needs full-vocabulary logprobs; only T = 1 (lower bound) was computed")


def _on_policy(
    run: _Run, teacher: Backend, student: Backend, pair: tuple[str, str], label: str
) -> dict[str, Any]:
    """The student's own greedy text on the KD prompts, scored by both: where exposure bias shows."""
    entry: dict[str, Any] = {"text": "student generations (on-policy)", "semantics": EXACT, "skipped": None}
    requests = [Request(kind="generate", prompt=p, params=run.kd_params()) for p in run.kd_prompts]
    answers = run._answer(label, "KD text", student, pair[1], requests)
    ids = [f"kd-on-{i}" for i in range(len(requests))]
    sequences = build_sequences(student, run.kd_prompts, [answers[r].token_ids for r in requests], ids)
    if not sequences:
        entry["skipped"] = "the student generated no text to score"
        return entry
    scores = exact_divergences(
        teacher,
        student,
        pair,
        sequences,
        run.config.kd_temperatures,
        run.cache,
        progress=run._report(f"{label}: KD on-policy"),
    )
    per_t = scores.per_t
    entry["temperatures"] = {f"{t:g}": summarize_divergences(d, run.config.seed) for t, d in per_t.items()}
    entry["n_sequences"] = len(sequences)
    entry["n_tokens"] = int(sum(len(d.forward_kl) for d in next(iter(per_t.values()))))
    entry.update(_kd_extras(run, per_t, scores.tokens, sequences, student, "student generations"))
    entry["suites"] = kd_suites(run, sequences, per_t)
    return entry


def _kd_extras(
    run: _Run,
    per_t: dict[float, Any],
    tokens: list[Any],
    sequences: list[KDSequence],
    student: Backend,
    text: str,
) -> dict[str, Any]:
    """{"nll": both models' NLL on the scored text, "worst": worst sequences/tokens with context}."""
    extras = kd_extras(sequences, per_t, tokens, student.detokenize, run.config.seed)
    return {"nll": {"text": text, "tokenization": "shared", **extras["nll"]}, "worst": extras["worst"]}
