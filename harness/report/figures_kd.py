"""KD-section figures as SVG geometry for the HTML template (no matplotlib): the layer x layer CKA
heatmap, reliability diagrams of multiple-choice suites, and the display rows of their data.

Every function takes the tolerant record dicts (harness.store.record) and returns plain strings and
numbers, None when there is nothing to draw.
"""

from __future__ import annotations

from typing import Any

from harness.report.view import as_dict, fmt_count, fmt_num, fmt_pct, num

HEAT_SIZE, HEAT_PAD, HEAT_AXIS = 300, 6, 34  # CKA heatmap plot side, padding, axis band (viewBox units)
REL_SIZE, REL_PAD, REL_AXIS = 220, 8, 30  # reliability diagram plot side, padding, axis band
# A sequential scale (viridis stops) for CKA in [0, 1]; missing values are drawn grey.
_STOPS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.0, (68, 1, 84)),
    (0.25, (59, 82, 139)),
    (0.5, (33, 145, 140)),
    (0.75, (94, 201, 98)),
    (1.0, (253, 231, 37)),
)
MODEL_COLOURS = ("#0969da", "#8250df", "#fb8f44", "#1a7f37", "#cf222e", "#6e7781", "#bf3989", "#0a3069")


def colour(value: float | None) -> str:
    """Hex colour of a value in [0, 1] on the sequential scale; grey for None."""
    if value is None:
        return "#d0d7de"
    x = min(max(value, 0.0), 1.0)
    for (x0, c0), (x1, c1) in zip(_STOPS, _STOPS[1:], strict=False):
        if x <= x1:
            w = (x - x0) / (x1 - x0)
            return "#" + "".join(f"{round(a + w * (b - a)):02x}" for a, b in zip(c0, c1, strict=True))
    return "#fde725"


def _ticks(n: int, origin: float, step: float, every: int) -> list[dict[str, Any]]:
    return [{"at": round(origin + (i + 0.5) * step, 1), "label": str(i)} for i in range(0, n, every)]


def cka_heatmap(cka: dict[str, Any]) -> dict[str, Any] | None:
    """Cells of the teacher-layer (rows, top = embeddings) x student-layer (columns) CKA matrix."""
    matrix = cka.get("matrix")
    if not isinstance(matrix, list) or not matrix or not all(isinstance(r, list) and r for r in matrix):
        return None
    rows, cols = len(matrix), max(len(r) for r in matrix)
    cell_w, cell_h = HEAT_SIZE / cols, HEAT_SIZE / rows
    x0, y0 = HEAT_AXIS + HEAT_PAD, HEAT_PAD
    cells = []
    for i, row in enumerate(matrix):
        for j, raw in enumerate(row):
            value = num(raw)
            cells.append(
                {
                    "x": round(x0 + j * cell_w, 2),
                    "y": round(y0 + i * cell_h, 2),
                    "w": round(cell_w + 0.05, 2),  # a hair wider: no seams between cells
                    "h": round(cell_h + 0.05, 2),
                    "fill": colour(value),
                    "title": f"teacher layer {i}, student layer {j}: "
                    + ("undefined" if value is None else f"{value:.3f}"),
                }
            )
    best = [num(b) for b in cka.get("best_teacher_layer") or []]
    return {
        "cells": cells,
        "width": x0 + HEAT_SIZE + HEAT_PAD,
        "height": y0 + HEAT_SIZE + HEAT_AXIS,
        "x0": x0,
        "y0": y0,
        "size": HEAT_SIZE,
        "x_ticks": _ticks(cols, x0, cell_w, max(1, cols // 8)),
        "y_ticks": _ticks(rows, y0, cell_h, max(1, rows // 8)),
        "x_label_y": y0 + HEAT_SIZE + 28,
        "y_label_x": 10,
        "tick_y": y0 + HEAT_SIZE + 13,
        "tick_x": x0 - 4,
        "teacher_layers": fmt_count(cka.get("teacher_layers")),
        "student_layers": fmt_count(cka.get("student_layers")),
        "n_positions": fmt_count(cka.get("n_positions")),
        "n_sequences": fmt_count(cka.get("n_sequences")),
        "diagonal": _diagonal(matrix),
        "best": ", ".join("?" if b is None else str(int(b)) for b in best),
    }


def _diagonal(matrix: list[list[Any]]) -> str:
    """Mean CKA of matched relative depth (student layer j vs teacher layer at the same fraction)."""
    rows, cols = len(matrix), len(matrix[0])
    values = []
    for j in range(cols):
        i = round(j * (rows - 1) / max(1, cols - 1))
        value = num(matrix[i][j]) if j < len(matrix[i]) else None
        if value is not None:
            values.append(value)
    return fmt_num(sum(values) / len(values)) if values else "undefined"


def cka_view(cka: Any) -> dict[str, Any] | None:
    """{"skipped", "heatmap"} for a KD entry's "cka", None when the record has none."""
    cka = as_dict(cka)
    if not cka:
        return None
    skipped = cka.get("skipped")
    backends = as_dict(cka.get("features_backend"))
    source = "; ".join(f"{who}: {backends[who]}" for who in ("teacher", "student") if backends.get(who))
    return {
        "skipped": str(skipped) if skipped else "",
        "heatmap": None if skipped else cka_heatmap(cka),
        "about": "" if skipped else _cka_about(cka, source),
    }


def _cka_about(cka: dict[str, Any], source: str) -> str:
    """One line under the heatmap: on what, how many positions, and which backend gave the hidden states."""
    parts = [str(cka.get("method") or "linear CKA"), f"{cka.get('n_positions', '?')} positions of"]
    parts.append(f"{cka.get('n_sequences', '?')} {cka.get('text') or 'sequences'}")
    return " ".join(parts) + (f"; hidden states from {source}" if source else "")


def reliability_chart(per_model: dict[str, Any], order: list[str]) -> dict[str, Any] | None:
    """Per model, a polyline through (mean confidence, accuracy) of each non-empty bin, over [0, 1]^2."""
    x0, y0, size = REL_AXIS + REL_PAD, REL_PAD, REL_SIZE
    lines = []
    for k, model in enumerate(order):
        points = []
        for b in as_dict(per_model.get(model)).get("bins") or []:
            conf, acc, n = num(as_dict(b).get("confidence")), num(as_dict(b).get("accuracy")), num(b.get("n"))
            if conf is not None and acc is not None:
                x, y = round(x0 + conf * size, 1), round(y0 + (1 - acc) * size, 1)
                points.append(
                    {"x": x, "y": y, "title": f"{model}: confidence {conf:.2f}, accuracy {acc:.2f}, n={n:g}"}
                )
        if points:
            path = " ".join(f"{p['x']},{p['y']}" for p in points)
            lines.append(
                {
                    "model": model,
                    "colour": MODEL_COLOURS[k % len(MODEL_COLOURS)],
                    "path": path,
                    "points": points,
                }
            )
    if not lines:
        return None
    ticks = [
        {"v": f"{v:.1f}", "x": round(x0 + v * size, 1), "y": round(y0 + (1 - v) * size, 1)}
        for v in (0, 0.5, 1)
    ]
    return {
        "lines": lines,
        "width": x0 + size + REL_PAD,
        "height": y0 + size + REL_AXIS,
        "x0": x0,
        "y0": y0,
        "x1": x0 + size,
        "y1": y0 + size,
        "ticks": ticks,
        "tick_y": y0 + size + 13,
        "label_y": y0 + size + 27,
    }


def calibration_view(calibration: Any, models: list[dict[str, str]]) -> dict[str, Any]:
    """Rows per suite and variant (ECE, MCE, accuracy, mean confidence per model) and one reliability
    diagram per suite (its last variant, the headline one)."""
    calibration = as_dict(calibration)
    suites = as_dict(calibration.get("suites"))
    known = [m["label"] for m in models]
    rows, charts = [], []
    for suite, variants in suites.items():
        variants = as_dict(variants)
        for variant, per_model in variants.items():
            per_model = as_dict(per_model)
            order = [m for m in known if m in per_model] + [m for m in per_model if m not in known]
            rows.append(
                {"suite": suite, "variant": variant, "cells": [_ece_cell(m, per_model[m]) for m in order]}
            )
        if variants:
            last = list(variants)[-1]
            per_model = as_dict(variants[last])
            order = [m for m in known if m in per_model] + [m for m in per_model if m not in known]
            chart = reliability_chart(per_model, order)
            if chart:
                charts.append({"suite": suite, "variant": last, "chart": chart})
    skipped = calibration.get("skipped")
    return {
        "present": bool(calibration),
        "skipped": str(skipped) if skipped else "",
        "n_bins": fmt_count(calibration.get("n_bins")),
        "method": str(calibration.get("method", "")),
        "rows": rows,
        "charts": charts,
    }


def _ece_cell(model: str, stats: Any) -> dict[str, str]:
    stats = as_dict(stats)
    return {
        "model": model,
        "ece": fmt_num(stats.get("ece")),
        "mce": fmt_num(stats.get("mce")),
        "accuracy": fmt_pct(stats.get("accuracy")),
        "confidence": fmt_pct(stats.get("mean_confidence")),
        "n": fmt_count(stats.get("n")),
    }
