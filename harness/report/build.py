"""Assemble the report's display model (plain dicts of strings) from a run record.

The sections are built in build_suite (a suite's section) with build_tables (its smaller tables),
build_provenance (provenance and cost), kd (the KD section), explorer, paired and verdict.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from harness.errors import HarnessError
from harness.report.build_provenance import cost_view, provenance_view
from harness.report.build_suite import suite_view
from harness.report.build_tables import subtask_rows
from harness.report.view import (
    METRIC_LABELS,
    as_dict,
    headline_variant,
    model_list,
    natural_key,
    ordered_suites,
    retention_cell,
    score_cell,
)
from harness.store.record import RunRecord

from .explorer import explorer_view
from .kd import build_kd
from .verdict import regressed_cells, verdict_view


def headline_view(suites: dict[str, Any], models: list[dict[str, str]]) -> list[dict[str, Any]]:
    """One headline row per top-level suite: its headline variant's scores and retention."""
    out = []
    for name, summary in ordered_suites(suites):
        if summary.get("group"):
            continue  # a subtask: its group stands for it in the headline
        per_variant = as_dict(summary.get("variants"))
        variant = headline_variant(summary, sorted(per_variant, key=natural_key))
        stats = as_dict(per_variant.get(variant))
        retention = as_dict(summary.get("retention"))
        out.append(
            {
                "suite": name,
                "ability": str(summary.get("ability", "")),
                "variant": variant,
                "metric": str(summary.get("primary_metric", "score")),
                "scores": [score_cell(stats.get(m["label"])) for m in models],
                "retention": [
                    retention_cell(as_dict(retention.get(m["label"])).get(variant))
                    for m in models
                    if m["role"] != "teacher"
                ],
            }
        )
    return out


def _suite_views(
    suites: dict[str, Any],
    models: list[dict[str, str]],
    figures: bool = True,
    anchors: set[str] | None = None,
    first_page: set[str] | None = None,
) -> list[dict[str, Any]]:
    """One section per suite; subtasks of a group (bbh:navigate) become rows of their group's section.

    With `figures`, each section also gets its ICL sweep / CoT vs direct figure as sanitized inline SVG
    (harness.report.figures.html_figures; matplotlib is imported only then)."""
    views = []
    taken: set[str] = set()  # figure stems on the page: their SVG ids must not collide
    for name, summary in ordered_suites(suites):
        if summary.get("group"):
            continue
        view = suite_view(name, summary, models, anchors, first_page)
        members = [(m, as_dict(suites.get(m))) for m in view["members"] if m in suites]
        view["subtask_rows"] = subtask_rows(members, models)
        view["figures"] = _figures(name, summary, members, models, taken) if figures else []
        views.append(view)
    return views


def _figures(
    name: str,
    summary: dict[str, Any],
    members: list[tuple[str, dict[str, Any]]],
    models: list[dict[str, str]],
    taken: set[str],
) -> list[dict[str, Any]]:
    """The suite's figures; `svg` is sanitized SVG markup (Markup: the one thing the template does not
    escape, built only by figures.inline_svg from matplotlib's output)."""
    try:
        from harness.report.figures import html_figures
    except ImportError as exc:  # matplotlib: a dependency, but say what to do if it is missing
        raise HarnessError(
            f"the HTML report draws its figures with matplotlib ({exc}): pip install 'matplotlib>=3.8'"
        ) from exc

    return [
        {**f, "svg": Markup(f["svg"])}  # sanitized by inline_svg's whitelist
        for f in html_figures(name, summary, members, models, taken)
    ]


def _mark_regressed(view: dict[str, Any], cells: set[tuple[str, str, str, str]]) -> None:
    """Flag the score cells the regression gate found regressed (headline and suite tables)."""
    labels = [m["label"] for m in view["models"]]
    for row in view["headline"]:
        for label, cell in zip(labels, row["scores"], strict=True):
            cell["regressed"] = (row["suite"], row["variant"], label, row["metric"]) in cells
    for suite in view["suites"]:
        for row in suite["rows"]:
            for label, cell in zip(labels, row["scores"], strict=True):
                cell["regressed"] = (suite["name"], row["variant"], label, suite["primary_metric"]) in cells


def build_view(
    record: RunRecord, *, max_items_per_variant: int = 2000, figures: bool = True
) -> dict[str, Any]:
    models = model_list(record)
    suites = as_dict(record.metrics.get("suites"))
    teacher = next((m["label"] for m in models if m["role"] == "teacher"), "")
    explorer = explorer_view(record, models, max_items_per_variant)
    verdict = verdict_view(record.run_dir)
    view = {
        "title": f"distill-harness report: {teacher or 'run'} vs "
        + (", ".join(m["label"] for m in models if m["role"] != "teacher") or "no students"),
        "models": models,
        "students": [m for m in models if m["role"] != "teacher"],
        "verdict": verdict,
        "headline": headline_view(suites, models),
        "cost": cost_view(as_dict(record.metrics.get("cost")), models),
        "suites": _suite_views(
            suites, models, figures, explorer["anchors"], {i["anchor"] for i in explorer["first_page"]}
        ),
        "kd": build_kd(
            as_dict(record.metrics.get("kd")),
            models,
            as_dict(record.metrics.get("sequence")),
            as_dict(record.metrics.get("calibration")),
        ),
        "explorer": explorer,
        "provenance": provenance_view(record, models),
        "notes": [str(n) for n in record.metrics.get("notes") or []],
        "labels": METRIC_LABELS,
    }
    _mark_regressed(view, regressed_cells(verdict))
    return view
