"""Sequence-level and black-box checks: what can be measured from the models' text alone.

They need no logprobs from the teacher and no shared tokenizer, so they apply to a black-box (API)
teacher and to students with another tokenizer:
- final-answer agreement between teacher and student on the same item and variant, whatever the gold
  answer (the extracted answer of generate items, the chosen option of multiple-choice items);
- ROUGE-L (the `rouge_score` package, F-measure) between teacher and student outputs, and of each
  model against the gold reference, per suite, for generate items;
- output diagnostics per model: length in characters, words and (when recorded) tokens, truncation at
  the token budget, repetition loops and distinct-n;
- `nll_summary`: the student's per-token NLL, perplexity and bits per byte on the teacher's text, from
  per-sequence NLL sums (the KD pass gives them, or a loglikelihood pass when tokenizers differ).

Every rate and mean comes with a percentile-bootstrap CI over items (harness.stats); a suite whose
items pool several variants resamples whole items (clusters), as the same item's answers correlate.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.stats import bootstrap_group_means, bootstrap_mean_ci, quantiles
from harness.suites.base import ItemResult

# Words and single punctuation marks: "!!!!" is four units, so punctuation loops are caught too.
_UNITS = re.compile(r"\w+|[^\w\s]")
LOOP_TAIL_FRACTION = 0.5  # the share of an output (from its end) that must be one repeated n-gram
LOOP_MAX_PERIOD = 20  # longest repeated n-gram looked for, in units
LOOP_MIN_UNITS = 8  # shorter outputs are never called loops
NO_ANSWER = None  # an item whose filter extracted nothing: its own category in agreement


# ---- text diagnostics ---------------------------------------------------------------------------
def text_units(text: str) -> list[str]:
    """Words and punctuation marks, in order (the unit of loops and distinct-n)."""
    return _UNITS.findall(text)


def is_repetition_loop(
    text: str,
    *,
    tail_fraction: float = LOOP_TAIL_FRACTION,
    max_period: int = LOOP_MAX_PERIOD,
    min_units: int = LOOP_MIN_UNITS,
) -> bool:
    """True when the last `tail_fraction` of the text's units is one n-gram (n <= max_period) repeated
    at least twice, in any phase ("a b c a b c a" is a loop of "a b c", cut anywhere).

    That is how greedy decoding degenerates: once in a loop it never leaves, so the tail repeats.
    """
    if not 0.0 < tail_fraction <= 1.0 or max_period < 1:
        raise HarnessError("tail_fraction must be in (0, 1] and max_period >= 1")
    units = text_units(text)
    if len(units) < max(min_units, 2):
        return False
    tail = units[len(units) - int(np.ceil(len(units) * tail_fraction)) :]
    codes = {u: i for i, u in enumerate(dict.fromkeys(tail))}
    a = np.array([codes[u] for u in tail])
    for period in range(1, min(max_period, a.size // 2) + 1):
        if np.array_equal(a[period:], a[:-period]):
            return True
    return False


def distinct_n(text: str, n: int) -> float | None:
    """Distinct n-grams / n-grams over the text's units (1.0 = no repeats); None below n units."""
    if n < 1:
        raise HarnessError(f"distinct-n needs n >= 1, got {n}")
    units = text_units(text)
    grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(reference: str, prediction: str) -> float:
    """ROUGE-L F-measure (rouge_score's default tokenizer: lower-cased ASCII alphanumeric words)."""
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


# ---- NLL --------------------------------------------------------------------------------------
def nll_summary(
    nll_sums: Sequence[float],
    n_tokens: Sequence[int],
    n_bytes: Sequence[int] | None = None,
    *,
    seed: int = 0,
    n_boot: int = 1000,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Per-token NLL (nats, token-weighted mean, CI resampling sequences), perplexity = exp(NLL) with
    the CI mapped through exp, and bits per byte of text (comparable across tokenizers).

    Returns {"nll_per_token", "ci_low", "ci_high", "perplexity", "perplexity_ci_low",
    "perplexity_ci_high", "bits_per_byte", "n_sequences", "n_tokens", "n_bytes"}; None when undefined.
    """
    sums = np.asarray(nll_sums, dtype=np.float64)
    counts = np.asarray(n_tokens, dtype=np.float64)
    if sums.shape != counts.shape or sums.ndim != 1:
        raise HarnessError(f"nll_sums {sums.shape} and n_tokens {counts.shape} must be equal-length lists")
    keep = counts > 0
    sums, counts = sums[keep], counts[keep]
    total_bytes = int(np.sum(np.asarray(n_bytes, dtype=np.int64)[keep])) if n_bytes is not None else None
    out: dict[str, Any] = {
        "n_sequences": int(counts.size),
        "n_tokens": int(counts.sum()),
        "n_bytes": total_bytes,
        **dict.fromkeys(
            ("nll_per_token", "ci_low", "ci_high", "perplexity", "perplexity_ci_low", "perplexity_ci_high")
        ),
        "bits_per_byte": None,
    }
    if counts.size == 0:
        return out
    with np.errstate(over="ignore"):
        mean = float(sums.sum() / counts.sum())
        out["nll_per_token"], out["perplexity"] = mean, float(np.exp(mean))
        if total_bytes:
            out["bits_per_byte"] = float(sums.sum() / np.log(2.0) / total_bytes)
        if counts.size >= 2:
            replicates = bootstrap_group_means(sums[None, :], counts, n_boot=n_boot, seed=seed)[:, 0]
            alpha = 100.0 * (1.0 - confidence) / 2.0
            low, high = quantiles(replicates, [alpha, 100.0 - alpha])
            if not (np.isnan(low) or np.isnan(high)):
                out["ci_low"], out["ci_high"] = float(low), float(high)
                out["perplexity_ci_low"], out["perplexity_ci_high"] = float(np.exp(low)), float(np.exp(high))
    return out


# ---- items --------------------------------------------------------------------------------------
def is_generated(item: ItemResult) -> bool:
    """A generate item (free text); multiple-choice items record their options' logprobs."""
    return "option_logprobs" not in item.details


def final_answer(item: ItemResult) -> str | None:
    """The answer compared between models: the extracted answer (generate) or the chosen option."""
    value = item.extracted if is_generated(item) else item.output
    return None if value is None else " ".join(str(value).split())


def _estimate(
    values: Sequence[float], clusters: Sequence[Any] | None, seed: int, n_boot: int
) -> dict[str, Any]:
    if not values:
        return {"value": None, "ci_low": None, "ci_high": None, "n": 0, "note": "no items"}
    return bootstrap_mean_ci(
        np.asarray(values, dtype=np.float64),
        None if clusters is None or len(set(clusters)) == len(clusters) else list(clusters),
        n_boot=n_boot,
        seed=seed,
    ).as_dict()


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None, "p90": None, "max": None}
    x = np.asarray(values, dtype=np.float64)
    median, p90 = quantiles(x, [50.0, 90.0])
    return {"mean": float(x.mean()), "median": median, "p90": p90, "max": float(x.max())}


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def output_diagnostics(items: Sequence[ItemResult]) -> dict[str, Any]:
    """Length, truncation, loops and distinct-n over one model's generate items.

    Tokens come from item.details["generated_tokens"] when the suite recorded it (None otherwise).
    """
    outputs = [i for i in items if is_generated(i)]
    loops = [is_repetition_loop(i.output) for i in outputs]
    tokens = [i.details.get("generated_tokens") for i in outputs]
    counts = [float(t) for t in tokens if isinstance(t, int)]
    n = len(outputs)
    return {
        "n_outputs": n,
        "chars": _stats([len(i.output) for i in outputs]),
        "words": _stats([len(i.output.split()) for i in outputs]),
        "tokens": _stats(counts) if n and len(counts) == n else None,
        "truncated_rate": sum(i.truncated for i in outputs) / n if n else None,
        "n_truncated": int(sum(i.truncated for i in outputs)),
        "loop_rate": sum(loops) / n if n else None,
        "n_loops": int(sum(loops)),
        "distinct_1": _mean([distinct_n(i.output, 1) for i in outputs]),
        "distinct_2": _mean([distinct_n(i.output, 2) for i in outputs]),
    }


Key = tuple[str, str, str]  # (suite, variant, item_id)
Pair = tuple[Key, ItemResult, ItemResult]  # an item's teacher and student results


def _pairs(
    teacher: dict[Key, ItemResult], student: dict[Key, ItemResult]
) -> list[tuple[Key, ItemResult, ItemResult]]:
    return [(key, teacher[key], student[key]) for key in teacher if key in student]


def _agreement_block(
    pairs: list[tuple[Key, ItemResult, ItemResult]], seed: int, n_boot: int
) -> dict[str, Any]:
    """Agreement of final answers over the pairs; None (nothing extracted) is its own answer, and how
    often each side had none is counted, so agreement by both failing is visible."""
    answers = [(final_answer(t), final_answer(s)) for _, t, s in pairs]
    if not any(a is not None or b is not None for a, b in answers):
        return {
            "value": None,
            "ci_low": None,
            "ci_high": None,
            "n": len(pairs),
            "note": "no answers extracted",
        }
    agree = [float(a == b) for a, b in answers]
    clusters = [f"{key[0]}\x00{key[2]}" for key, _, _ in pairs]  # one item across its variants
    out = _estimate(agree, clusters, seed, n_boot)
    out["n_both_missing"] = sum(a is None and b is None for a, b in answers)
    out["n_teacher_missing"] = sum(a is None for a, _ in answers)
    out["n_student_missing"] = sum(b is None for _, b in answers)
    return out


def _by_model(items: Sequence[ItemResult]) -> dict[str, dict[Key, ItemResult]]:
    out: dict[str, dict[Key, ItemResult]] = defaultdict(dict)
    for i in items:
        out[i.model][(i.suite, i.variant, i.item_id)] = i
    return out


def _agreement(
    teacher: dict[Key, ItemResult],
    student: dict[Key, ItemResult],
    groups: Mapping[str, str],
    seed: int,
    n_boot: int,
) -> dict[str, Any]:
    pairs = _pairs(teacher, student)
    by_suite: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs:
        by_suite[pair[0][0]].append(pair)
    suites: dict[str, Any] = {}
    for suite, rows in sorted(by_suite.items()):
        variants = sorted({key[1] for key, _, _ in rows})
        suites[suite] = {
            "variants": {
                v: _agreement_block([p for p in rows if p[0][1] == v], seed, n_boot) for v in variants
            },
            "all": _agreement_block(rows, seed, n_boot),
        }
    group_names = sorted(set(groups.values()))
    group_blocks = {
        g: _agreement_block([p for p in pairs if groups.get(p[0][0]) == g], seed, n_boot) for g in group_names
    }
    scored = [p for p in pairs if suites[p[0][0]]["all"]["value"] is not None]
    return {"suites": suites, "groups": group_blocks, "overall": _agreement_block(scored, seed, n_boot)}


def _rouge(
    by_model: dict[str, dict[Key, ItemResult]], teacher: str | None, seed: int, n_boot: int
) -> dict[str, Any]:
    """Per suite: ROUGE-L of each student against the teacher's output, and of each model against gold."""
    out: dict[str, Any] = {}
    suites = sorted({key[0] for rows in by_model.values() for key, i in rows.items() if is_generated(i)})
    for suite in suites:
        vs_teacher: dict[str, Any] = {}
        vs_gold: dict[str, Any] = {}
        for model, rows in by_model.items():
            mine = {k: i for k, i in rows.items() if k[0] == suite and is_generated(i)}
            gold = [(k, i) for k, i in mine.items() if i.target.strip()]
            if gold:
                vs_gold[model] = _estimate(
                    [rouge_l(i.target, i.output) for _, i in gold], [k[2] for k, _ in gold], seed, n_boot
                )
            if teacher is None or model == teacher:
                continue
            ref = by_model[teacher]
            shared = [(k, i) for k, i in mine.items() if k in ref]
            vs_teacher[model] = _estimate(
                [rouge_l(ref[k].output, i.output) for k, i in shared], [k[2] for k, _ in shared], seed, n_boot
            )
        out[suite] = {"vs_teacher": vs_teacher, "vs_gold": vs_gold}
    return out


def sequence_checks(
    items: Sequence[ItemResult],
    roles: Mapping[str, str],
    *,
    seed: int = 0,
    n_boot: int = 1000,
    groups: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """All text-only checks over a run's items.

    roles: model label -> role ("teacher", "student", "base"); groups: suite -> its group (e.g.
    "bbh:navigate" -> "bbh"), for pooled agreement per group. Returns
    {"models": {label: {"role", **output_diagnostics, "suites": {suite: output_diagnostics}}},
     "agreement": {student: {"suites": {suite: {"variants": {v: block}, "all": block}},
                             "groups": {group: block}, "overall": block}},
     "rouge_l": {suite: {"vs_teacher": {student: estimate}, "vs_gold": {model: estimate}}}}
    where an estimate is {"value", "ci_low", "ci_high", "n", "note"} and an agreement block adds
    "n_both_missing", "n_teacher_missing", "n_student_missing" (agreement is empty without a teacher).
    """
    by_model = _by_model(items)
    teacher = next((label for label, role in roles.items() if role == "teacher"), None)
    models: dict[str, Any] = {}
    for label in [*roles, *(m for m in by_model if m not in roles)]:
        rows = list(by_model.get(label, {}).values())
        per_suite = {
            s: output_diagnostics([i for i in rows if i.suite == s]) for s in sorted({i.suite for i in rows})
        }
        models[label] = {
            "role": roles.get(label, "model"),
            **output_diagnostics(rows),
            "suites": {s: d for s, d in per_suite.items() if d["n_outputs"]},
        }
    agreement: dict[str, Any] = {}
    if teacher is not None:
        for label in models:
            if label != teacher:
                agreement[label] = _agreement(
                    by_model.get(teacher, {}), by_model.get(label, {}), groups or {}, seed, n_boot
                )
    return {"models": models, "agreement": agreement, "rouge_l": _rouge(by_model, teacher, seed, n_boot)}
