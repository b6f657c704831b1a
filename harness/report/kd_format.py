"""Formatting shared by the KD section's views: temperature and metric order, one metric's row of
summary statistics (mean, CI, quantiles) with its bound under top-k + tail semantics."""

from __future__ import annotations

from typing import Any

from harness.report.view import (
    LOWER_BOUND_HINTS,
    METRIC_LABELS,
    UPPER_BOUND_METRICS,
    as_dict,
    fmt_ci,
    fmt_num,
    fmt_pct,
    num,
)


def temp_key(text: str) -> float:
    """Sort key of a temperature as recorded ("0.5", "1"); anything not a number last."""
    value = num(_to_float(text))
    return value if value is not None else float("inf")


def _to_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def metric_order(metric: str) -> tuple[int, str]:
    known = list(METRIC_LABELS)
    return (known.index(metric) if metric in known else len(known), metric)


def _bound(metric: str, semantics: str) -> str:
    """ "lower" / "upper" when top-k + tail semantics bound this metric, else ""."""
    if "lower bound" not in semantics:
        return ""
    if metric in UPPER_BOUND_METRICS:
        return "upper"
    return "lower" if any(h in metric.lower() for h in LOWER_BOUND_HINTS) else ""


def metric_row(metric: str, stats: Any, semantics: str) -> dict[str, Any]:
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
        else ci3(stats.get("ci_low"), stats.get("ci_high")),
        **{q: fmt(stats.get(q)) for q in ("median", "p90", "p99", "p99_9", "max")},
    }


def ci3(low: Any, high: Any) -> str:
    lo, hi = num(low), num(high)
    return "" if lo is None or hi is None else f"[{lo:.3f}, {hi:.3f}]"
