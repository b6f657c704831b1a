"""The smaller tables of a suite's section: student-vs-student comparisons, the ranking, ICL draw
sensitivity, IFEval per instruction type, and a group's subtasks."""

from __future__ import annotations

from typing import Any

from harness.report.view import (
    as_dict,
    fmt_ci,
    fmt_count,
    fmt_num,
    fmt_pct,
    gain_cell,
    natural_key,
    num,
    retention_cell,
    score_cell,
)


def pairwise_rows(pairwise: dict[str, Any]) -> list[dict[str, Any]]:
    """Student vs student (and vs the base) on the same items: difference with CI, McNemar with Holm."""
    rows = []
    for pair, per_variant in pairwise.items():
        for variant in sorted(as_dict(per_variant), key=natural_key):
            entry = as_dict(as_dict(per_variant)[variant])
            diff = as_dict(entry.get("diff"))
            test = as_dict(entry.get("mcnemar"))
            p_holm = num(test.get("p_holm"))
            rows.append(
                {
                    "pair": pair,
                    "variant": variant,
                    "diff": gain_cell(diff),
                    "cells": [fmt_count(test.get(k)) for k in ("both_right", "a_only", "b_only", "neither")]
                    if test
                    else [],
                    "p": (
                        fmt_num(test.get("p_value"))
                        + (f" (Holm {fmt_num(p_holm)})" if p_holm is not None else "")
                    )
                    if test
                    else "not right/wrong scores",
                    "significant": p_holm is not None and p_holm < 0.05,
                }
            )
    return rows


def ranking_view(ranking: dict[str, Any]) -> dict[str, Any]:
    """The recorded ranking of models on one variant and metric; {} when there is none."""
    models = [as_dict(m) for m in ranking.get("models") or []]
    if not models:
        return {}
    return {
        "variant": str(ranking.get("variant", "")),
        "metric": str(ranking.get("metric", "")),
        "entries": [
            {
                "rank": str(m.get("rank", "?")),
                "model": str(m.get("model", "?")),
                "score": fmt_pct(m.get("score")),
                "ci": fmt_ci(m.get("ci_low"), m.get("ci_high")),
            }
            for m in models
        ],
    }


def draw_rows(draws: dict[str, Any], models: list[dict[str, str]]) -> list[dict[str, Any]]:
    """ICL sensitivity: per k, each model's mean score over the seeded draws, its spread and range."""
    rows = []
    for variant in sorted(draws, key=natural_key):
        cells = []
        for m in models:
            d = as_dict(as_dict(draws[variant]).get(m["label"]))
            if not d:
                cells.append({"text": "n/a", "detail": ""})
                continue
            scores = ", ".join(fmt_pct(x) for x in d.get("scores") or [])
            cells.append(
                {
                    "text": f"{fmt_pct(d.get('mean'))} ± {100 * (num(d.get('std')) or 0.0):.1f}",
                    "detail": f"range {fmt_pct(d.get('min'))}–{fmt_pct(d.get('max'))}; draws: {scores}",
                }
            )
        n = len(as_dict(next(iter(as_dict(draws[variant]).values()), {})).get("scores") or [])
        rows.append({"variant": variant, "n_draws": n, "cells": cells})
    return rows


def instruction_rows(types: dict[str, Any], models: list[dict[str, str]]) -> list[dict[str, Any]]:
    """IFEval per instruction type: strict / loose accuracy per model, over that type's instructions."""
    rows = []
    for kind in sorted(types):
        per_model = as_dict(types[kind])
        n = next((as_dict(v).get("n") for v in per_model.values()), None)
        rows.append(
            {
                "type": kind,
                "n": fmt_count(n),
                "cells": [
                    {
                        "strict": fmt_pct(as_dict(per_model.get(m["label"])).get("strict")),
                        "loose": fmt_pct(as_dict(per_model.get(m["label"])).get("loose")),
                    }
                    for m in models
                ],
            }
        )
    return rows


def subtask_rows(
    members: list[tuple[str, dict[str, Any]]], models: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """A group's subtasks in one table: each variant's score per model, and the gain's retention."""
    rows = []
    for name, summary in members:
        per_variant = as_dict(summary.get("variants"))
        variants = sorted(per_variant, key=natural_key)
        baseline = str(summary.get("baseline_variant") or "")
        gain_variant = next((v for v in variants if v != baseline), "")
        recorded = as_dict(summary.get("gain_retention"))
        rows.append(
            {
                "name": name.split(":", 1)[-1],
                "n": fmt_count(summary.get("n_items")),
                "chance": fmt_pct(summary.get("chance")),
                "variants": [
                    {
                        "variant": v,
                        "scores": [score_cell(as_dict(per_variant[v]).get(m["label"])) for m in models],
                    }
                    for v in variants
                ],
                "gains": [
                    gain_cell(as_dict(as_dict(summary.get("gain")).get(m["label"])).get(gain_variant))
                    for m in models
                ],
                "gain_retention": [
                    retention_cell(as_dict(recorded.get(m["label"])).get(gain_variant))
                    for m in models
                    if m["role"] != "teacher"
                ],
            }
        )
    return rows
