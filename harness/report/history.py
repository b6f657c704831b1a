"""`harness history`: a self-contained trend page of a run store's runs.

One figure per ability (each top-level suite's primary metric at its headline variant) and per gated
KD metric (forward KL and top-1 agreement on the teacher's text at T = 1), over the runs in commit
order, with each value's 95% CI as an error bar; a point the regression gate flagged in that run is
ringed in red. A table under each figure holds the same numbers, and a table of runs gives each one's
tags and gate verdict. Like the run report: one HTML file, inline CSS and sanitized inline SVG, no
script, a Content-Security-Policy that forbids scripts and network fetches.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.regress import KD_METRICS, KD_TEMPERATURE, headline_variant
from harness.store.index import RunStore, StoredRun
from harness.store.record import read_record

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
REGRESSED = "#cf222e"
KD_TITLES = {
    "forward_kl": "KD forward KL (T = 1, teacher text; lower is better)",
    "top1_agree": "KD top-1 agreement",
}


@dataclass(frozen=True)
class Point:
    run: int  # index into the page's runs
    value: float | None
    ci_low: float | None
    ci_high: float | None
    regressed: bool = False


@dataclass
class Section:
    key: str  # suite name, or "kd:<metric>"
    title: str
    metric: str
    roles: dict[str, str] = field(default_factory=dict)
    series: dict[str, list[Point]] = field(default_factory=dict)  # model -> points


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _regressed(run: StoredRun) -> set[tuple[str, str, str]]:
    """(suite, metric, model) flagged by the gate in this run's regress.json."""
    path = run.path / "regress.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, ValueError):
        return set()
    return {
        (str(m.get("suite")), str(m.get("metric")), str(m.get("model")))
        for m in data.get("metrics", [])
        if isinstance(m, dict) and m.get("regressed")
    }


def _section(sections: dict[str, Section], key: str, title: str, metric: str) -> Section:
    if key not in sections:
        sections[key] = Section(key, title, metric)
    return sections[key]


def collect(runs: list[StoredRun]) -> list[Section]:
    """The page's sections, in first-seen order, each with one series of points per model."""
    sections: dict[str, Section] = {}
    for index, run in enumerate(runs):
        record = read_record(run.path)
        flagged = _regressed(run)
        roles = {label: role for label, role, _, _ in run.models}
        for suite, summary in record.metrics.get("suites", {}).items():
            if not isinstance(summary, dict) or summary.get("group") is not None:
                continue
            variant = headline_variant(summary)
            metric = str(summary.get("primary_metric") or "score")
            title = f"{summary.get('ability', '?').upper()} · {suite} ({variant}, {metric.split(',')[0]})"
            section = _section(sections, suite, title, metric)
            for model, row in (summary.get("variants", {}).get(variant) or {}).items():
                section.roles.setdefault(model, roles.get(model, "model"))
                point = Point(
                    index,
                    _num(row.get("score")),
                    _num(row.get("ci_low")),
                    _num(row.get("ci_high")),
                    (suite, metric, model) in flagged,
                )
                section.series.setdefault(model, []).append(point)
        for student, entry in record.metrics.get("kd", {}).items():
            per_t = (entry.get("temperatures") or {}).get(KD_TEMPERATURE) if isinstance(entry, dict) else None
            for metric in KD_METRICS:
                stats = (per_t or {}).get(metric)
                if not isinstance(stats, dict):
                    continue
                section = _section(sections, f"kd:{metric}", KD_TITLES[metric], metric)
                section.roles.setdefault(student, roles.get(student, "student"))
                flag = ("kd", metric, student) in flagged
                point = Point(
                    index,
                    _num(stats.get("mean")),
                    _num(stats.get("ci_low")),
                    _num(stats.get("ci_high")),
                    flag,
                )
                section.series.setdefault(student, []).append(point)
    return list(sections.values())


def _figure_svg(section: Section, runs: list[StoredRun], prefix: str) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from harness.report.figures import figure_bytes, inline_svg, model_styles, short, style

    styles = model_styles([{"label": m, "role": r} for m, r in section.roles.items()])
    scale = 100.0 if not section.key.startswith("kd:forward_kl") else 1.0
    with style():
        fig = Figure(figsize=(max(4.5, 0.45 * len(runs) + 2.5), 2.8), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for model, points in section.series.items():
            s = styles[model]
            xs = [p.run for p in points if p.value is not None]
            ys = [scale * p.value for p in points if p.value is not None]
            lo = [
                scale * (p.value - p.ci_low) if p.ci_low is not None else 0.0
                for p in points
                if p.value is not None
            ]
            hi = [
                scale * (p.ci_high - p.value) if p.ci_high is not None else 0.0
                for p in points
                if p.value is not None
            ]
            ax.errorbar(xs, ys, yerr=[lo, hi], color=s.colour, marker=s.marker, linestyle=s.linestyle,
                        capsize=2, markersize=4, linewidth=1, label=short(model))  # fmt: skip
            bad = [(p.run, scale * p.value) for p in points if p.regressed and p.value is not None]
            if bad:
                xs_bad, ys_bad = [x for x, _ in bad], [y for _, y in bad]
                label = f"{short(model)}: regressed"
                ax.scatter(
                    xs_bad, ys_bad, s=110, facecolors="none", edgecolors=REGRESSED, zorder=5, label=label
                )
        ax.set_xticks(range(len(runs)), [r.created[:10] + "\n" + r.run_id[-8:] for r in runs], fontsize=6)
        ax.set_xlim(-0.5, len(runs) - 0.5)
        ax.set_ylabel("%" if scale == 100.0 else "nats / token")
        ax.legend(fontsize=6, loc="best")
        svg = figure_bytes(fig, "svg")
    return inline_svg(svg, prefix, label=section.title)


def _fmt(value: float | None, percent: bool) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}" if percent else f"{value:.3g}"


def _table(section: Section, runs: list[StoredRun]) -> dict[str, Any]:
    percent = section.key != "kd:forward_kl"
    rows = []
    for model, points in section.series.items():
        by_run = {p.run: p for p in points}
        cells = []
        for index in range(len(runs)):
            p = by_run.get(index)
            if p is None:
                cells.append({"text": "", "regressed": False})
                continue
            ci = f" [{_fmt(p.ci_low, percent)}, {_fmt(p.ci_high, percent)}]" if p.ci_low is not None else ""
            cells.append({"text": _fmt(p.value, percent) + ci, "regressed": p.regressed})
        rows.append({"model": model, "role": section.roles.get(model, ""), "cells": cells})
    return {"unit": "%" if percent else "nats/token", "rows": rows}


def build_history(runs: list[StoredRun], store: Path) -> dict[str, Any]:
    sections = collect(runs)
    return {
        "store": str(store),
        "runs": [
            {
                "id": r.run_id,
                "created": r.created,
                "tags": ", ".join(r.tags),
                "verdict": r.verdict or "",
                "baseline": r.baseline or "",
                "students": ", ".join(r.students),
            }
            for r in runs
        ],  # fmt: skip
        "sections": [
            {"title": s.title, "svg": _figure_svg(s, runs, f"h{i}-"), "table": _table(s, runs)}
            for i, s in enumerate(sections)
        ],
    }


def render_history(store: Path | str, *, model: str | None = None) -> str:
    from harness.report.html import environment

    root = Path(store)
    if not (root / "index.sqlite").exists():
        raise HarnessError(f"{root} is not a run store (no index.sqlite): pass --store DIR")
    with RunStore(root) as opened:
        runs = opened.runs(model=model)
    if not runs:
        raise HarnessError(f"the run store {root} has no runs{' with ' + model if model else ''} to chart")
    return environment().get_template("history.html.j2").render(h=build_history(runs, root), csp=CSP)


def write_history(store: Path | str, out: Path | None = None, *, model: str | None = None) -> Path:
    """Write the trend page (default STORE/history.html) and return its path."""
    text = render_history(store, model=model)
    path = Path(out) if out is not None else Path(store) / "history.html"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise HarnessError(
            f"cannot write the history page to {path}: {exc.strerror}; pick another --out"
        ) from exc
    return path
