"""The KD (token-level divergence) part of the report's display model, including SVG bar geometry."""

from __future__ import annotations

import math
from typing import Any

from harness.report.figures_kd import calibration_view, cka_view
from harness.report.view import (
    FORWARD_KL_KEYS,
    LOWER_BOUND_HINTS,
    METRIC_LABELS,
    TOP1_KEYS,
    UPPER_BOUND_METRICS,
    as_dict,
    first_key,
    fmt_ci,
    fmt_count,
    fmt_num,
    fmt_pct,
    num,
)

# viewBox units; the chart scales to its container, so a narrow chart keeps its text legible on phones
CHART_WIDTH, BAR_HEIGHT, BAR_GAP, LABEL_WIDTH, VALUE_WIDTH = 420, 22, 10, 118, 62
HIST_WIDTH, HIST_HEIGHT, HIST_PAD, HIST_AXIS = 420, 120, 14, 18  # histogram geometry (viewBox units)
CONTEXT_CHARS = 120  # characters of context shown on each side of a worst token


def _temp_key(text: str) -> float:
    value = num(_to_float(text))
    return value if value is not None else float("inf")


def _to_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _metric_order(metric: str) -> tuple[int, str]:
    known = list(METRIC_LABELS)
    return (known.index(metric) if metric in known else len(known), metric)


def _bound(metric: str, semantics: str) -> str:
    """ "lower" / "upper" when top-k + tail semantics bound this metric, else ""."""
    if "lower bound" not in semantics:
        return ""
    if metric in UPPER_BOUND_METRICS:
        return "upper"
    return "lower" if any(h in metric.lower() for h in LOWER_BOUND_HINTS) else ""


def _metric_row(metric: str, stats: Any, semantics: str) -> dict[str, Any]:
    stats = as_dict(stats)
    is_rate = "top1" in metric or "agree" in metric or metric in ("ear", "coverage")
    fmt = fmt_pct if is_rate else fmt_num
    bound = _bound(metric, semantics)
    return {
        "metric": metric,
        "label": METRIC_LABELS.get(metric, metric.replace("_", " ")),
        "lower_bound": bound == "lower",
        "bound": {"lower": "≥ ", "upper": "≤ "}.get(bound, ""),
        "bound_label": f"{bound} bound" if bound else "",
        "mean": fmt(stats.get("mean")),
        "ci": fmt_ci(stats.get("ci_low"), stats.get("ci_high"), pct=is_rate)
        if is_rate
        else _ci3(stats.get("ci_low"), stats.get("ci_high")),
        **{q: fmt(stats.get(q)) for q in ("median", "p90", "p99", "p99_9", "max")},
    }


def _ci3(low: Any, high: Any) -> str:
    lo, hi = num(low), num(high)
    return "" if lo is None or hi is None else f"[{lo:.3f}, {hi:.3f}]"


ON_POLICY_LABEL = "on-policy (student's own text)"
GOLD_LABEL = "gold references"
TEXT_KINDS = (("teacher text", None), ("own text", "on_policy"), ("gold text", "gold"))


def _texts_view(views: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Per temperature, mean forward KL and top-1 agreement on each text kind that was scored."""
    kinds = [
        (name, view) for name, key in TEXT_KINDS if (view := views.get(key or "")) and not view["skipped"]
    ]
    by_t = [{t["t"]: t for t in view["temps"]} for _, view in kinds if view]
    temps = sorted({t for found in by_t for t in found}, key=_temp_key)
    missing = {"fkl": _metric_row("forward_kl", {}, ""), "top1": "undefined"}
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
            t = "1" if "1" in temps else min(temps, key=_temp_key, default="")
            row = _metric_row(
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
        missing = {"fkl": _metric_row("forward_kl", {}, ""), "top1": "undefined"}
        on["compare"] = [
            {"t": t, "off": off_t.get(t, missing), "on": on_t.get(t, missing)}
            for t in sorted(set(off_t) | set(on_t), key=_temp_key)
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
    for t in sorted(temps, key=_temp_key):
        metrics = as_dict(temps[t])
        fkl_key, top1_key = first_key(metrics, FORWARD_KL_KEYS), first_key(metrics, TOP1_KEYS)
        empty = _metric_row("forward_kl", {}, semantics)
        temp_views.append(
            {
                "t": t,
                "rows": [
                    _metric_row(m, metrics[m], semantics)
                    for m in sorted(metrics, key=_metric_order)
                    if isinstance(metrics[m], dict)
                ],
                "fkl": _metric_row(fkl_key, metrics[fkl_key], semantics) if fkl_key else empty,
                "top1": fmt_pct(as_dict(metrics.get(top1_key)).get("mean")) if top1_key else "undefined",
                "hist": histogram_chart(
                    as_dict(as_dict(metrics.get(fkl_key)).get("histogram")) if fkl_key else {}
                ),
            }
        )
    coverage = summary.get("coverage_mean")
    skipped = summary.get("skipped")
    return {
        "tokenizer": _tokenizer_view(as_dict(summary.get("tokenizer"))),
        "nll": _nll_view(as_dict(summary.get("nll"))),
        "worst": _worst_view(as_dict(summary.get("worst")), "lower bound" in semantics),
        "coverage_detail": _coverage_view(as_dict(summary.get("coverage"))),
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


def _edge_label(x: float) -> str:
    if x == 0:
        return "0"
    exponent = math.log10(x)
    return f"1e{round(exponent)}" if abs(exponent - round(exponent)) < 1e-9 else f"{x:.2g}"


def histogram_chart(hist: dict[str, Any]) -> dict[str, Any] | None:
    """SVG geometry of a fixed-bin histogram {edges, counts}: equal-width bars (the bins are log-spaced,
    so the x axis reads as a log scale), ticks at whole decades; None when there is nothing to draw."""
    edges, counts = hist.get("edges"), hist.get("counts")
    if not isinstance(edges, list) or not isinstance(counts, list) or len(edges) != len(counts) + 1:
        return None
    values = [int(c) if num(c) is not None else 0 for c in counts]
    total, top = sum(values), max(values, default=0)
    if not total:
        return None
    width = (HIST_WIDTH - 2 * HIST_PAD) / len(values)
    plot = HIST_HEIGHT - HIST_AXIS
    above = int(num(hist.get("n_above")) or 0)
    bars = []
    for i, count in enumerate(values):
        height = round(count / top * (plot - 4), 1)
        upper = "∞" if i == len(values) - 1 and above else f"{float(edges[i + 1]):.3g}"
        bars.append(
            {
                "x": round(HIST_PAD + i * width, 1),
                "y": round(plot - height, 1),
                "width": round(max(width - 1, 0.5), 1),
                "height": height,
                "title": f"[{float(edges[i]):.3g}, {upper}): {count} tokens ({100 * count / total:.1f}%)",
            }
        )
    ticks = []
    for i, edge in enumerate(edges):
        x = float(edge)
        if x > 0 and abs(math.log10(x) - round(math.log10(x))) < 1e-9 and round(math.log10(x)) % 2 == 0:
            ticks.append({"x": round(HIST_PAD + i * width, 1), "label": _edge_label(x)})
    return {
        "bars": bars,
        "ticks": ticks,
        "width": HIST_WIDTH,
        "height": HIST_HEIGHT,
        "axis_y": plot,
        "label_y": HIST_HEIGHT - 4,
        "total": fmt_count(total),
        "above": above,
    }


def _visible(token: str) -> str:
    """A single token's text with its whitespace made visible (a leading space matters)."""
    return token.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥") if token else "∅"


def _prob(value: Any) -> str:
    x = num(value)
    return "?" if x is None else (f"{100 * x:.1f}%" if x >= 0.001 else f"{x:.1e}")


def _tok_view(entry: Any, key: str = "prob") -> dict[str, str]:
    entry = as_dict(entry)
    return {
        "text": _visible(str(entry.get("text", ""))),
        "id": str(entry.get("id", "?")),
        "p": _prob(entry.get(key)),
    }


def _worst_view(worst: dict[str, Any], lower_bound: bool) -> dict[str, Any] | None:
    seqs, toks = worst.get("sequences"), worst.get("tokens")
    if not isinstance(seqs, list) or not isinstance(toks, list):
        return None
    bound = "≥ " if lower_bound else ""
    return {
        "t": str(worst.get("t", "1")),
        "sequences": [
            {
                "seq_id": str(row.get("seq_id", "")),
                "mean": bound + fmt_num(row.get("mean")),
                "max": bound + fmt_num(row.get("max")),
                "n_tokens": fmt_count(row.get("n_tokens")),
                "prompt_tail": str(row.get("prompt_tail", ""))[-CONTEXT_CHARS:],
                "text": str(row.get("text", "")),
            }
            for row in map(as_dict, seqs)
        ],
        "tokens": [
            {
                "seq_id": str(row.get("seq_id", "")),
                "position": str(row.get("position", "")),
                "value": bound + fmt_num(row.get("value")),
                "before": str(row.get("before", ""))[-CONTEXT_CHARS:],
                "after": str(row.get("after", ""))[:CONTEXT_CHARS],
                "token": {
                    **_tok_view(row.get("token"), "teacher_prob"),
                    "p_student": _prob(as_dict(row.get("token")).get("student_prob")),
                },
                "teacher_top1": _tok_view(row.get("teacher_top1")),
                "student_top1": _tok_view(row.get("student_top1")),
            }
            for row in map(as_dict, toks)
        ],
    }


def _tokenizer_view(verdict: dict[str, Any]) -> dict[str, str] | None:
    if not verdict:
        return None
    sizes = ""
    if num(verdict.get("teacher_size")) is not None:
        sizes = (
            f"teacher {fmt_count(verdict.get('teacher_size'))} tokens, student "
            f"{fmt_count(verdict.get('student_size'))}, {fmt_count(verdict.get('shared_tokens'))} shared, "
            f"{fmt_count(verdict.get('shared_same_id'))} with the same id"
        )
    special = as_dict(verdict.get("special_differences"))
    return {
        "verdict": str(verdict.get("verdict", "")),
        "identical": "yes" if verdict.get("identical") else "no",
        "sizes": sizes,
        "compared": str(verdict.get("compared", "")),
        "special": "; ".join(f"{role}: {pair}" for role, pair in special.items()),
    }


def _nll_line(stats: dict[str, Any]) -> dict[str, str] | None:
    if num(stats.get("nll_per_token")) is None:
        return None
    ci = _ci3(stats.get("ci_low"), stats.get("ci_high"))
    ppl_lo, ppl_hi = num(stats.get("perplexity_ci_low")), num(stats.get("perplexity_ci_high"))
    return {
        "nll": fmt_num(stats.get("nll_per_token")),
        "ci": ci,
        "ppl": fmt_num(stats.get("perplexity")),
        "ppl_ci": "" if ppl_lo is None or ppl_hi is None else f"[{fmt_num(ppl_lo)}, {fmt_num(ppl_hi)}]",
        "bpb": fmt_num(stats.get("bits_per_byte")),
        "n_tokens": fmt_count(stats.get("n_tokens")),
    }


def _nll_view(nll: dict[str, Any]) -> dict[str, Any] | None:
    rows = []
    for who in ("student", "teacher"):
        line = _nll_line(as_dict(nll.get(who)))
        if line:
            rows.append({"who": who, **line})
    if not rows:
        return None
    return {"text": str(nll.get("text", "")), "tokenization": str(nll.get("tokenization", "")), "rows": rows}


def _coverage_view(coverage: dict[str, Any]) -> str:
    if num(coverage.get("mean")) is None:
        return ""
    return ", ".join(f"{k} {fmt_pct(coverage.get(k))}" for k in ("median", "p10", "p1", "min"))


def _chart(t: str, students: list[dict[str, Any]], raw: dict[str, Any]) -> dict[str, Any]:
    """Horizontal bars of mean forward KL (with CI whiskers) per student at temperature t."""
    entries = []
    for student in students:
        metrics = as_dict(as_dict(as_dict(raw.get(student["label"])).get("temperatures")).get(t))
        key = first_key(metrics, FORWARD_KL_KEYS)
        stats = as_dict(metrics.get(key)) if key else {}
        mean = num(stats.get("mean"))
        if mean is not None and not student["skipped"]:
            entries.append((student, mean, num(stats.get("ci_low")), num(stats.get("ci_high"))))
    top = max([max(m, hi or m) for _, m, _, hi in entries], default=0.0) or 1.0
    span = CHART_WIDTH - LABEL_WIDTH - VALUE_WIDTH
    bars = []
    for i, (student, mean, lo, hi) in enumerate(entries):
        y = BAR_GAP + i * (BAR_HEIGHT + BAR_GAP)
        bars.append(
            {
                "label": student["label"],
                "role": student["role"],
                "y": y,
                "mid": y + BAR_HEIGHT / 2,
                "width": round(max(mean / top * span, 1.0), 1),
                "ci": lo is not None and hi is not None,
                "x1": round(LABEL_WIDTH + (lo or 0) / top * span, 1),
                "x2": round(LABEL_WIDTH + (hi or 0) / top * span, 1),
                "text": ("≥ " if student["lower_bound"] else "") + fmt_num(mean),
                "lower_bound": student["lower_bound"],
            }
        )
    return {
        "t": t,
        "bars": bars,
        "width": CHART_WIDTH,
        "height": BAR_GAP + len(bars) * (BAR_HEIGHT + BAR_GAP),
        "x0": LABEL_WIDTH,
        "bar_height": BAR_HEIGHT,
        "value_x": CHART_WIDTH - VALUE_WIDTH + 6,
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
    temps = sorted({t["t"] for s in students for t in s["temps"]}, key=_temp_key)
    charts = [_chart(t, students, kd) for t in temps]
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


def _estimate_cell(est: Any, pct: bool = True) -> dict[str, Any]:
    est = as_dict(est)
    value = est.get("value")
    fmt = fmt_pct if pct else fmt_num
    ci = fmt_ci(est.get("ci_low"), est.get("ci_high")) if pct else _ci3(est.get("ci_low"), est.get("ci_high"))
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


def sequence_view(sequence: dict[str, Any], models: list[dict[str, str]]) -> dict[str, Any]:
    """Display rows for metrics["sequence"]: output diagnostics per model, final-answer agreement
    and ROUGE-L per suite (students as columns)."""
    per_model = as_dict(sequence.get("models"))
    agreement = as_dict(sequence.get("agreement"))
    rouge = as_dict(sequence.get("rouge_l"))
    order = [m["label"] for m in models if m["label"] in per_model] + [
        m for m in per_model if m not in {x["label"] for x in models}
    ]
    diag = []
    for label in order:
        d = as_dict(per_model[label])
        diag.append(
            {
                "label": label,
                "role": str(d.get("role", "model")),
                "n": fmt_count(d.get("n_outputs")),
                "chars": fmt_num(as_dict(d.get("chars")).get("mean")),
                "words": fmt_num(as_dict(d.get("words")).get("mean")),
                "tokens": fmt_num(as_dict(d.get("tokens")).get("mean"))
                if d.get("tokens")
                else "not recorded",
                "truncated": fmt_pct(d.get("truncated_rate")),
                "loops": fmt_pct(d.get("loop_rate")),
                "distinct_1": fmt_num(d.get("distinct_1")),
                "distinct_2": fmt_num(d.get("distinct_2")),
            }
        )
    students = [m for m in order if m in agreement] + [m for m in agreement if m not in order]
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
    rouge_models = [m for m in order if any(m in as_dict(as_dict(r).get("vs_gold")) for r in rouge.values())]
    rouge_rows = [
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
    return {
        "present": bool(per_model),
        "diagnostics": diag,
        "students": students,
        "agreement": agree_rows if suites else [],
        "rouge_models": rouge_models,
        "rouge": rouge_rows,
    }
