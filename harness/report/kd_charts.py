"""SVG geometry of the KD section's charts (drawn by the HTML template, no matplotlib): a student's
per-token forward KL histogram, and mean forward KL per student as bars with CI whiskers."""

from __future__ import annotations

import math
from typing import Any

from harness.report.view import FORWARD_KL_KEYS, as_dict, first_key, fmt_count, fmt_num, num

# viewBox units; the chart scales to its container, so a narrow chart keeps its text legible on phones
CHART_WIDTH, BAR_HEIGHT, BAR_GAP, LABEL_WIDTH, VALUE_WIDTH = 420, 22, 10, 118, 62
HIST_WIDTH, HIST_HEIGHT, HIST_PAD, HIST_AXIS = 420, 120, 14, 18  # histogram geometry (viewBox units)


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


def fkl_chart(t: str, students: list[dict[str, Any]], raw: dict[str, Any]) -> dict[str, Any]:
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
