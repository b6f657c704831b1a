"""The KD check's extras at each model's turn: gold references as a third text, per-suite breakdowns of
every text, and linear CKA of hidden states. `harness.compare` calls `teacher_turn` once the teacher's
KD text exists and `student_turn` after each student's KD entry; both keep one model in memory at a
time unless the KD mode already holds both (exact)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.backends.base import Backend, ModelInfo
from harness.kd import (
    EXACT,
    LOWER_BOUND,
    KDSequence,
    coverage_summary,
    exact_divergences,
    kd_extras,
    lower_bound_divergences,
    summarize_divergences,
    teacher_topk,
)
from harness.kd_cka import cka_entry, collect_features, hidden_state_gap, skipped
from harness.kd_gold import GOLD_TEXT, GoldPlan, build_gold
from harness.metrics.divergence import PositionDivergences
from harness.metrics.summary import summarize

OTHER_TOKENIZER = "the student's tokenizer differs from the teacher's, so the same tokens cannot be compared"


@dataclass
class TeacherExtras:
    """What the teacher's turn leaves for the students' turns."""

    prompt_suites: list[str]  # the suite of each KD prompt (aligned with the run's kd_prompts)
    gold: GoldPlan
    gold_top: list[dict[str, np.ndarray]] = field(default_factory=list)  # lower bound: teacher top-k on gold
    features: Path | None = None
    features_skipped: str | None = None


def _suite_prompts(run: Any, backend: Backend) -> list[tuple[str, list[str]]]:
    """(suite, its KD prompts rendered with `backend`'s chat template) of the suites that have any
    (a multiple-choice suite generates nothing, so it has none)."""
    prompts = [(s.info().name, s.kd_prompts(render=backend.apply_chat_template)) for s in run.suites]
    return [(name, found) for name, found in prompts if found]


def _per_suite(run: Any, backend: Backend) -> int:
    """An even share of kd_max_sequences for each suite that has KD prompts (ceil)."""
    return -(-run.config.kd_max_sequences // max(1, len(_suite_prompts(run, backend))))


def kd_prompt_owners(run: Any, backend: Backend) -> dict[str, str]:
    """The KD prompts rendered with `backend`'s chat template, an even share from each suite that has
    any, deduplicated in order; each mapped to the first suite that has it."""
    suites = _suite_prompts(run, backend)
    share = -(-run.config.kd_max_sequences // max(1, len(suites)))
    owner: dict[str, str] = {}
    for name, prompts in suites:
        for prompt in prompts[:share]:
            owner.setdefault(prompt, name)
    return owner


def kd_prompt_list(run: Any, backend: Backend) -> list[str]:
    """The KD prompts rendered with `backend`'s chat template: an even share from each suite, deduplicated."""
    return list(kd_prompt_owners(run, backend))


def _prompt_suites(run: Any, backend: Backend) -> list[str]:
    """The suite each KD prompt came from (the first suite that has it, as the prompt list dedups)."""
    owner = kd_prompt_owners(run, backend)
    return [owner.get(p, "?") for p in run.kd_prompts]


def teacher_turn(run: Any, teacher: Backend, t_info: ModelInfo, mode: str, label: str) -> TeacherExtras:
    """Gold sequences (and the teacher's top-k on them in lower-bound mode) and the teacher's features."""
    started = time.perf_counter()
    config = run.config
    gold = build_gold(run.suites, teacher, _per_suite(run, teacher), config.kd_max_tokens)
    extras = TeacherExtras(_prompt_suites(run, teacher), gold)
    if mode == LOWER_BOUND and gold.sequences:
        extras.gold_top = teacher_topk(
            teacher, t_info.fingerprint, gold.sequences, config.kd_top_k, run.cache
        )
    if config.kd_cka_positions == 0:
        extras.features_skipped = "turned off (--kd-cka-positions 0)"
    elif not run.kd_sequences:
        extras.features_skipped = "the teacher generated no text to take hidden states on"
    else:
        extras.features_skipped = hidden_state_gap(teacher, "teacher")
    if extras.features_skipped is None:
        extras.features = collect_features(
            teacher,
            t_info.fingerprint,
            run.kd_sequences,
            config.kd_cka_positions,
            config.seed,
            config.cache_dir,
        )
    run.models[label]["timings"]["kd_extras_seconds"] = time.perf_counter() - started
    return extras


def suite_map(sequences: Sequence[KDSequence], prompt_suites: Sequence[str]) -> dict[str, str]:
    """seq_id ("kd-3", "kd-on-3") -> suite of KD prompt 3."""
    out = {}
    for seq in sequences:
        index = int(seq.seq_id.rsplit("-", 1)[1])
        out[seq.seq_id] = prompt_suites[index] if index < len(prompt_suites) else "?"
    return out


def by_suite(
    sequences: Sequence[KDSequence],
    per_t: Mapping[float, Sequence[PositionDivergences]],
    suite_of: Mapping[str, str],
    seed: int,
) -> dict[str, Any]:
    """{suite: {"n_sequences", "n_tokens", "temperatures": {T: {metric: summary}}}} (CIs over sequences)."""
    groups: dict[str, list[int]] = {}
    for index, seq in enumerate(sequences):
        groups.setdefault(suite_of.get(seq.seq_id, "?"), []).append(index)
    out: dict[str, Any] = {}
    for suite, indices in groups.items():
        temps = {}
        for t, divs in per_t.items():
            picked = [divs[i] for i in indices]
            temps[f"{t:g}"] = {
                name: summarize([np.asarray(v) for v in values], seed=seed)
                for name, values in _by_metric(picked).items()
            }
        first = next(iter(per_t.values()))
        out[suite] = {
            "n_sequences": len(indices),
            "n_tokens": int(sum(len(first[i]) for i in indices)),
            "temperatures": temps,
        }
    return out


def _by_metric(divs: Sequence[PositionDivergences]) -> dict[str, list[np.ndarray]]:
    names = divs[0].metrics().keys() if divs else ()
    return {name: [d.metrics()[name] for d in divs] for name in names}


def kd_suites(run: Any, sequences: Sequence[KDSequence], per_t: Mapping[float, Any]) -> dict[str, Any]:
    """Per-suite breakdown of one text's divergences (the teacher's or the student's generations)."""
    extras = getattr(run, "kd_extras", None)
    if extras is None or not sequences or not per_t:
        return {}
    return by_suite(sequences, per_t, suite_map(sequences, extras.prompt_suites), run.config.seed)


def _gold_entry(
    run: Any, mode: str, teacher: Backend, student: Backend, pair: tuple[str, str], label: str
) -> dict[str, Any]:
    extras: TeacherExtras = run.kd_extras
    config, gold = run.config, extras.gold
    entry: dict[str, Any] = {"text": GOLD_TEXT, "semantics": mode, "skipped": None}
    entry["suites_skipped"] = dict(gold.skipped)
    if not gold.sequences:
        entry["skipped"] = "no suite in this run has gold reference texts for its KD prompts"
        return entry
    if mode == EXACT:
        scores = exact_divergences(
            teacher, student, pair, gold.sequences, config.kd_temperatures, run.cache,
            progress=run._report(f"{label}: KD gold text"),
        )  # fmt: skip
        per_t, tokens = scores.per_t, scores.tokens
    else:
        divs, coverage, tokens = lower_bound_divergences(
            student, pair, gold.sequences, extras.gold_top, run.cache
        )
        per_t = {1.0: divs}
        entry.update(top_k=config.kd_top_k, coverage=coverage_summary(coverage))
        entry["coverage_mean"] = entry["coverage"]["mean"]
    entry["temperatures"] = {f"{t:g}": summarize_divergences(d, config.seed) for t, d in per_t.items()}
    entry["n_sequences"] = len(gold.sequences)
    entry["n_tokens"] = int(sum(len(d) for d in next(iter(per_t.values()))))
    found = kd_extras(gold.sequences, per_t, tokens, student.detokenize, config.seed)
    entry["nll"] = {"text": "gold references", "tokenization": "shared", **found["nll"]}
    entry["worst"] = found["worst"]
    entry["suites"] = by_suite(gold.sequences, per_t, gold.suite_of, config.seed)
    return entry


def _cka(run: Any, student: Backend, s_info: ModelInfo) -> dict[str, Any]:
    extras: TeacherExtras = run.kd_extras
    if extras.features is None:
        return skipped(extras.features_skipped or "the teacher's hidden states were not collected")
    gap = hidden_state_gap(student, "student")
    if gap:
        return skipped(gap)
    config = run.config
    path = collect_features(
        student, s_info.fingerprint, run.kd_sequences, config.kd_cka_positions, config.seed, config.cache_dir
    )
    return cka_entry(extras.features, path, len(run.kd_sequences))


def student_turn(
    run: Any,
    mode: str,
    teacher: Backend,
    student: Backend,
    t_info: ModelInfo,
    s_info: ModelInfo,
    label: str,
    entry: Mapping[str, Any],
) -> dict[str, Any]:
    """{"gold": a KD entry on the gold texts, "cka": the layer x layer CKA} for one student."""
    if getattr(run, "kd_extras", None) is None:
        return {}
    started = time.perf_counter()
    if not (entry.get("tokenizer") or {}).get("identical", True):
        out = {"gold": {"text": GOLD_TEXT, "skipped": OTHER_TOKENIZER}, "cka": skipped(OTHER_TOKENIZER)}
    else:
        pair = (t_info.fingerprint, s_info.fingerprint)
        out = {
            "gold": _gold_entry(run, mode, teacher, student, pair, label),
            "cka": _cka(run, student, s_info),
        }
    run.models[label]["timings"]["kd_extras_seconds"] = time.perf_counter() - started
    return out
