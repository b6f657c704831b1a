"""The ICL sweep figure: score against the number of in-context examples k, per model."""

from __future__ import annotations

import math
import re
from typing import Any

from matplotlib.figure import Figure

from harness.report.figures_style import (
    SINGLE,
    add_legend,
    chance_line,
    legend_label,
    model_styles,
    new_figure,
    pct,
    short,
    upper_limit,
)
from harness.report.view import as_dict

K_VARIANT = re.compile(r"^k=(\d+)$")


def k_variants(summary: dict[str, Any]) -> list[tuple[int, str]]:
    """The suite's "k=N" variants as (N, variant), by N."""
    found = [(K_VARIANT.match(v), v) for v in as_dict(summary.get("variants"))]
    return sorted((int(m.group(1)), v) for m, v in found if m)


def icl_sweep_figure(
    name: str, summary: dict[str, Any], models: list[dict[str, str]], width: float = SINGLE
) -> Figure:
    """Score against the number of in-context examples k, per model, with its 95% CI as a band.

    The k values are evenly spaced (a sweep 0, 1, 2, 4, 8 reads as a log scale with 0 in front).
    """
    ks = k_variants(summary)
    per_variant = as_dict(summary.get("variants"))
    styles = model_styles(models)
    fig = new_figure(width, 0.9 + width * 0.5)
    ax = fig.add_subplot()
    ax.grid(True, axis="y")
    x = list(range(len(ks)))
    tops: list[float] = []
    handles, labels = [], []
    for m in models:
        s = styles[m["label"]]
        stats = [as_dict(as_dict(per_variant.get(v)).get(m["label"])) for _, v in ks]
        y = [pct(st.get("score")) for st in stats]
        lo = [pct(st.get("ci_low")) for st in stats]
        hi = [pct(st.get("ci_high")) for st in stats]
        if all(math.isnan(v) for v in y):
            continue
        tops += y + hi
        ax.fill_between(x, lo, hi, color=s.colour, alpha=0.14, linewidth=0, zorder=2)
        (line,) = ax.plot(
            x, y, color=s.colour, marker=s.marker, linestyle=s.linestyle, zorder=3, clip_on=False
        )
        handles.append(line)
        labels.append(legend_label(s))
    chance = chance_line(ax, summary.get("chance"))
    if chance is not None:
        handles.append(chance)
        labels.append("chance")
    ax.set_xticks(x, [str(k) for k, _ in ks])
    ax.set_xlim(-0.25, len(ks) - 0.75)
    ax.set_ylim(0, upper_limit(tops))
    ax.set_xlabel("in-context examples k")
    ax.set_ylabel(f"{short(str(summary.get('primary_metric') or 'score'), 40)} (%)")
    ax.set_title(short(name, 60), loc="left")
    add_legend(fig, handles, labels, 2 if width < 5 else 4)
    return fig
