"""Turn a run record into plain display values for the HTML and terminal reports.

All tolerance for missing or unknown keys lives here (records are read tolerantly, see
harness.store.record), so the template can use StrictUndefined: every key it reads is always set.
Numbers become strings here too, so "undefined" is never rendered as a number by accident.
"""

from __future__ import annotations

import math
import re
from typing import Any

from harness.store.record import RunRecord

ROLE_ORDER = {"teacher": 0, "base": 1, "student": 2}
# KD metric names as the KD check may write them; the first key found is used.
FORWARD_KL_KEYS = ("forward_kl", "kl_forward", "fkl", "kl")
TOP1_KEYS = ("top1_agree", "top1_agreement", "top1")
# Divergences computed from top-k + tail can only shrink: they are lower bounds.
LOWER_BOUND_HINTS = ("kl", "js", "tv", "jensen", "total_variation")
UPPER_BOUND_METRICS = ("ear",)  # EAR = 1 - TVD: an upper bound when TVD is a lower bound
METRIC_LABELS = {
    "forward_kl": "forward KL",
    "reverse_kl": "reverse KL",
    "js": "Jensen-Shannon",
    "jsd": "Jensen-Shannon",
    "tvd": "total variation",
    "tv": "total variation",
    "top1_agreement": "top-1 agreement",
    "top1_agree": "top-1 agreement",
    "teacher_top1_in_student_top5": "teacher top-1 in student top-5",
    "top1_in_top5": "teacher top-1 in student top-5",
    "ear": "expected acceptance rate",
}
RETENTION_GOOD, RETENTION_FAIR = 0.9, 0.7
SCORE_KEYS = {"score", "ci_low", "ci_high", "n", "truncated"}


def num(value: Any) -> float | None:
    """A finite float, or None for missing / null / NaN / non-numeric values."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def fmt_pct(value: Any) -> str:
    x = num(value)
    return "undefined" if x is None else f"{100 * x:.1f}%"


def fmt_ci(low: Any, high: Any, *, pct: bool = True) -> str:
    lo, hi = num(low), num(high)
    if lo is None or hi is None:
        return ""
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]" if pct else f"[{lo:.2f}, {hi:.2f}]"


def fmt_ratio(value: Any) -> str:
    x = num(value)
    return "undefined" if x is None else f"{x:.2f}"


def fmt_pp(value: Any) -> str:
    """A score difference in percentage points."""
    x = num(value)
    return "undefined" if x is None else f"{100 * x:+.1f} pp"


def fmt_num(value: Any) -> str:
    x = num(value)
    if x is None:
        return "undefined"
    return f"{x:.3f}" if abs(x) < 100 else f"{x:,.1f}"


def fmt_count(value: Any) -> str:
    x = num(value)
    if x is None:
        return "?"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.1f}{suffix}"
    return f"{x:.0f}"


def natural_key(text: str) -> list[Any]:
    """Sort "k=2" before "k=16" (records are written with sorted keys, so order is lexical)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


ABILITY_ORDER = {"icl": 0, "cot": 1, "if": 2}


def ordered_suites(suites: Any) -> list[tuple[str, dict[str, Any]]]:
    """Suites by ability (ICL, CoT, IF, others), then name."""
    items = [(str(name), as_dict(summary)) for name, summary in as_dict(suites).items()]
    return sorted(items, key=lambda kv: (ABILITY_ORDER.get(str(kv[1].get("ability")), 9), kv[0]))


def retention_class(value: Any) -> str:
    x = num(value)
    if x is None:
        return "undef"
    return "good" if x >= RETENTION_GOOD else "fair" if x >= RETENTION_FAIR else "bad"


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def first_key(mapping: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if k in mapping), None)


def model_list(record: RunRecord) -> list[dict[str, str]]:
    """Teacher first, then bases, then students; labels seen only in metrics/items come last."""
    models = as_dict(record.manifest.get("models"))
    labels = list(models)
    for summary in as_dict(record.metrics.get("suites")).values():
        for per_model in as_dict(as_dict(summary).get("variants")).values():
            labels += [m for m in as_dict(per_model) if m not in labels]
    labels += [
        m for m in dict.fromkeys(str(i.get("model", "")) for i in record.items) if m and m not in labels
    ]
    out = []
    for label in labels:
        role = str(as_dict(models.get(label)).get("role", "model"))
        out.append({"label": label, "role": role})
    out.sort(key=lambda m: ROLE_ORDER.get(m["role"], 3))
    return out


def score_cell(stats: Any) -> dict[str, Any]:
    stats = as_dict(stats)
    truncated = num(stats.get("truncated"))
    return {
        "text": fmt_pct(stats.get("score")),
        "ci": fmt_ci(stats.get("ci_low"), stats.get("ci_high")),
        "undefined": num(stats.get("score")) is None,
        "n": fmt_count(stats.get("n")),
        "truncated": int(truncated) if truncated is not None else 0,
    }


def retention_cell(entry: Any) -> dict[str, Any]:
    entry = as_dict(entry)
    value = entry.get("value")
    note = entry.get("note")
    if num(value) is None and not note:
        note = "not computed" if not entry else "undefined (no note given)"
    return {
        "text": fmt_ratio(value),
        "ci": fmt_ci(entry.get("ci_low"), entry.get("ci_high"), pct=False),
        "cls": retention_class(value),
        "note": str(note) if note else "",
    }


def headline_variant(summary: dict[str, Any], variants: list[str]) -> str:
    """The variant the headline shows: the largest non-baseline one (k=max, cot), else the baseline."""
    chosen = summary.get("headline_variant")
    if isinstance(chosen, str) and chosen in variants:
        return chosen
    others = [v for v in variants if v != summary.get("baseline_variant")]
    return (others or variants)[-1] if variants else ""


def estimate(value: Any) -> dict[str, Any]:
    """A bare number or an estimate dict {"value", "ci_low", "ci_high", "note"} as the latter."""
    if isinstance(value, dict):
        return value
    return {"value": value, "ci_low": None, "ci_high": None, "note": None}


def gain_cell(value: Any) -> dict[str, Any]:
    """A gain in percentage points; the record may hold a number or an estimate with a CI."""
    est = estimate(value)
    lo, hi = num(est.get("ci_low")), num(est.get("ci_high"))
    undefined = num(est.get("value")) is None
    note = est.get("note") or ("not computed" if value is None else "")
    return {
        "text": fmt_pp(est.get("value")),
        "ci": "" if lo is None or hi is None else f"[{100 * lo:+.1f}, {100 * hi:+.1f}]",
        "undefined": undefined,
        "note": str(note) if undefined else "",
    }


def gain_retention(teacher_gain: Any, student_gain: Any) -> dict[str, Any]:
    """A point estimate for records without "gain_retention"; undefined unless the teacher gained."""
    t, s = num(estimate(teacher_gain).get("value")), num(estimate(student_gain).get("value"))
    if t is None or s is None:
        return {"text": "undefined", "ci": "", "cls": "undef", "note": "a gain is undefined"}
    if t <= 0:
        return {"text": "undefined", "ci": "", "cls": "undef", "note": "teacher gain is not positive"}
    return {"text": fmt_ratio(s / t), "ci": "", "cls": retention_class(s / t), "note": ""}


def item_anchor(suite: str, variant: str, item_id: str) -> str:
    """The id of an item in the explorer, so tables can link to it (letters, digits and dashes only)."""
    raw = f"item-{suite}-{variant}-{item_id}"
    return "".join(c if c.isalnum() else "-" for c in raw)
