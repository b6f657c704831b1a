"""The sequence-level part of the KD section (metrics["sequence"], see harness.sequence): output
diagnostics per model, final-answer agreement with the teacher and ROUGE-L per suite."""

from __future__ import annotations

from typing import Any

from harness.report.kd_format import ci3
from harness.report.view import as_dict, fmt_ci, fmt_count, fmt_num, fmt_pct, num


def _estimate_cell(est: Any, pct: bool = True) -> dict[str, Any]:
    est = as_dict(est)
    value = est.get("value")
    fmt = fmt_pct if pct else fmt_num
    ci = fmt_ci(est.get("ci_low"), est.get("ci_high")) if pct else ci3(est.get("ci_low"), est.get("ci_high"))
    note = str(est.get("note") or "")
    missing = num(est.get("n_both_missing"))
    if missing:
        note = "; ".join(filter(None, [note, f"{int(missing)} agree by neither answering"]))
    return {
        "text": fmt(value),
        "ci": ci,
        "n": fmt_count(est.get("n")),
        "note": note,
        "undefined": num(value) is None,
    }


def _diagnostics_row(label: str, d: dict[str, Any]) -> dict[str, str]:
    """One model's output diagnostics: length, truncation, loops and distinct n-grams."""
    return {
        "label": label,
        "role": str(d.get("role", "model")),
        "n": fmt_count(d.get("n_outputs")),
        "chars": fmt_num(as_dict(d.get("chars")).get("mean")),
        "words": fmt_num(as_dict(d.get("words")).get("mean")),
        "tokens": fmt_num(as_dict(d.get("tokens")).get("mean")) if d.get("tokens") else "not recorded",
        "truncated": fmt_pct(d.get("truncated_rate")),
        "loops": fmt_pct(d.get("loop_rate")),
        "distinct_1": fmt_num(d.get("distinct_1")),
        "distinct_2": fmt_num(d.get("distinct_2")),
    }


def _agreement_rows(agreement: dict[str, Any], students: list[str]) -> list[dict[str, Any]]:
    """Final-answer agreement per suite, per group, and over all suites (students as columns); none
    without a suite."""
    suites = sorted({s for a in agreement.values() for s in as_dict(as_dict(a).get("suites"))})
    agree_rows = [
        {
            "name": suite,
            "cells": [
                _estimate_cell(as_dict(as_dict(as_dict(agreement[m]).get("suites")).get(suite)).get("all"))
                for m in students
            ],
        }
        for suite in suites
    ]
    groups = sorted({g for a in agreement.values() for g in as_dict(as_dict(a).get("groups"))})
    agree_rows += [
        {
            "name": f"{g} (group)",
            "cells": [_estimate_cell(as_dict(as_dict(agreement[m]).get("groups")).get(g)) for m in students],
        }
        for g in groups
    ]
    if students:
        agree_rows.append(
            {
                "name": "all suites",
                "cells": [_estimate_cell(as_dict(agreement[m]).get("overall")) for m in students],
            }
        )
    return agree_rows if suites else []


def _rouge_rows(rouge: dict[str, Any], students: list[str], rouge_models: list[str]) -> list[dict[str, Any]]:
    """ROUGE-L per suite against the teacher's output (students) and the gold references."""
    return [
        {
            "name": suite,
            "vs_teacher": [
                _estimate_cell(as_dict(as_dict(r).get("vs_teacher")).get(m), pct=False) for m in students
            ],
            "vs_gold": [
                _estimate_cell(as_dict(as_dict(r).get("vs_gold")).get(m), pct=False) for m in rouge_models
            ],
        }
        for suite, r in sorted(rouge.items())
    ]


def sequence_view(sequence: dict[str, Any], models: list[dict[str, str]]) -> dict[str, Any]:
    """Display rows for metrics["sequence"]: output diagnostics per model, final-answer agreement
    and ROUGE-L per suite (students as columns)."""
    per_model = as_dict(sequence.get("models"))
    agreement = as_dict(sequence.get("agreement"))
    rouge = as_dict(sequence.get("rouge_l"))
    order = [m["label"] for m in models if m["label"] in per_model] + [
        m for m in per_model if m not in {x["label"] for x in models}
    ]
    students = [m for m in order if m in agreement] + [m for m in agreement if m not in order]
    rouge_models = [m for m in order if any(m in as_dict(as_dict(r).get("vs_gold")) for r in rouge.values())]
    return {
        "present": bool(per_model),
        "diagnostics": [_diagnostics_row(label, as_dict(per_model[label])) for label in order],
        "students": students,
        "agreement": _agreement_rows(agreement, students),
        "rouge_models": rouge_models,
        "rouge": _rouge_rows(rouge, students, rouge_models),
    }
