"""Figures for papers and for the HTML report, drawn with matplotlib from a run record.

Every figure uses one style (STYLE: fonts, sizes, grid) and one colour, marker and line style per
model, by role: the teacher blue, a base model orange, students purple, green, pink, teal, grey.
Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas (never pyplot), so
nothing global changes and no display is needed. Output is deterministic: a fixed `svg.hashsalt`, no
dates in the SVG or PDF metadata, and the bundled DejaVu Sans font, so two renders of the same record
are byte-identical. Record strings are drawn as plain text (`text.parse_math` off: a "$" in a model
label is not math).

`inline_svg` turns a figure's SVG into markup for the HTML report: a whitelist of SVG elements and
attributes (no scripts, styles, links or clip paths), ids renamed per figure so that several figures
share one page.
"""

from __future__ import annotations

import io
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from harness.errors import HarnessError
from harness.report.view import METRIC_LABELS, as_dict, model_list, natural_key, num, ordered_suites
from harness.store.record import RunRecord

STYLE: dict[Any, Any] = {  # dict[Any, ...]: matplotlib types rc keys as a Literal of names
    "font.family": "DejaVu Sans",  # bundled with matplotlib: the same glyphs on every machine
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#57606a",
    "axes.linewidth": 0.6,
    "axes.titleweight": "bold",
    "grid.color": "#d0d7de",
    "grid.linewidth": 0.5,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "lines.linewidth": 1.4,
    "lines.markersize": 4,
    "legend.frameon": False,
    "svg.hashsalt": "distill-harness",
    "svg.fonttype": "none",  # text stays text: small files, selectable, escaped by the SVG writer
    "pdf.fonttype": 42,  # TrueType in the PDF (publishers reject Type 3 fonts)
    "text.parse_math": False,
    "text.usetex": False,
}
SVG_METADATA: dict[str, str | None] = {"Date": None, "Creator": "distill-harness (matplotlib)"}
PDF_METADATA: dict[str, str | None] = {"CreationDate": None, "ModDate": None, "Creator": "distill-harness"}
SINGLE, DOUBLE = 3.4, 7.0  # inches: one and two columns of a two-column paper
SCREEN_SINGLE, SCREEN_DOUBLE = 4.5, 8.0  # inches for the HTML report (same fonts, more room)
SCREEN_SCALE = 1.3  # the HTML shows a figure at most this times its natural size (8 pt -> 14 px)
MIN_WIDTH_PX = (340, 640)  # narrower screens scroll a figure sideways rather than shrink its text
TEACHER, BASE, OTHER = "#0969da", "#bc4c00", "#6e7781"
STUDENTS = ("#8250df", "#1a7f37", "#bf3989", "#0a7e8c", "#6e7781", "#953800")
STUDENT_MARKERS = ("^", "D", "v", "P", "X", "<")
CHANCE_COLOUR = "#8c959f"
LABEL_CHARS = 28  # longer model / subtask labels are shortened in figures (tables keep them whole)
K_VARIANT = re.compile(r"^k=(\d+)$")


@dataclass(frozen=True)
class ModelStyle:
    label: str
    role: str
    colour: str
    marker: str
    linestyle: str | tuple[int, tuple[int, int]]


@dataclass(frozen=True)
class FigureSpec:
    """A figure to draw: `draw(width_inches)` returns it; `stem` is a safe, unique file name."""

    stem: str
    kind: str  # icl_sweep | cot_vs_direct | ifeval_types | kd_histograms
    suite: str  # the suite it belongs to ("" for KD figures)
    title: str
    caption: str
    draw: Callable[[float], Figure]
    wide: bool = False  # a two-column figure


@contextmanager
def style() -> Iterator[None]:
    with rc_context(STYLE):
        yield


def model_styles(models: list[dict[str, str]]) -> dict[str, ModelStyle]:
    """One style per model label, by role; students take the next colour and marker in turn."""
    out: dict[str, ModelStyle] = {}
    n_students = 0
    for m in models:
        if m["role"] == "teacher":
            out[m["label"]] = ModelStyle(m["label"], "teacher", TEACHER, "o", "-")
        elif m["role"] == "base":
            out[m["label"]] = ModelStyle(m["label"], "base", BASE, "s", (0, (1, 1)))
        else:
            i = n_students % len(STUDENTS)
            colour = STUDENTS[i] if m["role"] == "student" else OTHER
            out[m["label"]] = ModelStyle(m["label"], m["role"], colour, STUDENT_MARKERS[i], (0, (4, 1)))
            n_students += 1
    return out


def short(text: str, limit: int = LABEL_CHARS) -> str:
    """Control characters as spaces, and at most `limit` characters (an ellipsis marks a cut)."""
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def legend_label(s: ModelStyle, *notes: str) -> str:
    """ "student-topk (student, lower bound)"; the role is left out where it is the label itself."""
    extra = [s.role] if s.role not in ("model", s.label) else []
    extra += [n for n in notes if n]
    return short(s.label) + (f" ({', '.join(extra)})" if extra else "")


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def decade_label(x: float, _pos: Any = None) -> str:
    """Log-axis ticks as 10⁻⁶ … 10² in plain text (math text is off, so matplotlib's default would
    print its TeX markup)."""
    if x <= 0 or not math.isfinite(x):
        return ""
    exponent = round(math.log10(x))
    if abs(math.log10(x) - exponent) > 1e-6:
        return ""
    return "1" if exponent == 0 else "10" if exponent == 1 else "10" + str(exponent).translate(SUPERSCRIPT)


def tint(colour: str, amount: float) -> str:
    """`colour` mixed with white (amount 1 = white): the lighter bar of a baseline variant."""
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * amount):02x}" for c in rgb)


def _pct(value: Any) -> float:
    x = num(value)
    return math.nan if x is None else 100.0 * x


def _upper_limit(values: list[float]) -> float:
    """The y axis top for scores in %: room above the highest value or CI end, at most 100."""
    finite = [v for v in values if math.isfinite(v)]
    top = max(finite, default=100.0)
    return min(100.0, max(10.0, math.ceil((top + 5.0) / 10.0) * 10.0))


def _chance_line(ax: Axes, chance: Any, horizontal: bool = True) -> Line2D | None:
    c = num(chance)
    if c is None or c <= 0:
        return None
    draw = ax.axhline if horizontal else ax.axvline
    return draw(100 * c, color=CHANCE_COLOUR, linestyle=(0, (3, 2)), linewidth=0.8, zorder=1)


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _legend(fig: Figure, handles: list[Any], labels: list[str], ncols: int) -> None:
    # explicit handles and labels: a label starting with "_" would otherwise be hidden
    fig.legend(handles, labels, loc="outside lower center", ncols=max(1, min(ncols, len(handles))))


# ---------------------------------------------------------------- ICL sweep


def _k_variants(summary: dict[str, Any]) -> list[tuple[int, str]]:
    found = [(K_VARIANT.match(v), v) for v in as_dict(summary.get("variants"))]
    return sorted((int(m.group(1)), v) for m, v in found if m)


def icl_sweep_figure(
    name: str, summary: dict[str, Any], models: list[dict[str, str]], width: float = SINGLE
) -> Figure:
    """Score against the number of in-context examples k, per model, with its 95% CI as a band.

    The k values are evenly spaced (a sweep 0, 1, 2, 4, 8 reads as a log scale with 0 in front).
    """
    ks = _k_variants(summary)
    per_variant = as_dict(summary.get("variants"))
    styles = model_styles(models)
    fig = _new_figure(width, 0.9 + width * 0.5)
    ax = fig.add_subplot()
    ax.grid(True, axis="y")
    x = list(range(len(ks)))
    tops: list[float] = []
    handles, labels = [], []
    for m in models:
        s = styles[m["label"]]
        stats = [as_dict(as_dict(per_variant.get(v)).get(m["label"])) for _, v in ks]
        y = [_pct(st.get("score")) for st in stats]
        lo = [_pct(st.get("ci_low")) for st in stats]
        hi = [_pct(st.get("ci_high")) for st in stats]
        if all(math.isnan(v) for v in y):
            continue
        tops += y + hi
        ax.fill_between(x, lo, hi, color=s.colour, alpha=0.14, linewidth=0, zorder=2)
        (line,) = ax.plot(
            x, y, color=s.colour, marker=s.marker, linestyle=s.linestyle, zorder=3, clip_on=False
        )
        handles.append(line)
        labels.append(legend_label(s))
    chance = _chance_line(ax, summary.get("chance"))
    if chance is not None:
        handles.append(chance)
        labels.append("chance")
    ax.set_xticks(x, [str(k) for k, _ in ks])
    ax.set_xlim(-0.25, len(ks) - 0.75)
    ax.set_ylim(0, _upper_limit(tops))
    ax.set_xlabel("in-context examples k")
    ax.set_ylabel(f"{short(str(summary.get('primary_metric') or 'score'), 40)} (%)")
    ax.set_title(short(name, 60), loc="left")
    _legend(fig, handles, labels, 2 if width < 5 else 4)
    return fig


# ---------------------------------------------------------------- CoT vs direct


def _variant_order(summary: dict[str, Any]) -> list[str]:
    """The baseline variant (direct) first, then the others in natural order."""
    variants = sorted(as_dict(summary.get("variants")), key=natural_key)
    baseline = summary.get("baseline_variant")
    return sorted(variants, key=lambda v: v != baseline)


def _bars_panel(
    ax: Axes, summary: dict[str, Any], variants: list[str], models: list[dict[str, str]], ticks: bool
) -> list[float]:
    """Grouped bars: one group per model, one bar per variant (the baseline lighter), 95% CI whiskers."""
    styles = model_styles(models)
    per_variant = as_dict(summary.get("variants"))
    width = 0.8 / max(1, len(variants))
    bars: list[tuple[float, float, str, str]] = []  # x, height, fill, edge: drawn in one call (speed)
    whiskers: list[tuple[float, float, float, float]] = []  # x, y, below, above
    for i, m in enumerate(models):
        s = styles[m["label"]]
        for j, variant in enumerate(variants):
            st = as_dict(as_dict(per_variant.get(variant)).get(m["label"]))
            x = i + (j - (len(variants) - 1) / 2) * width
            y, lo, hi = _pct(st.get("score")), _pct(st.get("ci_low")), _pct(st.get("ci_high"))
            if math.isnan(y):
                ax.text(x, 1, "n/a", ha="center", va="bottom", fontsize=5.5, rotation=90, color=OTHER)
                continue
            light = 0.6 * (1 - j / max(1, len(variants) - 1)) if len(variants) > 1 else 0.0
            bars.append((x, y, tint(s.colour, light), s.colour))
            if not (math.isnan(lo) or math.isnan(hi)):
                whiskers.append((x, y, max(0.0, y - lo), max(0.0, hi - y)))
    if bars:
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
    _chance_line(ax, summary.get("chance"))
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
        light = 0.6 * (1 - j / max(1, len(variants) - 1)) if len(variants) > 1 else 0.0
        handles.append(Patch(facecolor=tint("#57606a", light), edgecolor="#57606a", linewidth=0.6))
    return handles, [short(v, 20) for v in variants]


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
    styles = model_styles(models)
    panels = [("all subtasks (pooled)" if members else short(name, 60), summary)]
    n_panels = 1 + len(members or [])
    ncols = 1 if n_panels == 1 else min(5 if width >= 6 else 3, n_panels)
    chars = int(width / ncols * 72 / 4.6)  # what fits a panel's width at 6.5 pt, with a margin
    panels += [(short(n.split(":", 1)[-1], chars), s) for n, s in members or []]
    nrows = math.ceil(len(panels) / ncols)
    height = 0.9 + width * 0.5 if len(panels) == 1 else 0.55 + nrows * width / ncols * 0.78
    fig = _new_figure(width, height)
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
    top = 100.0 if len(panels) > 1 else _upper_limit(tops)
    for ax in axes.flat:
        ax.set_ylim(0, top)
    if len(panels) > 1:
        fig.suptitle(short(name, 60), x=0.01, ha="left", fontsize=9, fontweight="bold")
        fig.supylabel(ylabel, fontsize=8)
    handles, labels = _variant_handles(variants)
    for m in models if len(panels) > 1 else []:  # one panel names the models under its bars
        s = styles[m["label"]]
        handles.append(Patch(facecolor=s.colour, edgecolor=s.colour))
        labels.append(legend_label(s))
    handles.append(Line2D([], [], color=CHANCE_COLOUR, linestyle=(0, (3, 2)), linewidth=0.8))
    labels.append("chance")
    _legend(fig, handles, labels, 3 if width < 5 else 8)
    return fig


# ---------------------------------------------------------------- IFEval per instruction type


def wilson_interval(successes: float, n: float, z: float = 1.959964) -> tuple[float, float]:
    """Wilson's 95% score interval for a proportion (well behaved at 0 and 1 and for small n)."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


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
    fig = _new_figure(width, 0.9 + row * len(kinds))
    ax = fig.add_subplot()
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
    counts = [next((num(as_dict(v).get("n")) for v in as_dict(types[k]).values()), None) for k in kinds]
    ax.set_yticks(
        range(len(kinds)),
        [
            f"{short(k, 40)} (n={n:.0f})" if n is not None else short(k, 40)
            for k, n in zip(kinds, counts, strict=True)
        ],
    )
    ax.set_ylim(len(kinds) - 0.5, -0.5)
    ax.set_xlim(0, 100)
    ax.grid(True, axis="x")
    ax.set_axisbelow(True)
    ax.tick_params(axis="y", length=0)
    ax.set_xlabel("strict instruction accuracy (%)")
    ax.set_title(short(name, 60), loc="left")
    handles: list[Any] = [Patch(color=styles[m["label"]].colour) for m in shown]
    _legend(fig, handles, [legend_label(styles[m["label"]]) for m in shown], 2 if width < 5 else 6)
    return fig


# ---------------------------------------------------------------- KD histograms

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
    fig = _new_figure(width, 0.6 + nrows * width / ncols * 0.75)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    handles: dict[str, Any] = {}
    for index, ax in enumerate(axes.flat):
        if index >= len(metrics):
            ax.set_axis_off()
            continue
        metric = metrics[index]
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
        ax.grid(True, axis="y")
        ax.set_title(METRIC_LABELS.get(metric, short(metric, 30)), loc="left")
        ax.set_xlabel("per-token value (nats)" if metric != "tvd" else "per-token value")
        if index % ncols == 0:
            ax.set_ylabel("share of tokens")
        ax.set_ylim(bottom=0)
    fig.suptitle(f"Token-level divergence, T = {short(temperature, 12)}", x=0.01, ha="left", fontsize=9)
    _legend(fig, list(handles.values()), list(handles), 4)
    return fig


# ---------------------------------------------------------------- the figures of a record


def slug(text: str) -> str:
    """A file-name-safe form of a record string (suite names are untrusted): [a-z0-9_-] only."""
    out = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")
    return out[:60] or "x"


def _unique(stem: str, taken: set[str]) -> str:
    candidate, i = stem, 2
    while candidate in taken:
        candidate, i = f"{stem}-{i}", i + 1
    taken.add(candidate)
    return candidate


def suite_figure_specs(
    name: str,
    summary: dict[str, Any],
    members: list[tuple[str, dict[str, Any]]],
    models: list[dict[str, str]],
    taken: set[str] | None = None,
) -> list[FigureSpec]:
    """The figures a suite has data for: ICL sweep, CoT vs direct, IFEval per instruction type."""
    taken = set() if taken is None else taken
    specs = []
    ability = str(summary.get("ability", ""))
    label = short(name, 60)
    metric = str(summary.get("primary_metric") or "score")
    if len(_k_variants(summary)) >= 2:
        specs.append(
            FigureSpec(
                stem=_unique(f"icl_sweep-{slug(name)}", taken),
                kind="icl_sweep",
                suite=name,
                title=f"ICL sweep: {label}",
                caption=f"{metric} against the number of in-context examples k, per model; bands: 95% "
                "bootstrap CIs over items; dashed: chance.",
                draw=partial(icl_sweep_figure, name, summary, models),
            )
        )
    if ability == "cot" and len(as_dict(summary.get("variants"))) >= 2:
        group = bool(members)
        specs.append(
            FigureSpec(
                stem=_unique(f"cot_vs_direct-{slug(name)}", taken),
                kind="cot_vs_direct",
                suite=name,
                title=f"CoT vs direct: {label}",
                caption=f"{metric} per model with and without chain of thought (lighter bar: "
                f"{short(str(summary.get('baseline_variant') or 'baseline'), 20)}); whiskers: 95% "
                "bootstrap CIs; dashed: chance."
                + (" First panel: all subtasks pooled; then one panel per subtask." if group else ""),
                draw=partial(cot_direct_figure, name, summary, models, members),
                wide=group,
            )
        )
    if as_dict(summary.get("instruction_types")):
        specs.append(
            FigureSpec(
                stem=_unique(f"ifeval_types-{slug(name)}", taken),
                kind="ifeval_types",
                suite=name,
                title=f"Instruction types: {label}",
                caption="Strict instruction-level accuracy per instruction type; whiskers: Wilson 95% "
                "intervals over that type's instructions.",
                draw=partial(ifeval_figure, name, summary, models),
                wide=True,
            )
        )
    return specs


def record_figure_specs(record: RunRecord) -> list[FigureSpec]:
    """Every figure of a run: per top-level suite (subtasks inside their group's), then KD histograms."""
    models = model_list(record)
    suites = as_dict(record.metrics.get("suites"))
    taken: set[str] = set()
    specs: list[FigureSpec] = []
    for name, summary in ordered_suites(suites):
        if summary.get("group"):
            continue
        members = [(str(m), as_dict(suites[m])) for m in summary.get("members") or [] if m in suites]
        specs += suite_figure_specs(name, summary, members, models, taken)
    kd = as_dict(record.metrics.get("kd"))
    for t in kd_histogram_temperatures(kd):
        specs.append(
            FigureSpec(
                stem=_unique(f"kd_histograms-T{slug(t)}", taken),
                kind="kd_histograms",
                suite="",
                title=f"KD histograms, T = {short(t, 12)}",
                caption="Distribution of per-token divergences between the teacher and each model on the "
                "teacher's text (share of tokens per bin; the leftmost bin holds the values below its right "
                "edge, zero included); top-k + tail values are lower bounds.",
                draw=partial(kd_histogram_figure, kd, models, t),
                wide=True,
            )
        )
    return specs


def draw(spec: FigureSpec, *, screen: bool = False) -> Figure:
    """The figure at paper size (one or two columns) or, for the HTML report, screen size."""
    widths = (SCREEN_SINGLE, SCREEN_DOUBLE) if screen else (SINGLE, DOUBLE)
    width = widths[1] if spec.wide else widths[0]
    with style():
        return spec.draw(width)


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """The figure as SVG or PDF bytes, the same bytes for the same figure."""
    if fmt not in ("svg", "pdf"):
        raise HarnessError(f"figure format {fmt!r}: use svg or pdf")
    buffer = io.BytesIO()
    with style():
        fig.savefig(
            buffer,
            format=fmt,
            metadata=SVG_METADATA if fmt == "svg" else PDF_METADATA,
            facecolor="white",
        )
    return buffer.getvalue()


def write_figures(record: RunRecord, out_dir: Path) -> list[Path]:
    """Every figure of the record as OUT_DIR/<stem>.svg and .pdf; returns the files written."""
    written = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for spec in record_figure_specs(record):
            fig = draw(spec)
            for fmt in ("svg", "pdf"):
                path = out_dir / f"{spec.stem}.{fmt}"
                path.write_bytes(figure_bytes(fig, fmt))
                written.append(path)
    except OSError as exc:
        raise HarnessError(f"cannot write figures to {out_dir}: {exc.strerror}; pick another folder") from exc
    return written


# ---------------------------------------------------------------- SVG for the HTML page

SVG_NS, XLINK_NS = "http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"
ALLOWED_ELEMENTS = frozenset(
    {"svg", "g", "defs", "path", "use", "text", "tspan", "rect", "line", "polyline", "polygon", "circle"}
    | {"ellipse", "title", "desc"}
)
ALLOWED_ATTRIBUTES = frozenset(
    {"id", "d", "style", "transform", "x", "y", "dx", "dy", "width", "height", "viewBox", "href"}
    | {"x1", "y1", "x2", "y2", "points", "cx", "cy", "r", "rx", "ry", "fill", "stroke", "stroke-width"}
    | {"opacity", "text-anchor", "font-size", "font-weight", "dominant-baseline", "version"}
)
UNSAFE_VALUE = re.compile(r"url\s*\(|expression\s*\(|javascript:|@import|\\|<|>", re.I)
FONT_FALLBACK = "'DejaVu Sans', Verdana, 'Segoe UI', Arial, sans-serif"


def _local_name(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def inline_svg(
    svg: bytes, prefix: str, *, label: str, scale: float = SCREEN_SCALE, min_width_px: int = MIN_WIDTH_PX[0]
) -> str:
    """SVG markup safe to place in the report's HTML: only whitelisted elements and attributes survive
    (no script, style, foreignObject, links, event handlers or clip paths); `href` may only point at an
    id of the same figure; ids are prefixed with `prefix` (unique per page). The root scales with its
    container between `min_width_px` and `scale` times its natural size."""
    try:
        root = ET.fromstring(svg)
    except ET.ParseError as exc:
        raise HarnessError(f"figure SVG is not well-formed XML ({exc}): cannot embed it") from exc
    if _local_name(root.tag) != "svg":
        raise HarnessError("figure SVG has no <svg> root: cannot embed it")
    referenced = {
        value[1:]
        for el in root.iter()
        for key, value in el.attrib.items()
        if _local_name(key) == "href" and value.startswith("#")
    }
    prefix = re.sub(r"[^A-Za-z0-9_-]", "-", prefix)
    parts: list[str] = []
    sizes = (scale, min_width_px)
    _serialize(root, parts, prefix, referenced, is_root=True, label=label, sizes=sizes)
    return "".join(parts)


def _clean_attributes(el: ET.Element, prefix: str, referenced: set[str]) -> list[tuple[str, str]]:
    out = []
    for key, value in el.attrib.items():
        name = _local_name(key)
        if name not in ALLOWED_ATTRIBUTES or name.lower().startswith("on"):
            continue
        if name == "href":
            if not re.fullmatch(r"#[A-Za-z0-9_.-]+", value) or value[1:] not in referenced:
                continue
            value = f"#{prefix}{value[1:]}"
        elif name == "id":
            if value not in referenced:
                continue  # matplotlib names every group; unreferenced ids would only collide on the page
            value = prefix + value
        elif UNSAFE_VALUE.search(value):
            continue
        if name == "style":
            value = value.replace("font-family: 'DejaVu Sans'", f"font-family: {FONT_FALLBACK}")
        out.append((name, value))
    return out


def _serialize(
    el: ET.Element,
    parts: list[str],
    prefix: str,
    referenced: set[str],
    *,
    is_root: bool = False,
    label: str = "",
    sizes: tuple[float, int] = (1.0, 0),
) -> None:
    name = _local_name(el.tag)
    if name not in ALLOWED_ELEMENTS or (name == "svg" and not is_root):
        return  # dropped with its subtree (matplotlib writes no text between elements)
    attrs = _clean_attributes(el, prefix, referenced)
    if is_root:
        attrs = [(k, v) for k, v in attrs if k in ("viewBox", "version")]
        view_box = dict(attrs).get("viewBox", "0 0 0 0").split()
        width_px = float(view_box[2]) * 4 / 3 * sizes[0] if len(view_box) == 4 else 600.0
        attrs += [
            ("xmlns", SVG_NS),
            ("class", "figure"),
            ("role", "img"),
            ("aria-label", label),
            (
                "style",
                f"width: 100%; max-width: {width_px:.0f}px; min-width: {min(sizes[1], width_px):.0f}px; "
                "height: auto; display: block",
            ),
        ]
    parts.append(f"<{name}" + "".join(f" {k}={quoteattr(v)}" for k, v in attrs) + ">")
    if is_root and label:
        parts.append(f"<title>{escape(label)}</title>")
    if el.text and name in ("text", "tspan", "title", "desc"):
        parts.append(escape(el.text))
    for child in el:
        _serialize(child, parts, prefix, referenced)
    parts.append(f"</{name}>")


def html_figures(
    name: str,
    summary: dict[str, Any],
    members: list[tuple[str, dict[str, Any]]],
    models: list[dict[str, str]],
    taken: set[str],
    kinds: tuple[str, ...] = ("icl_sweep", "cot_vs_direct"),
) -> list[dict[str, str]]:
    """A suite's figures of the given kinds as sanitized inline SVG with title and caption, for the
    HTML report (`svg` is markup: the template must not escape it, and nothing else may be unescaped).
    `taken` holds the stems already on the page: each figure's ids get a prefix unique on it."""
    out = []
    for spec in suite_figure_specs(name, summary, members, models, taken):
        if spec.kind not in kinds:
            continue
        fig = draw(spec, screen=True)
        svg = figure_bytes(fig, "svg")
        prefix = f"f{slug(spec.stem)}-"
        out.append(
            {
                "title": spec.title,
                "caption": spec.caption,
                "svg": inline_svg(svg, prefix, label=spec.title, min_width_px=MIN_WIDTH_PX[spec.wide]),
            }
        )
    return out
