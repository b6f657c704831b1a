"""`harness compare`: schedule every model's work, score, compare, and write the run record.

Scheduling (each model loads once): the teacher answers every suite and generates the KD text;
each student (then the base) answers every suite and is scored on the teacher's text. In exact KD
mode the teacher stays loaded while students take their turns (both fit); otherwise the teacher's
top-k is kept and the teacher is closed before the first student loads.

Parts: loading models (harness.models), each student's KD check (harness.kd_student), the KD extras
(harness.kd_extras), the cost summary (harness.cost) and the manifest's setting (harness.manifest).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.backends.base import Backend, ModelInfo, SamplingParams
from harness.config import CompareConfig
from harness.cost import cost_summary
from harness.errors import HarnessError
from harness.execute import run_requests
from harness.kd import EXACT, LOWER_BOUND, KDSequence, build_sequences, teacher_topk
from harness.kd_extras import kd_prompt_list, student_turn, teacher_turn
from harness.kd_student import BLACK_BOX, _fit_top_k, _kd_for_student, _kd_mode, _scores_targets, _vocabulary
from harness.manifest import _config_dict, _hardware, _versions
from harness.metrics.calibration import suite_calibration
from harness.models import _load, _model_entry, check_context
from harness.store.cache import ResponseCache
from harness.store.record import write_record
from harness.suites.base import ItemResult, Request, Suite

Progress = Callable[[str, int, int], None]  # (phase, done, total)
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
        prompts = kd_prompt_list(self, backend)
        self.kd_prompts = prompts
        requests = [Request(kind="generate", prompt=p, params=self.kd_params()) for p in prompts]
        answers = self._answer(label, "KD text", backend, fingerprint, requests)
        ids = [f"kd-{i}" for i in range(len(prompts))]
        generated = [answers[r].token_ids for r in requests]
        self.kd_sequences = build_sequences(backend, prompts, generated, ids) if token_level else []
        # kept for the checks that need only text (a student with another tokenizer), and the verdict
        self.kd_texts: list[str] = [answers[r].text for r in requests]
        self.teacher_vocab: tuple[dict[str, int], dict[str, str]] | None = _vocabulary(backend)


def _scores_likelihood(backend: Backend) -> bool:
    """Whether a backend can score a continuation's loglikelihood (logprobs and a tokenizer)."""
    caps = backend.capabilities()
    has_logprobs = caps.full_vocab_logprobs or caps.max_top_k > 0
    return has_logprobs and bool(backend.info().extra.get("can_tokenize", True))


def _scorable_suites(run: _Run, teacher: Backend, label: str) -> list[Suite]:
    """The suites the teacher can answer: one scored by loglikelihood (multiple choice) is left out, with a
    note, when the teacher is a black box (no logprobs) or has no tokenizer here."""
    if _scores_likelihood(teacher):
        return run.suites
    kept = []
    for suite in run.suites:
        items = suite.item_requests(render=teacher.apply_chat_template)
        if any(r.kind == "loglikelihood" for item in items for r in item.requests):
            run.notes.append(
                f"suite {suite.info().name} left out: it is scored by loglikelihood, and the teacher {label} "
                "returns no logprobs (a black box) or has no tokenizer here"
            )
        else:
            kept.append(suite)
    if not kept:
        raise HarnessError(
            f"every selected suite is scored by loglikelihood, which the teacher {label} cannot do "
            "(no logprobs or no tokenizer): choose generation suites, e.g. --suite cot-basic --suite if-basic"
        )
    return kept


def run_compare(config: CompareConfig, suites: list[Suite], progress: Progress | None = None) -> Path:
    """Run everything and write the record to config.out_dir; returns that folder."""
    run = _Run(config, suites, progress)
    started = time.time()
    roles = config.roles()
    teacher_role, teacher_spec = roles[0]
    teacher, t_info, seconds, rss = _load(teacher_role, teacher_spec, config)
    run.teacher_info = t_info
    run.models[teacher_spec.label] = _model_entry(teacher_role, teacher_spec, t_info, seconds, rss, teacher)
    run.suites = _scorable_suites(run, teacher, teacher_spec.label)
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
