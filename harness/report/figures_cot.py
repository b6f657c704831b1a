"""The CoT vs direct figure: grouped bars per model and variant with 95% CI whiskers; for a group (BIG-Bench
Hard) one small panel per subtask after the pooled one."""

from __future__ import annotations

import math
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from harness.report.figures_style import (
    CHANCE_COLOUR,
    OTHER,
    SINGLE,
    add_legend,
    chance_line,
    legend_label,
    model_styles,
    new_figure,
    pct,
    short,
    tint,
    upper_limit,
)
from harness.report.view import as_dict, natural_key

Bar = tuple[float, float, str, str]  # x, height, fill, edge
Whisker = tuple[float, float, float, float]  # x, y, below, above


def _variant_order(summary: dict[str, Any]) -> list[str]:
    """The baseline variant (direct) first, then the others in natural order."""
    variants = sorted(as_dict(summary.get("variants")), key=natural_key)
    baseline = summary.get("baseline_variant")
    return sorted(variants, key=lambda v: v != baseline)


def _lightness(j: int, n_variants: int) -> float:
    """How much lighter variant j's bar is: the first (the baseline) lightest, the last not at all."""
    return 0.6 * (1 - j / max(1, n_variants - 1)) if n_variants > 1 else 0.0


def _bar_geometry(
    ax: Axes, summary: dict[str, Any], variants: list[str], models: list[dict[str, str]], width: float
) -> tuple[list[Bar], list[Whisker]]:
    """The bars and CI whiskers of a panel; a missing score is marked "n/a" on `ax` in its place."""
    styles = model_styles(models)
    per_variant = as_dict(summary.get("variants"))
    bars: list[Bar] = []
    whiskers: list[Whisker] = []
    for i, m in enumerate(models):
        s = styles[m["label"]]
        for j, variant in enumerate(variants):
            st = as_dict(as_dict(per_variant.get(variant)).get(m["label"]))
            x = i + (j - (len(variants) - 1) / 2) * width
            y, lo, hi = pct(st.get("score")), pct(st.get("ci_low")), pct(st.get("ci_high"))
            if math.isnan(y):
                ax.text(x, 1, "n/a", ha="center", va="bottom", fontsize=5.5, rotation=90, color=OTHER)
                continue
            bars.append((x, y, tint(s.colour, _lightness(j, len(variants))), s.colour))
            if not (math.isnan(lo) or math.isnan(hi)):
                whiskers.append((x, y, max(0.0, y - lo), max(0.0, hi - y)))
    return bars, whiskers


def _bars_panel(
    ax: Axes, summary: dict[str, Any], variants: list[str], models: list[dict[str, str]], ticks: bool
) -> list[float]:
    """Grouped bars: one group per model, one bar per variant (the baseline lighter), 95% CI whiskers."""
    width = 0.8 / max(1, len(variants))
    bars, whiskers = _bar_geometry(ax, summary, variants, models, width)
    if bars:  # drawn in one call each (speed)
        xs, ys, fills, edges = zip(*bars, strict=True)
        ax.bar(xs, ys, width * 0.92, color=fills, edgecolor=edges, linewidth=0.6)
    if whiskers:
        wx, wy, below, above = zip(*whiskers, strict=True)
        ax.errorbar(
            wx,
            wy,
            yerr=[below, above],
            fmt="none",
            ecolor="#24292f",
            elinewidth=0.7,
            capsize=1.6,
            capthick=0.7,
        )
    tops = [b[1] for b in bars] + [w[1] + w[3] for w in whiskers]
    chance_line(ax, summary.get("chance"))
    ax.grid(True, axis="y")
    ax.set_axisbelow(True)
    ax.set_xlim(-0.6, len(models) - 0.4)
    if ticks:
        ax.set_xticks(range(len(models)), [short(m["label"], 16) for m in models])
    else:
        ax.set_xticks([])
    return tops


def _variant_handles(variants: list[str]) -> tuple[list[Any], list[str]]:
    handles = []
    for j, _ in enumerate(variants):
        light = _lightness(j, len(variants))
        handles.append(Patch(facecolor=tint("#57606a", light), edgecolor="#57606a", linewidth=0.6))
    return handles, [short(v, 20) for v in variants]


def _panels(
    name: str, summary: dict[str, Any], members: list[tuple[str, dict[str, Any]]] | None, width: float
) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """(title, summary) per panel, the pooled one first, and the number of panel columns."""
    panels = [("all subtasks (pooled)" if members else short(name, 60), summary)]
    n_panels = 1 + len(members or [])
    ncols = 1 if n_panels == 1 else min(5 if width >= 6 else 3, n_panels)
    chars = int(width / ncols * 72 / 4.6)  # what fits a panel's width at 6.5 pt, with a margin
    panels += [(short(n.split(":", 1)[-1], chars), s) for n, s in members or []]
    return panels, ncols


def _cot_legend(
    fig: Figure, variants: list[str], models: list[dict[str, str]], grouped: bool, width: float
) -> None:
    """Variants (by lightness), the models where the panels do not name them, and chance."""
    styles = model_styles(models)
    handles, labels = _variant_handles(variants)
    for m in models if grouped else []:  # one panel names the models under its bars
        s = styles[m["label"]]
        handles.append(Patch(facecolor=s.colour, edgecolor=s.colour))
        labels.append(legend_label(s))
    handles.append(Line2D([], [], color=CHANCE_COLOUR, linestyle=(0, (3, 2)), linewidth=0.8))
    labels.append("chance")
    add_legend(fig, handles, labels, 3 if width < 5 else 8)


def cot_direct_figure(
    name: str,
    summary: dict[str, Any],
    models: list[dict[str, str]],
    members: list[tuple[str, dict[str, Any]]] | None = None,
    width: float = SINGLE,
) -> Figure:
    """CoT against direct answers per model, bars with 95% CI whiskers and the chance level dashed.

    For a group (BIG-Bench Hard) one small panel per subtask follows the pooled panel, on a shared y
    axis from 0 to 100%, so subtasks compare at a glance.
    """
    variants = _variant_order(summary)
    panels, ncols = _panels(name, summary, members, width)
    nrows = math.ceil(len(panels) / ncols)
    height = 0.9 + width * 0.5 if len(panels) == 1 else 0.55 + nrows * width / ncols * 0.78
    fig = new_figure(width, height)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=len(panels) > 1)
    tops: list[float] = []
    ylabel = f"{short(str(summary.get('primary_metric') or 'score'), 30)} (%)"
    for index, ax in enumerate(axes.flat):
        if index >= len(panels):
            ax.set_axis_off()
            continue
        title, panel = panels[index]
        tops += _bars_panel(ax, panel, variants, models, ticks=len(panels) == 1)
        if len(panels) == 1:
            ax.set_title(title, loc="left")
            ax.set_ylabel(ylabel)
        else:
            ax.set_title(title, loc="left", fontsize=6.5, fontweight="normal", pad=3)
    top = 100.0 if len(panels) > 1 else upper_limit(tops)
    for ax in axes.flat:
        ax.set_ylim(0, top)
    if len(panels) > 1:
        fig.suptitle(short(name, 60), x=0.01, ha="left", fontsize=9, fontweight="bold")
        fig.supylabel(ylabel, fontsize=8)
    _cot_legend(fig, variants, models, len(panels) > 1, width)
    return fig
