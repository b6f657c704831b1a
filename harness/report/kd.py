"""The KD (token-level divergence) part of the report's display model, including SVG bar geometry."""

from __future__ import annotations

from typing import Any

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
        **{q: fmt(stats.get(q)) for q in ("median", "p90", "p99", "max")},
    }


def _ci3(low: Any, high: Any) -> str:
    lo, hi = num(low), num(high)
    return "" if lo is None or hi is None else f"[{lo:.3f}, {hi:.3f}]"


ON_POLICY_LABEL = "on-policy (student's own text)"


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
            }
        )
    coverage = summary.get("coverage_mean")
    skipped = summary.get("skipped")
    return {
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


def build_kd(kd: dict[str, Any], models: list[dict[str, str]]) -> dict[str, Any]:
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
    }
