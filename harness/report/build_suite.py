"""One suite's section of the report's display model: per-variant scores and retention, secondary
metrics, gains over the baseline variant and their retention, and the section's other tables."""

from __future__ import annotations

from typing import Any

from harness.report.build_tables import draw_rows, instruction_rows, pairwise_rows, ranking_view
from harness.report.view import (
    SCORE_KEYS,
    as_dict,
    fmt_ci,
    fmt_count,
    fmt_num,
    fmt_pct,
    gain_cell,
    gain_retention,
    natural_key,
    num,
    retention_cell,
    score_cell,
)

from .paired import paired_rows

NEAR_CHANCE_MARGIN = 0.05


def _gain_rows(
    summary: dict[str, Any], variants: list[str], models: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """Gain over the baseline variant per model, and gain retention per student.

    Gains may be bare numbers (the schema's first form) or estimate dicts with CIs; gain retention
    comes from the record's "gain_retention" when present, else a point estimate is derived here.
    """
    gains = as_dict(summary.get("gain"))
    recorded = summary.get("gain_retention")
    teacher = next((m["label"] for m in models if m["role"] == "teacher"), None)
    baseline = str(summary.get("baseline_variant") or "")
    rows = []
    for variant in variants:
        t_gain = as_dict(gains.get(teacher)).get(variant) if teacher else None
        retention = [
            retention_cell(as_dict(as_dict(recorded).get(m["label"])).get(variant))
            if isinstance(recorded, dict)
            else gain_retention(t_gain, as_dict(gains.get(m["label"])).get(variant))
            for m in models
            if m["role"] != "teacher"
        ]
        rows.append(
            {
                "variant": variant,
                "label": f"{variant} − {baseline}" if baseline else variant,
                "gains": [gain_cell(as_dict(gains.get(m["label"])).get(variant)) for m in models],
                "retention": retention,
            }
        )
    return rows


def _near_chance_warning(per_variant: dict[str, Any], teacher: str | None, chance: float | None) -> str:
    """Retention of a teacher at chance level is noise: say so."""
    if not teacher or chance is None:
        return ""
    scores = [num(as_dict(as_dict(stats).get(teacher)).get("score")) for stats in per_variant.values()]
    best = max((s for s in scores if s is not None), default=None)
    if best is None or best > chance + NEAR_CHANCE_MARGIN:
        return ""
    return f"The teacher scores near chance ({fmt_pct(chance)}) on every variant: retention is noise."


def _estimate_text(e: dict[str, Any]) -> str:
    return f"{fmt_pct(e.get('value'))} {fmt_ci(e.get('ci_low'), e.get('ci_high'))}".strip() if e else "n/a"


def _extra_rows(stats: dict[str, Any], primary: str, models: list[dict[str, str]]) -> list[dict[str, Any]]:
    """A variant's secondary metrics per model: plain values, lm-eval's own aggregation, and metrics
    recorded with a CI over prompts (the primary metric is the score and is left out)."""
    skip = SCORE_KEYS | {primary, "lm_eval"}
    per_model = [as_dict(stats.get(m["label"])) for m in models]
    found = [(k, x) for s in stats.values() for k, x in as_dict(s).items() if k not in skip]
    extra = sorted({k for k, x in found if not isinstance(x, dict)})
    with_ci = sorted({k for k, x in found if isinstance(x, dict) and "value" in x})
    lm_eval = sorted({k for s in stats.values() for k in as_dict(as_dict(s).get("lm_eval"))})
    return (
        [{"metric": key, "values": [fmt_num(s.get(key)) for s in per_model]} for key in extra]
        + [
            {
                "metric": f"{key} (lm-eval's aggregation)",
                "values": [fmt_num(as_dict(s.get("lm_eval")).get(key)) for s in per_model],
            }
            for key in lm_eval
        ]
        + [
            {
                "metric": f"{key} (CI over prompts)",
                "values": [_estimate_text(as_dict(s.get(key))) for s in per_model],
            }
            for key in with_ci
        ]
    )


def _variant_rows(
    summary: dict[str, Any], variants: list[str], models: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """One row per variant: each model's score, each student's retention, and secondary metrics."""
    students = [m["label"] for m in models if m["role"] != "teacher"]
    per_variant = as_dict(summary.get("variants"))
    baseline = str(summary.get("baseline_variant") or "")
    retention = as_dict(summary.get("retention"))
    primary = str(summary.get("primary_metric"))
    rows = []
    for variant in variants:
        stats = as_dict(per_variant[variant])
        rows.append(
            {
                "variant": variant,
                "is_baseline": variant == baseline,
                "scores": [score_cell(stats.get(m["label"])) for m in models],
                "retention": [retention_cell(as_dict(retention.get(s)).get(variant)) for s in students],
                "extra": _extra_rows(stats, primary, models),
            }
        )
    return rows


def suite_view(
    name: str,
    summary: dict[str, Any],
    models: list[dict[str, str]],
    anchors: set[str] | None = None,
    first_page: set[str] | None = None,
) -> dict[str, Any]:
    """A suite's section (subtask rows and figures are added by the caller)."""
    teacher = next((m["label"] for m in models if m["role"] == "teacher"), None)
    per_variant = as_dict(summary.get("variants"))
    variants = sorted(per_variant, key=natural_key)
    baseline = str(summary.get("baseline_variant") or "")
    rows = _variant_rows(summary, variants, models)
    chance = num(summary.get("chance"))
    return {
        "name": name,
        "anchor": "suite-" + "".join(c if c.isalnum() else "-" for c in name),
        "ability": str(summary.get("ability", "")),
        "description": str(summary.get("description", "")),
        "primary_metric": str(summary.get("primary_metric", "score")),
        "chance": fmt_pct(chance) if chance is not None else "n/a",
        "baseline": baseline,
        "n_items": fmt_count(summary.get("n_items")),
        "chat_template": {True: "on", False: "off"}.get(bool(summary.get("chat_template")))
        if "chat_template" in summary
        else "not recorded",
        "rows": rows,
        "has_extra": any(r["extra"] for r in rows),
        "gain_rows": _gain_rows(summary, [v for v in variants if v != baseline], models),
        "gain_has_ci": "gain_retention" in summary,
        "warning": _near_chance_warning(per_variant, teacher, chance),
        "paired_rows": paired_rows(summary, models, name, anchors, first_page),
        "draw_rows": draw_rows(as_dict(summary.get("draws")), models),
        "pairwise_rows": pairwise_rows(as_dict(summary.get("pairwise"))),
        "ranking": ranking_view(as_dict(summary.get("ranking"))),
        "warnings": [str(w) for w in summary.get("warnings") or []],
        "suite_notes": [str(n) for n in summary.get("notes") or []],
        "instruction_rows": instruction_rows(as_dict(summary.get("instruction_types")), models),
        "subtask_rows": [],
        "members": [str(x) for x in summary.get("members") or []],
    }
