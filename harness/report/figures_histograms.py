"""The KD histogram figure: per-token divergence distributions at one temperature, one panel per metric
and one step line per student."""

from __future__ import annotations

import math
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from harness.report.figures_style import (
    DOUBLE,
    OTHER,
    ModelStyle,
    add_legend,
    decade_label,
    legend_label,
    model_styles,
    new_figure,
    short,
)
from harness.report.view import METRIC_LABELS, as_dict, natural_key, num

HISTOGRAM_METRICS = ("forward_kl", "reverse_kl", "js", "tvd")


def _histogram(value: Any) -> tuple[list[float], list[float]] | None:
    """(edges, shares of tokens) of a recorded {edges, counts}; None when malformed or empty."""
    hist = as_dict(value)
    edges, counts = hist.get("edges"), hist.get("counts")
    if not isinstance(edges, list) or not isinstance(counts, list) or len(edges) != len(counts) + 1:
        return None
    e = [num(x) for x in edges]
    c = [num(x) or 0.0 for x in counts]
    total = sum(c)
    if any(x is None for x in e) or total <= 0:
        return None
    return [float(x) for x in e if x is not None], [x / total for x in c]


def kd_histogram_temperatures(kd: dict[str, Any]) -> dict[str, list[str]]:
    """{temperature: [metric, ...]} for which some student's record has a histogram."""
    found: dict[str, set[str]] = {}
    for summary in kd.values():
        for t, per_metric in as_dict(as_dict(summary).get("temperatures")).items():
            for metric, stats in as_dict(per_metric).items():
                if _histogram(as_dict(stats).get("histogram")) is not None:
                    found.setdefault(str(t), set()).add(metric)
    order = {m: i for i, m in enumerate(HISTOGRAM_METRICS)}
    return {
        t: sorted(found[t], key=lambda m: (order.get(m, len(order)), m))
        for t in sorted(found, key=natural_key)
    }


def _panel_lines(
    ax: Axes,
    kd: dict[str, Any],
    models: list[dict[str, str]],
    styles: dict[str, ModelStyle],
    where: tuple[str, str],
    handles: dict[str, Any],
) -> None:
    """One step line per model with a histogram at `where` = (temperature, metric); a log x axis when
    the bins span two decades or more (the first bin [0, e) then drawn one decade wide)."""
    temperature, metric = where
    log, low, high = False, math.inf, -math.inf
    for m in models:
        summary = as_dict(kd.get(m["label"]))
        hist = _histogram(
            as_dict(as_dict(as_dict(summary.get("temperatures")).get(temperature)).get(metric)).get(
                "histogram"
            )
        )
        if hist is None:
            continue
        edges, shares = hist
        positive = [e for e in edges if e > 0]
        if edges[0] <= 0 < len(positive) and positive[-1] / positive[0] >= 100:
            edges = [positive[0] / 10, *edges[1:]]
            log = True
        s = styles.get(m["label"]) or ModelStyle(m["label"], m["role"], OTHER, "o", "-")
        lower = "lower bound" in str(summary.get("semantics", ""))
        low, high = min(low, edges[0]), max(high, edges[-1])
        line = ax.stairs(shares, edges, color=s.colour, linewidth=1.1, linestyle=s.linestyle)
        handles.setdefault(legend_label(s, "lower bound" if lower else ""), line)
    if log:
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        ax.xaxis.set_major_locator(LogLocator(base=100.0))
        ax.xaxis.set_major_formatter(FuncFormatter(decade_label))
        ax.xaxis.set_minor_formatter(NullFormatter())


def kd_histogram_figure(
    kd: dict[str, Any], models: list[dict[str, str]], temperature: str, width: float = DOUBLE
) -> Figure:
    """Per-token divergence distributions at one temperature: one panel per metric, one step line per
    student (share of its tokens per bin). Log-spaced bins are drawn on a log axis; the first bin
    [0, first positive edge) is drawn one decade wide."""
    metrics = kd_histogram_temperatures(kd).get(temperature, [])
    styles = model_styles(models)
    ncols = min(len(metrics), 4 if width >= 6 else 2) or 1
    nrows = math.ceil(len(metrics) / ncols) or 1
    fig = new_figure(width, 0.6 + nrows * width / ncols * 0.75)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    handles: dict[str, Any] = {}
    for index, ax in enumerate(axes.flat):
        if index >= len(metrics):
            ax.set_axis_off()
            continue
        metric = metrics[index]
        _panel_lines(ax, kd, models, styles, (temperature, metric), handles)
        ax.grid(True, axis="y")
        ax.set_title(METRIC_LABELS.get(metric, short(metric, 30)), loc="left")
        ax.set_xlabel("per-token value (nats)" if metric != "tvd" else "per-token value")
        if index % ncols == 0:
            ax.set_ylabel("share of tokens")
        ax.set_ylim(bottom=0)
    fig.suptitle(f"Token-level divergence, T = {short(temperature, 12)}", x=0.01, ha="left", fontsize=9)
    add_legend(fig, list(handles.values()), list(handles), 4)
    return fig
