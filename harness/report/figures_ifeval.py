"""The IFEval figure: strict instruction-level accuracy per instruction type and model, with Wilson 95%
intervals over that type's instructions."""

from __future__ import annotations

import math
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from harness.report.figures_style import (
    SINGLE,
    ModelStyle,
    add_legend,
    legend_label,
    model_styles,
    new_figure,
    short,
)
from harness.report.view import as_dict, num


def wilson_interval(successes: float, n: float, z: float = 1.959964) -> tuple[float, float]:
    """Wilson's 95% score interval for a proportion (well behaved at 0 and 1 and for small n)."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _type_bars(
    ax: Axes,
    types: dict[str, Any],
    kinds: list[str],
    shown: list[dict[str, str]],
    styles: dict[str, ModelStyle],
) -> None:
    """One horizontal bar per type and model (models side by side within a type), Wilson whiskers."""
    bar = 0.8 / max(1, len(shown))
    for j, m in enumerate(shown):
        s = styles[m["label"]]
        for i, kind in enumerate(kinds):
            cell = as_dict(as_dict(types[kind]).get(m["label"]))
            strict, n = num(cell.get("strict")), num(cell.get("n"))
            if strict is None:
                continue
            y = i + (j - (len(shown) - 1) / 2) * bar
            ax.barh(y, 100 * strict, bar * 0.9, color=s.colour, linewidth=0)
            if n:
                lo, hi = wilson_interval(strict * n, n)
                ax.errorbar(
                    [100 * strict],
                    [y],
                    xerr=[[100 * (strict - lo)], [100 * (hi - strict)]],
                    fmt="none",
                    ecolor="#24292f",
                    elinewidth=0.5,
                    capsize=1.0,
                    capthick=0.5,
                )


def _type_labels(types: dict[str, Any], kinds: list[str]) -> list[str]:
    """Each type's (shortened) name and its number of instructions."""
    counts = [next((num(as_dict(v).get("n")) for v in as_dict(types[k]).values()), None) for k in kinds]
    return [
        f"{short(k, 40)} (n={n:.0f})" if n is not None else short(k, 40)
        for k, n in zip(kinds, counts, strict=True)
    ]


def ifeval_figure(
    name: str, summary: dict[str, Any], models: list[dict[str, str]], width: float = SINGLE
) -> Figure:
    """Strict instruction-level accuracy per instruction type and model, horizontal bars with Wilson 95%
    intervals over that type's instructions; types grouped by category (their name's prefix)."""
    types = as_dict(summary.get("instruction_types"))
    kinds = sorted(types)
    styles = model_styles(models)
    shown = [m for m in models if any(m["label"] in as_dict(types[k]) for k in kinds)]
    row = 0.1 * max(1, len(shown)) + 0.07
    fig = new_figure(width, 0.9 + row * len(kinds))
    ax = fig.add_subplot()
    _type_bars(ax, types, kinds, shown, styles)
    ax.set_yticks(range(len(kinds)), _type_labels(types, kinds))
    ax.set_ylim(len(kinds) - 0.5, -0.5)
    ax.set_xlim(0, 100)
    ax.grid(True, axis="x")
    ax.set_axisbelow(True)
    ax.tick_params(axis="y", length=0)
    ax.set_xlabel("strict instruction accuracy (%)")
    ax.set_title(short(name, 60), loc="left")
    handles: list[Any] = [Patch(color=styles[m["label"]].colour) for m in shown]
    add_legend(fig, handles, [legend_label(styles[m["label"]]) for m in shown], 2 if width < 5 else 6)
    return fig
