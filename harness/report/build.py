"""Assemble the report's display model (plain dicts of strings) from a run record."""

from __future__ import annotations

import json
from typing import Any

from markupsafe import Markup

from harness.errors import HarnessError
from harness.report.view import (
    METRIC_LABELS,
    SCORE_KEYS,
    as_dict,
    fmt_ci,
    fmt_count,
    fmt_num,
    fmt_pct,
    gain_cell,
    gain_retention,
    headline_variant,
    model_list,
    natural_key,
    num,
    ordered_suites,
    retention_cell,
    score_cell,
)
from harness.store.record import RunRecord

from .explorer import explorer_view
from .kd import build_kd
from .paired import paired_rows
from .verdict import regressed_cells, verdict_view

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


def suite_view(
    name: str,
    summary: dict[str, Any],
    models: list[dict[str, str]],
    anchors: set[str] | None = None,
    first_page: set[str] | None = None,
) -> dict[str, Any]:
    students = [m["label"] for m in models if m["role"] != "teacher"]
    teacher = next((m["label"] for m in models if m["role"] == "teacher"), None)
    per_variant = as_dict(summary.get("variants"))
    variants = sorted(per_variant, key=natural_key)
    baseline = str(summary.get("baseline_variant") or "")
    retention = as_dict(summary.get("retention"))
    rows = []
    for variant in variants:
        stats = as_dict(per_variant[variant])
        skip = SCORE_KEYS | {str(summary.get("primary_metric")), "lm_eval"}  # the primary is the score
        extra = sorted(
            {
                k
                for s in stats.values()
                for k, x in as_dict(s).items()
                if k not in skip and not isinstance(x, dict)
            }
        )
        with_ci = sorted(
            {
                k
                for s in stats.values()
                for k, x in as_dict(s).items()
                if k not in skip and isinstance(x, dict) and "value" in x
            }
        )
        lm_eval = sorted({k for s in stats.values() for k in as_dict(as_dict(s).get("lm_eval"))})
        rows.append(
            {
                "variant": variant,
                "is_baseline": variant == baseline,
                "scores": [score_cell(stats.get(m["label"])) for m in models],
                "retention": [retention_cell(as_dict(retention.get(s)).get(variant)) for s in students],
                "extra": [
                    {
                        "metric": key,
                        "values": [fmt_num(as_dict(stats.get(m["label"])).get(key)) for m in models],
                    }
                    for key in extra
                ]
                + [
                    {
                        "metric": f"{key} (lm-eval's aggregation)",
                        "values": [
                            fmt_num(as_dict(as_dict(stats.get(m["label"])).get("lm_eval")).get(key))
                            for m in models
                        ],
                    }
                    for key in lm_eval
                ]
                + [
                    {
                        "metric": f"{key} (CI over prompts)",
                        "values": [
                            _estimate_text(as_dict(as_dict(stats.get(m["label"])).get(key))) for m in models
                        ],
                    }
                    for key in with_ci
                ],
            }
        )
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
        "draw_rows": _draw_rows(as_dict(summary.get("draws")), models),
        "pairwise_rows": _pairwise_rows(as_dict(summary.get("pairwise"))),
        "ranking": _ranking(as_dict(summary.get("ranking"))),
        "warnings": [str(w) for w in summary.get("warnings") or []],
        "suite_notes": [str(n) for n in summary.get("notes") or []],
        "instruction_rows": _instruction_rows(as_dict(summary.get("instruction_types")), models),
        "subtask_rows": [],
        "members": [str(x) for x in summary.get("members") or []],
    }


def _estimate_text(e: dict[str, Any]) -> str:
    return f"{fmt_pct(e.get('value'))} {fmt_ci(e.get('ci_low'), e.get('ci_high'))}".strip() if e else "n/a"


def _pairwise_rows(pairwise: dict[str, Any]) -> list[dict[str, Any]]:
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


def _ranking(ranking: dict[str, Any]) -> dict[str, Any]:
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


def _draw_rows(draws: dict[str, Any], models: list[dict[str, str]]) -> list[dict[str, Any]]:
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


def _instruction_rows(types: dict[str, Any], models: list[dict[str, str]]) -> list[dict[str, Any]]:
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


def _subtask_rows(
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


def headline_view(suites: dict[str, Any], models: list[dict[str, str]]) -> list[dict[str, Any]]:
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


def _kv(value: Any) -> list[dict[str, str]]:
    """A mapping as key/value strings; nested values as compact JSON."""
    if not isinstance(value, dict):
        return [] if value is None else [{"key": "value", "value": _text(value)}]
    return [{"key": str(k), "value": _text(v)} for k, v in value.items()]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _timings(timings: dict[str, Any]) -> str:
    """{"load_seconds": 2.5, "suites": {"seconds": 3, "computed": 12, "from_cache": 0}}
    -> "load 2.5 s, suites 3.0 s (12 computed, 0 from cache)"."""
    parts = []
    for key, value in timings.items():
        name = key.removesuffix("_seconds").removesuffix("_s").replace("_", " ")
        detail = as_dict(value)
        x = num(detail.get("seconds") if detail else value)
        text = f"{name} {x:.1f} s" if x is not None else f"{name} {_text(value)}"
        counts = [f"{detail[k]} {k.replace('_', ' ')}" for k in ("computed", "from_cache") if k in detail]
        parts.append(text + (f" ({', '.join(counts)})" if counts else ""))
    return ", ".join(parts)


def _model_rows(entries: dict[str, Any], models: list[dict[str, str]]) -> list[dict[str, str]]:
    """One provenance row per model; `spec` may be "backend:path" or a dict."""
    rows = []
    for model in models:
        entry = as_dict(entries.get(model["label"]))
        info, spec = as_dict(entry.get("info")), entry.get("spec")
        spec_d = as_dict(spec)
        rows.append(
            {
                "label": model["label"],
                "role": model["role"],
                "backend": str(info.get("backend") or spec_d.get("backend") or "?"),
                "path": str(
                    spec_d.get("path") or info.get("model_id") or (spec if isinstance(spec, str) else "?")
                ),
                "fingerprint": str(info.get("fingerprint", "?")),
                "tokenizer_id": str(info.get("tokenizer_id", "?")),
                "parameters": fmt_count(info.get("n_parameters")),
                "dtype": str(info.get("dtype", "?")),
                "vocab_size": fmt_count(info.get("vocab_size")),
                "max_context": str(info.get("max_context", "?")),
                "timings": _timings(as_dict(entry.get("timings"))),
            }
        )
    return rows


def provenance_view(record: RunRecord, models: list[dict[str, str]]) -> dict[str, Any]:
    manifest = record.manifest
    known = {
        "models",
        "versions",
        "hardware",
        "config",
        "seeds",
        "logprob_semantics",
        "schema_version",
        "harness_version",
        "created",
        "wall_seconds",
    }
    other = {k: v for k, v in manifest.items() if k not in known}
    return {
        "models": _model_rows(as_dict(manifest.get("models")), models),
        "run": _kv(
            {
                "run folder": str(record.run_dir),
                "created": manifest.get("created", "?"),
                "harness version": manifest.get("harness_version", "?"),
                "wall time": _timings({"": manifest.get("wall_seconds", "?")}).strip(),
                "schema version": record.schema_version,
            }
        ),
        "versions": _kv(manifest.get("versions")),
        "hardware": _kv(manifest.get("hardware")),
        "seeds": _kv(manifest.get("seeds")),
        "semantics": _kv(manifest.get("logprob_semantics")),
        "config": json.dumps(manifest.get("config", {}), indent=2, sort_keys=True, default=str),
        "other": _kv(other),
    }


def cost_view(cost: dict[str, Any], models: list[dict[str, str]]) -> list[dict[str, str]]:
    """One row per model: size, memory, measured speed, and (students) retention per unit of cost."""
    rows = []
    for m in models:
        c = as_dict(cost.get(m["label"]))
        if not c:
            continue
        tps = num(c.get("tokens_per_second"))
        mem = num(c.get("weights_bytes"))
        rss = num(c.get("load_rss_delta_bytes"))
        rows.append(
            {
                "label": m["label"],
                "role": m["role"],
                "parameters": fmt_count(c.get("parameters")),
                "weights": f"{mem / 2**20:,.0f} MiB" if mem is not None else "?",
                "rss": f"{rss / 2**20:,.0f} MiB" if rss is not None else "?",
                "tokens_per_second": f"{tps:,.1f}" if tps is not None else "not timed",
                "throughput_note": str(c.get("throughput_note") or ""),
                "seconds_per_request": fmt_num(c.get("seconds_per_request")),
                "parameter_fraction": fmt_num(c.get("parameter_fraction"))
                if "parameter_fraction" in c
                else "",
                "speedup": fmt_num(c.get("speedup")) if "speedup" in c else "",
                "mean_retention": fmt_num(c.get("mean_retention")) if "mean_retention" in c else "",
                "per_cost": fmt_num(c.get("retention_per_parameter_fraction"))
                if "retention_per_parameter_fraction" in c
                else "",
            }
        )
    return rows


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
        view["subtask_rows"] = _subtask_rows(members, models)
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
