"""The KD (token-level divergence) part of the report's display model: per student, its divergences per
temperature on each text kind (teacher text, its own, gold references), per suite, with its details
(kd_details), charts (kd_charts) and CKA; plus the sequence-level checks (kd_sequence) and calibration."""

from __future__ import annotations

from typing import Any

from harness.report.figures_kd import calibration_view, cka_view
from harness.report.kd_charts import fkl_chart, histogram_chart
from harness.report.kd_details import coverage_view, nll_view, tokenizer_view, worst_view
from harness.report.kd_format import metric_order, metric_row, temp_key
from harness.report.kd_sequence import sequence_view
from harness.report.view import FORWARD_KL_KEYS, TOP1_KEYS, as_dict, first_key, fmt_count, fmt_pct, num

__all__ = ["GOLD_LABEL", "ON_POLICY_LABEL", "TEXT_KINDS", "build_kd", "histogram_chart", "sequence_view"]

ON_POLICY_LABEL = "on-policy (student's own text)"
GOLD_LABEL = "gold references"
TEXT_KINDS = (("teacher text", None), ("own text", "on_policy"), ("gold text", "gold"))


def _texts_view(views: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Per temperature, mean forward KL and top-1 agreement on each text kind that was scored."""
    kinds = [
        (name, view) for name, key in TEXT_KINDS if (view := views.get(key or "")) and not view["skipped"]
    ]
    by_t = [{t["t"]: t for t in view["temps"]} for _, view in kinds if view]
    temps = sorted({t for found in by_t for t in found}, key=temp_key)
    missing = {"fkl": metric_row("forward_kl", {}, ""), "top1": "undefined"}
    rows = []
    for t in temps:
        cells = [
            {"kind": name, **per_t.get(t, missing)} for (name, _), per_t in zip(kinds, by_t, strict=True)
        ]
        rows.append({"t": t, "cells": cells, "by_kind": {c["kind"]: c for c in cells}})
    return rows


def _suites_view(summary: dict[str, Any]) -> dict[str, Any]:
    """Mean forward KL per suite (rows) and text kind (columns), at T = 1 (else the lowest T)."""
    entries = [(name, as_dict(summary.get(key)) if key else summary) for name, key in TEXT_KINDS]
    entries = [(name, e) for name, e in entries if as_dict(e.get("suites"))]
    suites = list(dict.fromkeys(s for _, e in entries for s in as_dict(e.get("suites"))))
    rows = []
    for suite in suites:
        cells = []
        for _, e in entries:
            stats = as_dict(as_dict(e.get("suites")).get(suite))
            temps = as_dict(stats.get("temperatures"))
            t = "1" if "1" in temps else min(temps, key=temp_key, default="")
            row = metric_row(
                "forward_kl", as_dict(as_dict(temps.get(t)).get("forward_kl")), str(e.get("semantics", ""))
            )
            cells.append({**row, "t": t, "n": fmt_count(stats.get("n_sequences")), "empty": not stats})
        rows.append({"suite": suite, "cells": cells})
    skipped = as_dict(as_dict(summary.get("gold")).get("suites_skipped"))
    return {
        "kinds": [name for name, _ in entries],
        "rows": rows,
        "gold_skipped": [{"suite": k, "reason": str(v)} for k, v in skipped.items()],
    }


def _student_view(label: str, role: str, summary: dict[str, Any]) -> dict[str, Any]:
    """One student's KD numbers; an "on_policy" entry (same shape) is viewed alongside, with a per-T
    comparison of mean forward KL and top-1 agreement on teacher text (off-policy) and the student's own."""
    view = _summary_view(label, role, summary)
    on_policy = summary.get("on_policy")
    view["on_policy"] = None
    if isinstance(on_policy, dict):
        on = _summary_view(label, role, on_policy)
        off_t, on_t = {t["t"]: t for t in view["temps"]}, {t["t"]: t for t in on["temps"]}
        missing = {"fkl": metric_row("forward_kl", {}, ""), "top1": "undefined"}
        on["compare"] = [
            {"t": t, "off": off_t.get(t, missing), "on": on_t.get(t, missing)}
            for t in sorted(set(off_t) | set(on_t), key=temp_key)
        ]
        view["on_policy"] = on
    gold = summary.get("gold")
    view["gold"] = _summary_view(label, role, gold) if isinstance(gold, dict) else None
    view["texts"] = _texts_view({"": view, "on_policy": view["on_policy"], "gold": view["gold"]})
    view["suites"] = _suites_view(summary)
    view["cka"] = cka_view(summary.get("cka"))
    return view


def _summary_view(label: str, role: str, summary: dict[str, Any]) -> dict[str, Any]:
    semantics = str(summary.get("semantics") or "unknown")
    temps = as_dict(summary.get("temperatures"))
    temp_views = []
    for t in sorted(temps, key=temp_key):
        metrics = as_dict(temps[t])
        fkl_key, top1_key = first_key(metrics, FORWARD_KL_KEYS), first_key(metrics, TOP1_KEYS)
        empty = metric_row("forward_kl", {}, semantics)
        temp_views.append(
            {
                "t": t,
                "rows": [
                    metric_row(m, metrics[m], semantics)
                    for m in sorted(metrics, key=metric_order)
                    if isinstance(metrics[m], dict)
                ],
                "fkl": metric_row(fkl_key, metrics[fkl_key], semantics) if fkl_key else empty,
                "top1": fmt_pct(as_dict(metrics.get(top1_key)).get("mean")) if top1_key else "undefined",
                "hist": histogram_chart(
                    as_dict(as_dict(metrics.get(fkl_key)).get("histogram")) if fkl_key else {}
                ),
            }
        )
    coverage = summary.get("coverage_mean")
    skipped = summary.get("skipped")
    return {
        "tokenizer": tokenizer_view(as_dict(summary.get("tokenizer"))),
        "nll": nll_view(as_dict(summary.get("nll"))),
        "worst": worst_view(as_dict(summary.get("worst")), "lower bound" in semantics),
        "coverage_detail": coverage_view(as_dict(summary.get("coverage"))),
        "label": label,
        "role": role,
        "semantics": semantics,
        "lower_bound": "lower bound" in semantics,
        "top_k": str(summary.get("top_k")) if summary.get("top_k") is not None else "",
        "coverage": fmt_pct(coverage) if num(coverage) is not None else "",
        "text": str(summary.get("text", "")),
        "n_sequences": fmt_count(summary.get("n_sequences")),
        "n_tokens": fmt_count(summary.get("n_tokens")),
        "skipped": str(skipped) if skipped else "",
        "temps": temp_views,
    }


def build_kd(
    kd: dict[str, Any],
    models: list[dict[str, str]],
    sequence: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The KD section: token-level divergences per student (metrics["kd"]) and, when given, the
    sequence-level checks (metrics["sequence"], see harness.sequence) and the multiple-choice
    calibration (metrics["calibration"], see harness.metrics.calibration)."""
    roles = {m["label"]: m["role"] for m in models}
    order = [m["label"] for m in models if m["label"] in kd] + [s for s in kd if s not in roles]
    students = [_student_view(s, roles.get(s, "student"), as_dict(kd[s])) for s in order]
    temps = sorted({t["t"] for s in students for t in s["temps"]}, key=temp_key)
    charts = [fkl_chart(t, students, kd) for t in temps]
    return {
        "present": bool(students),
        "students": students,
        "temperatures": temps,
        "charts": [c for c in charts if c["bars"]],
        "any_lower_bound": any(s["lower_bound"] for s in students),
        "on_policy_label": ON_POLICY_LABEL,
        "gold_label": GOLD_LABEL,
        "text_kinds": [name for name, _ in TEXT_KINDS],
        "calibration": calibration_view(calibration, models),
        "sequence": sequence_view(as_dict(sequence), models),
    }
