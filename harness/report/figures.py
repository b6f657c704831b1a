"""Figures for papers and for the HTML report, drawn with matplotlib from a run record: which figures a
record has data for (FigureSpec), drawing them at paper or screen size, and writing them as SVG and PDF.

The figures themselves live in figures_icl (ICL sweep), figures_cot (CoT vs direct), figures_ifeval
(IFEval per instruction type) and figures_histograms (KD histograms), all in the one style of
figures_style; figures_svg turns a figure's SVG into safe markup for the HTML page. Their public names
are importable from here too.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from harness.errors import HarnessError
from harness.report.figures_cot import cot_direct_figure
from harness.report.figures_histograms import (
    HISTOGRAM_METRICS,
    kd_histogram_figure,
    kd_histogram_temperatures,
)
from harness.report.figures_icl import K_VARIANT, icl_sweep_figure, k_variants
from harness.report.figures_ifeval import ifeval_figure, wilson_interval
from harness.report.figures_style import (
    BASE,
    CHANCE_COLOUR,
    DOUBLE,
    LABEL_CHARS,
    MIN_WIDTH_PX,
    OTHER,
    PDF_METADATA,
    SCREEN_DOUBLE,
    SCREEN_SCALE,
    SCREEN_SINGLE,
    SINGLE,
    STUDENT_MARKERS,
    STUDENTS,
    STYLE,
    SUPERSCRIPT,
    SVG_METADATA,
    TEACHER,
    ModelStyle,
    decade_label,
    legend_label,
    model_styles,
    short,
    style,
    tint,
)
from harness.report.figures_svg import (
    ALLOWED_ATTRIBUTES,
    ALLOWED_ELEMENTS,
    FONT_FALLBACK,
    SVG_NS,
    UNSAFE_VALUE,
    XLINK_NS,
    inline_svg,
)
from harness.report.view import as_dict, model_list, ordered_suites
from harness.store.record import RunRecord

__all__ = [
    "ALLOWED_ATTRIBUTES",
    "ALLOWED_ELEMENTS",
    "BASE",
    "CHANCE_COLOUR",
    "DOUBLE",
    "FONT_FALLBACK",
    "HISTOGRAM_METRICS",
    "K_VARIANT",
    "LABEL_CHARS",
    "MIN_WIDTH_PX",
    "OTHER",
    "PDF_METADATA",
    "SCREEN_DOUBLE",
    "SCREEN_SCALE",
    "SCREEN_SINGLE",
    "SINGLE",
    "STUDENTS",
    "STUDENT_MARKERS",
    "STYLE",
    "SUPERSCRIPT",
    "SVG_METADATA",
    "SVG_NS",
    "TEACHER",
    "UNSAFE_VALUE",
    "XLINK_NS",
    "FigureSpec",
    "ModelStyle",
    "cot_direct_figure",
    "decade_label",
    "draw",
    "figure_bytes",
    "html_figures",
    "icl_sweep_figure",
    "ifeval_figure",
    "inline_svg",
    "kd_histogram_figure",
    "kd_histogram_temperatures",
    "legend_label",
    "model_styles",
    "record_figure_specs",
    "short",
    "slug",
    "style",
    "suite_figure_specs",
    "tint",
    "wilson_interval",
    "write_figures",
]


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


def _metric(summary: dict[str, Any]) -> str:
    return str(summary.get("primary_metric") or "score")


def _icl_spec(
    name: str, summary: dict[str, Any], models: list[dict[str, str]], taken: set[str]
) -> FigureSpec | None:
    if len(k_variants(summary)) < 2:
        return None
    return FigureSpec(
        stem=_unique(f"icl_sweep-{slug(name)}", taken),
        kind="icl_sweep",
        suite=name,
        title=f"ICL sweep: {short(name, 60)}",
        caption=f"{_metric(summary)} against the number of in-context examples k, per model; bands: 95% "
        "bootstrap CIs over items; dashed: chance.",
        draw=partial(icl_sweep_figure, name, summary, models),
    )


def _cot_spec(
    name: str,
    summary: dict[str, Any],
    members: list[tuple[str, dict[str, Any]]],
    models: list[dict[str, str]],
    taken: set[str],
) -> FigureSpec | None:
    if str(summary.get("ability", "")) != "cot" or len(as_dict(summary.get("variants"))) < 2:
        return None
    group = bool(members)
    return FigureSpec(
        stem=_unique(f"cot_vs_direct-{slug(name)}", taken),
        kind="cot_vs_direct",
        suite=name,
        title=f"CoT vs direct: {short(name, 60)}",
        caption=f"{_metric(summary)} per model with and without chain of thought (lighter bar: "
        f"{short(str(summary.get('baseline_variant') or 'baseline'), 20)}); whiskers: 95% "
        "bootstrap CIs; dashed: chance."
        + (" First panel: all subtasks pooled; then one panel per subtask." if group else ""),
        draw=partial(cot_direct_figure, name, summary, models, members),
        wide=group,
    )


def _ifeval_spec(
    name: str, summary: dict[str, Any], models: list[dict[str, str]], taken: set[str]
) -> FigureSpec | None:
    if not as_dict(summary.get("instruction_types")):
        return None
    return FigureSpec(
        stem=_unique(f"ifeval_types-{slug(name)}", taken),
        kind="ifeval_types",
        suite=name,
        title=f"Instruction types: {short(name, 60)}",
        caption="Strict instruction-level accuracy per instruction type; whiskers: Wilson 95% "
        "intervals over that type's instructions.",
        draw=partial(ifeval_figure, name, summary, models),
        wide=True,
    )


def suite_figure_specs(
    name: str,
    summary: dict[str, Any],
    members: list[tuple[str, dict[str, Any]]],
    models: list[dict[str, str]],
    taken: set[str] | None = None,
) -> list[FigureSpec]:
    """The figures a suite has data for: ICL sweep, CoT vs direct, IFEval per instruction type."""
    taken = set() if taken is None else taken
    specs = [  # in this order: each takes its stem from `taken` in turn
        _icl_spec(name, summary, models, taken),
        _cot_spec(name, summary, members, models, taken),
        _ifeval_spec(name, summary, models, taken),
    ]
    return [s for s in specs if s is not None]


def _kd_histogram_spec(
    kd: dict[str, Any], models: list[dict[str, str]], t: str, taken: set[str]
) -> FigureSpec:
    return FigureSpec(
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
    specs += [_kd_histogram_spec(kd, models, t, taken) for t in kd_histogram_temperatures(kd)]
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
