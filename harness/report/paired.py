"""A suite's "Paired comparison" display rows: McNemar 2x2, chance-corrected retention, gap closed."""

from __future__ import annotations

from typing import Any

from harness.report.view import as_dict, fmt_count, item_anchor, natural_key, num, retention_cell

CELLS = ("both_right", "teacher_only", "student_only", "neither")
MAX_IDS_IN_TITLE = 30
MAX_LINKS_PER_CELL = 60
CELL_LABELS = {"both_right": "both right", "teacher_only": "teacher only", "student_only": "student only"}


def fmt_p(value: Any) -> str:
    x = num(value)
    if x is None:
        return "undefined"
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


def _ids_title(ids: Any) -> str:
    """The item ids of a 2x2 cell, for a hover title (capped: a cell can hold thousands)."""
    if not isinstance(ids, list) or not ids:
        return ""
    shown = ", ".join(str(i) for i in ids[:MAX_IDS_IN_TITLE])
    more = len(ids) - MAX_IDS_IN_TITLE
    return shown + (f" … and {more} more" if more > 0 else "")


def _link(anchor: str, anchors: set[str] | None, first_page: set[str] | None) -> dict[str, str]:
    """An item on the explorer's first page (HTML) is linked by its id; one further on, in the page's
    data, by data-item (the script pages to it; without scripts the link leads to the explorer)."""
    if anchors is None or (anchor in anchors and (first_page is None or anchor in first_page)):
        return {"href": "#" + anchor, "item": ""}
    return {"href": "", "item": anchor if anchor in anchors else ""}


def _anchor(suite: str, variant: str, item_id: str) -> str:
    """A group's items are "SUBTASK/ID" (aggregate._group_results); the explorer lists them under the
    subtask suite "GROUP:SUBTASK"."""
    sub, sep, rest = item_id.partition("/")
    if sep and ":" not in suite:
        return item_anchor(f"{suite}:{sub}", variant, rest)
    return item_anchor(suite, variant, item_id)


def _cell_links(
    ids: dict[str, Any], suite: str, variant: str, anchors: set[str] | None, first_page: set[str] | None
) -> list[dict[str, Any]]:
    """Links from the discordant and both-right cells to the items in the explorer (capped per cell);
    an item the explorer does not show (beyond its cap) is listed without a link."""
    out = []
    for key, label in CELL_LABELS.items():
        cell = [str(i) for i in ids.get(key) or []]
        if not cell:
            continue
        out.append(
            {
                "label": label,
                "n": len(cell),
                "items": [
                    {"id": i, **_link(_anchor(suite, variant, i), anchors, first_page)}
                    for i in cell[:MAX_LINKS_PER_CELL]
                ],
                "more": max(0, len(cell) - MAX_LINKS_PER_CELL),
            }
        )
    return out


def _mcnemar_view(
    entry: Any,
    suite: str = "",
    variant: str = "",
    anchors: set[str] | None = None,
    first_page: set[str] | None = None,
) -> dict[str, Any]:
    test = as_dict(entry)
    if not test:
        return {
            "present": False,
            "cells": [],
            "p": "",
            "significant": False,
            "note": "not right/wrong scores: no McNemar test",
            "links": [],
        }
    ids = as_dict(test.get("cells"))
    return {
        "present": True,
        "cells": [{"text": fmt_count(test.get(k)), "title": _ids_title(ids.get(k)), "key": k} for k in CELLS],
        "links": _cell_links(ids, suite, variant, anchors, first_page) if suite else [],
        "p": fmt_p(test.get("p_value"))
        + (f" (Holm {fmt_p(test.get('p_holm'))})" if num(test.get("p_holm")) is not None else ""),
        # judged after Holm's correction across every test in the run, where the record has it
        "significant": (num(test.get("p_holm", test.get("p_value"))) or 1.0) < 0.05,
        "note": "",
    }


def _gap_view(entry: Any, role: str, has_base: bool) -> dict[str, Any]:
    if entry is None:
        reason = (
            "no base model in this run" if not has_base else "only for students" if role != "student" else ""
        )
        return {"text": "—", "ci": "", "cls": "", "note": reason or "not computed"}
    return retention_cell(entry)


def paired_rows(
    summary: dict[str, Any],
    models: list[dict[str, str]],
    suite: str = "",
    anchors: set[str] | None = None,
    first_page: set[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per (variant, non-teacher model) with paired results in the record; [] when there are none."""
    paired = as_dict(summary.get("paired"))
    has_base = any(m["role"] == "base" for m in models)
    labels = [m for m in models if m["role"] != "teacher" and m["label"] in paired]
    variants = sorted({v for m in labels for v in as_dict(paired[m["label"]])}, key=natural_key)
    rows = []
    for variant in variants:
        for model in labels:
            entry = as_dict(as_dict(paired[model["label"]]).get(variant))
            if not entry:
                continue
            rows.append(
                {
                    "variant": variant,
                    "model": model["label"],
                    "role": model["role"],
                    "mcnemar": _mcnemar_view(entry.get("mcnemar"), suite, variant, anchors, first_page),
                    "chance_retention": retention_cell(entry.get("chance_retention")),
                    "gap_closed": _gap_view(entry.get("gap_closed"), model["role"], has_base),
                }
            )
    return rows
