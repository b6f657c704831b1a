"""A realistic synthetic run record for report tests, written with the real write_record().

Teacher, base and student(s) on three suites (ICL at k=0,1,2,4; CoT with cot/direct; IF), a KD
summary (full vocabulary for most students, top-k + tail lower bound for the last one when there
are two students or more). The teacher scores 0 on cot/direct, so that retention is undefined there.
Metrics are computed from the items, so numbers are consistent with items.jsonl.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from harness import stats
from harness.store.record import write_record
from harness.suites.base import ItemResult

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "</textarea>",
    "\"'&",
    "\\begin{document}",
    # script that would run if any of these reached the page as markup (the browser tests check the flag)
    '<svg onload="window.__pwned=1">',
    "</script><script>window.__pwned=1</script>",
    '"><img src=x onerror="window.__pwned=1;alert(2)">',
    "<!--<script>window.__pwned=1//",
]
DEFAULT_MODELS: tuple[tuple[str, str], ...] = (
    ("teacher", "teacher"),
    ("base", "base"),
    ("student", "student"),
    ("student-topk", "student"),
)
# suite -> (ability, baseline, {variant: teacher accuracy}); students are scaled down from these
SUITES: dict[str, tuple[str, str, dict[str, float]]] = {
    "icl-arith": ("icl", "k=0", {"k=0": 0.45, "k=1": 0.6, "k=2": 0.7, "k=4": 0.75}),
    "cot-arith": ("cot", "direct", {"cot": 0.5, "direct": 0.0}),
    "if-basic": ("if", "default", {"default": 0.7}),
}
SKILL = {"teacher": 1.0, "base": 0.5, "student": 0.85}
IF_EXTRA = ("prompt_level_loose", "inst_level_strict")


def _skill(label: str, role: str) -> float:
    return SKILL.get(role, 0.8) if label != "student-topk" else 0.8


FILLER = (
    "first we add the ones then carry the tens so the sum is checked again and each step "
    "keeps its value because the total must match what the question asks for here"
)
WORDS = FILLER.split(" ")


def _reasoning(n_words: int, item: int, rng: np.random.Generator) -> str:
    """n_words of filler shared by every model on one item, each model changing about one word in six,
    so that teacher and student outputs differ the way real generations do (for the diff view)."""
    if n_words <= 0:
        return ""
    own = rng.integers(0, len(WORDS), n_words)
    picked = np.where(rng.random(n_words) < 1 / 6, own, _shared_words(item, n_words))
    return " ".join(WORDS[k] for k in picked) + ". "


@lru_cache(maxsize=4096)
def _shared_words(item: int, n_words: int) -> np.ndarray:
    return np.random.default_rng(item).integers(0, len(WORDS), n_words)


def _items(
    models: Sequence[tuple[str, str]],
    n_items: int,
    hostile: bool,
    rng: np.random.Generator,
    output_words: int = 0,
) -> list[ItemResult]:
    out = []
    for suite, (ability, _, accuracy) in SUITES.items():
        for variant, acc in accuracy.items():
            for i in range(n_items):
                evil = HOSTILE[i % len(HOSTILE)] if hostile else ""
                target = str(10 + i) + (evil if hostile and i % 3 == 0 else "")
                prompt = f"[{suite} {variant}] Q{i}: what is {i} + 10? {evil}\nA:"
                for label, role in models:
                    right = bool(rng.random() < acc * _skill(label, role))
                    answer = target if right else str(i)
                    output = (
                        f"Let me think. {_reasoning(output_words, i, rng)}{i} plus 10 is {answer}. "
                        f"{evil}The answer is {answer}."
                    )
                    metrics = {"exact_match": float(right)}
                    if ability == "if":
                        metrics |= {k: float(right or rng.random() < 0.3) for k in IF_EXTRA}
                    out.append(
                        ItemResult(
                            suite=suite,
                            variant=variant,
                            item_id=f"{suite}-{i:04d}{evil if i == 1 else ''}",
                            model=label,
                            prompt=prompt,
                            output=output,
                            target=target,
                            extracted=None if (not right and i % 4 == 0) else answer,
                            score=float(right),
                            metrics=metrics,
                            truncated=(i % 7 == 3 and not right),
                            details={"note": evil},
                        )
                    )
    return out


def _bootstrap(values: np.ndarray, rng: np.random.Generator, n: int = 400) -> tuple[float, float]:
    if len(values) == 0:
        return float("nan"), float("nan")
    means = values[rng.integers(0, len(values), (n, len(values)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def _retention(t: np.ndarray, s: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    if t.mean() <= 0:
        return {
            "value": None,
            "ci_low": None,
            "ci_high": None,
            "note": "teacher score is 0: retention undefined",
        }
    idx = rng.integers(0, len(t), (400, len(t)))
    tm, sm = t[idx].mean(axis=1), s[idx].mean(axis=1)
    ratios = sm[tm > 0] / tm[tm > 0] if (tm > 0).any() else np.array([np.nan])
    return {
        "value": float(s.mean() / t.mean()),
        "ci_low": float(np.quantile(ratios, 0.025)),
        "ci_high": float(np.quantile(ratios, 0.975)),
        "note": None,
    }


def _suite_metrics(
    items: list[ItemResult], models: Sequence[tuple[str, str]], rng: np.random.Generator
) -> dict:
    suites: dict[str, Any] = {}
    teacher = next((m for m, r in models if r == "teacher"), None)
    by_key: dict[tuple[str, str, str], list[ItemResult]] = {}
    for r in items:
        by_key.setdefault((r.suite, r.variant, r.model), []).append(r)
    for suite, (ability, baseline, accuracy) in SUITES.items():
        variants: dict[str, Any] = {}
        scores: dict[tuple[str, str], np.ndarray] = {}
        for variant in accuracy:
            variants[variant] = {}
            for label, _ in models:
                rows = by_key.get((suite, variant, label), [])
                s = np.array([r.score for r in rows])
                scores[(variant, label)] = s
                lo, hi = _bootstrap(s, rng)
                stats = {
                    "score": float(s.mean()),
                    "ci_low": lo,
                    "ci_high": hi,
                    "n": len(rows),
                    "truncated": sum(r.truncated for r in rows),
                }
                for key in sorted({k for r in rows for k in r.metrics}):
                    stats[key] = float(np.mean([r.metrics.get(key, 0.0) for r in rows]))
                variants[variant][label] = stats
        gain = {
            label: {
                v: float(scores[(v, label)].mean() - scores[(baseline, label)].mean())
                for v in accuracy
                if v != baseline
            }
            for label, _ in models
        }
        retention = {
            label: {v: _retention(scores[(v, teacher)], scores[(v, label)], rng) for v in accuracy}
            for label, role in models
            if role != "teacher" and teacher
        }
        suites[suite] = {
            "ability": ability,
            "description": f"Synthetic {ability} suite for report tests.",
            "primary_metric": "exact_match",
            "chance": 0.0 if ability != "if" else 0.05,
            "baseline_variant": baseline,
            "n_items": len({r.item_id for r in items if r.suite == suite}),
            "variants": variants,
            "gain": gain,
            "retention": retention,
        }
    return suites


def _as_estimates(suites: dict[str, Any], models: Sequence[tuple[str, str]]) -> None:
    """Rewrite bare gains as estimate dicts and add gain retention (teacher gain <= 0: undefined)."""
    teacher = next((m for m, r in models if r == "teacher"), None)
    for summary in suites.values():
        gains = summary["gain"]
        t_gains = gains.get(teacher, {})
        summary["gain_retention"] = {
            label: {
                v: {
                    "value": g / t_gains[v],
                    "ci_low": g / t_gains[v] - 0.2,
                    "ci_high": g / t_gains[v] + 0.2,
                    "note": None,
                }
                if t_gains.get(v, 0) > 0
                else {"value": None, "ci_low": None, "ci_high": None, "note": "teacher gain <= 0: undefined"}
                for v, g in gains[label].items()
            }
            for label, role in models
            if role != "teacher" and teacher
        }
        summary["gain"] = {
            label: {
                v: {"value": g, "ci_low": g - 0.1, "ci_high": g + 0.1, "note": None} for v, g in per.items()
            }
            for label, per in gains.items()
        }


def _add_paired(items: list[ItemResult], suites: dict[str, Any], models: Sequence[tuple[str, str]]) -> None:
    """The "paired" block harness.aggregate writes, from the items with the real harness.stats functions."""
    teacher = next((m for m, r in models if r == "teacher"), None)
    base = next((m for m, r in models if r == "base"), None)
    scores = {(r.suite, r.variant, r.model, r.item_id): r.score for r in items}
    ids_of: dict[tuple[str, str, str], list[str]] = {}
    for su, v, m, i in scores:
        ids_of.setdefault((su, v, m), []).append(i)
    for suite, summary in suites.items():
        summary["paired"] = {}
        for label, role in models:
            if role == "teacher" or teacher is None:
                continue
            summary["paired"][label] = {}
            for variant in summary["variants"]:
                ids = sorted(ids_of.get((suite, variant, label), []))
                s = [scores[(suite, variant, label, i)] for i in ids]
                t = [scores[(suite, variant, teacher, i)] for i in ids]
                test = stats.mcnemar(t, s).as_dict()
                test["cells"] = {
                    "both_right": [i for i, a, b in zip(ids, t, s, strict=True) if a and b],
                    "teacher_only": [i for i, a, b in zip(ids, t, s, strict=True) if a and not b],
                    "student_only": [i for i, a, b in zip(ids, t, s, strict=True) if b and not a],
                    "neither": [i for i, a, b in zip(ids, t, s, strict=True) if not a and not b],
                }
                entry = {
                    "mcnemar": test,
                    "chance_retention": _est(stats.chance_corrected_retention(s, t, summary["chance"])),
                }
                if base is not None and role == "student":
                    b = [scores[(suite, variant, base, i)] for i in ids]
                    entry["gap_closed"] = _est(stats.gap_closed(s, b, t))
                summary["paired"][label][variant] = entry


def _est(estimate: stats.Estimate) -> dict[str, Any]:
    return {k: getattr(estimate, k) for k in ("value", "ci_low", "ci_high", "note")}


def _kd_stats(mean: float) -> dict[str, float]:
    return {
        "mean": mean,
        "ci_low": mean * 0.9,
        "ci_high": mean * 1.1,
        "median": mean * 0.6,
        "p90": mean * 2.2,
        "p99": mean * 5.0,
        "max": mean * 11.0,
    }


def _rate_stats(mean: float) -> dict[str, float]:
    """A per-token 0/1 quantity: its percentiles are 0 or 1."""
    return {
        "mean": mean,
        "ci_low": mean - 0.04,
        "ci_high": mean + 0.04,
        "median": 1.0,
        "p90": 1.0,
        "p99": 1.0,
        "max": 1.0,
    }


def _kd(models: Sequence[tuple[str, str]], skipped: str | None, on_policy: bool = False) -> dict[str, Any]:
    students = [(m, r) for m, r in models if r != "teacher"]
    kd: dict[str, Any] = {}
    for i, (label, role) in enumerate(students):
        topk = len(students) >= 2 and i == len(students) - 1
        base_kl = 0.9 if role == "base" else 0.25 + 0.05 * i
        temps = {}
        for t, scale in (("1", 1.0), ("2", 0.45)):
            kl = base_kl * scale
            temps[t] = {
                "forward_kl": _kd_stats(kl),
                "reverse_kl": _kd_stats(kl * 1.1),
                "js": _kd_stats(kl / 5),
                "tvd": _kd_stats(min(kl / 3, 0.9)),
                "top1_agree": _rate_stats(0.55 if role == "base" else 0.78),
                "teacher_top1_in_student_top5": _rate_stats(0.8 if role == "base" else 0.95),
                "ear": _rate_stats(1 - min(kl / 3, 0.9)),
            }
        kd[label] = {
            "text": "teacher generations",
            "semantics": "top-k+tail lower bound" if topk else "full-vocab",
            "top_k": 20 if topk else None,
            "coverage_mean": 0.93 if topk else None,
            "n_sequences": 48,
            "n_tokens": 5210,
            "temperatures": {} if skipped else temps,
            "skipped": skipped,
        }
        if on_policy:  # the student's own generations: here 1.5 times the divergence of teacher text
            kd[label]["on_policy"] = {
                **kd[label],
                "text": "student generations",
                "n_sequences": 40,
                "n_tokens": 4100,
                "temperatures": {
                    t: {m: (_kd_stats(v["mean"] * 1.5) if "kl" in m else v) for m, v in per.items()}
                    for t, per in temps.items()
                },
                "skipped": skipped,
            }
    return kd


def _manifest(models: Sequence[tuple[str, str]], hostile: bool) -> dict[str, Any]:
    entry = {}
    for label, role in models:
        entry[label] = {
            "role": role,
            "spec": f"hf:/models/{label}",
            "info": {
                "backend": "hf",
                "model_id": f"/models/{label}",
                "fingerprint": "sha256:" + hashlib.sha256(label.encode()).hexdigest(),
                "tokenizer_id": "tok:5c1f00d",
                "vocab_size": 49152,
                "max_context": 8192,
                "chat_template": "{{ messages }}",
                "n_parameters": 134_515_008 if role == "teacher" else 112_000_000,
                "dtype": "float32",
                "extra": {},
            },
            "timings": {"load_seconds": 2.5, "generate_seconds": 31.2, "kd_scoring_seconds": 12.0},
        }
    return {
        "harness_version": "0.1.0",
        "created": "2026-11-24T10:00:00Z",
        "wall_seconds": 412.5,
        "config": {
            "suites": list(SUITES),
            "limit": None,
            "out": "runs/fake",
            "comment": HOSTILE[0] if hostile else "fake record",
        },
        "seeds": {"global": 0, "bootstrap": 1234},
        "models": entry,
        "hardware": {"cpu": "x86_64 (2 cores)", "ram_gib": 24, "gpu": None},
        "versions": {
            "python": "3.11.9",
            "torch": "2.13.0+cpu",
            "transformers": "5.19.0",
            "lm_eval": "0.4.13",
        },
        "logprob_semantics": {label: kd["semantics"] for label, kd in _kd(models, None).items()},
    }


def write_fake_record(
    run_dir: Path,
    *,
    n_items: int = 12,
    hostile: bool = False,
    models: Sequence[tuple[str, str]] = DEFAULT_MODELS,
    kd_skipped: str | None = None,
    with_kd: bool = True,
    gain_estimates: bool = False,
    paired: bool = True,
    kd_on_policy: bool = False,
    seed: int = 0,
    output_words: int = 0,
) -> Path:
    """Write a complete run record into run_dir and return run_dir.

    gain_estimates=True writes gains as estimate dicts with CIs plus a "gain_retention" block (the
    form harness.aggregate writes) instead of the bare numbers of the record docstring's schema.
    paired=False leaves out the "paired" block (McNemar, chance-corrected retention, gap closed), as in
    records written before it existed; kd_on_policy=True adds an "on_policy" KD entry per student.
    output_words > 0 puts that many words of reasoning into every output (mostly shared between models).
    """
    models = list(models)
    if hostile:  # an untrusted-looking model label too (labels come from user paths)
        models = [
            (f"{m}{HOSTILE[1]}" if r == "student" and i == len(models) - 1 else m, r)
            for i, (m, r) in enumerate(models)
        ]
    rng = np.random.default_rng(seed)
    items = _items(models, n_items, hostile, rng, output_words)
    notes = ["Synthetic record written by tests/fake_record.py."] + (
        [f"hostile note {h}" for h in HOSTILE] if hostile else []
    )
    suites = _suite_metrics(items, models, rng)
    if gain_estimates:
        _as_estimates(suites, models)
    if paired:
        _add_paired(items, suites, models)
    metrics = {
        "suites": suites,
        "kd": _kd(models, kd_skipped, kd_on_policy) if with_kd else {},
        "notes": notes,
    }
    write_record(run_dir, _manifest(models, hostile), items, metrics)
    return run_dir


LARGE_MODELS: tuple[tuple[str, str], ...] = (
    ("teacher", "teacher"),
    ("student-a", "student"),
    ("student-b", "student"),
    ("student-c", "student"),
)


def write_large_record(run_dir: Path, *, n_items: int = 10_000, output_words: int = 40) -> Path:
    """A run at scale: about n_items explorer entries (suite x variant x item; 7 suite variants) for a
    teacher and three students, every output with output_words words of reasoning."""
    per_variant = -(-n_items // sum(len(acc) for _, _, acc in SUITES.values()))
    return write_fake_record(
        run_dir, n_items=per_variant, models=LARGE_MODELS, output_words=output_words, with_kd=True
    )
