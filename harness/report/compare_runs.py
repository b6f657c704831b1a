"""`harness report RUN_A RUN_B`: two runs side by side, e.g. before (A) and after (B) a training change.

Per suite, variant and model: the score in each run and the difference B − A. Where both runs scored
the same items (matched by suite, variant, model and item id in items.jsonl) the difference is paired:
the mean difference over the shared items with a paired-bootstrap 95% CI (harness.stats); otherwise it
is the difference of the recorded scores, without a CI, and the row says so. Models are matched by
label; when each run has exactly one student left unmatched, those two are paired (a renamed
checkpoint) and the page says so. Also each student's KD headline (forward KL mean and top-1 agreement
per temperature) in each run, retention on the headline variant, and what changed between the runs
(model fingerprints, config values). Written as one HTML file (the report's CSP, style and sortable
tables) and as Markdown.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from harness import stats
from harness.errors import HarnessError
from harness.report.view import (
    FORWARD_KL_KEYS,
    TOP1_KEYS,
    as_dict,
    first_key,
    fmt_ci,
    fmt_num,
    fmt_pct,
    headline_variant,
    model_list,
    natural_key,
    num,
    ordered_suites,
    retention_cell,
)
from harness.store.record import RunRecord, read_record

FORMATS = ("html", "md")
N_BOOT = 1000
Scores = dict[tuple[str, str, str], dict[tuple[str, str], float]]


def match_models(a: RunRecord, b: RunRecord) -> tuple[list[dict[str, str]], str]:
    """[{"a", "b", "label", "role"}] in B's order (teacher, base, students), then A-only models; a note
    when two differently named students were paired."""
    ma, mb = model_list(a), model_list(b)
    la, lb = {m["label"]: m for m in ma}, {m["label"]: m for m in mb}
    only_a = [m for m in ma if m["label"] not in lb and m["role"] == "student"]
    only_b = [m for m in mb if m["label"] not in la and m["role"] == "student"]
    renamed = {only_b[0]["label"]: only_a[0]["label"]} if len(only_a) == len(only_b) == 1 else {}
    pairs = []
    for m in mb:
        label_a = m["label"] if m["label"] in la else renamed.get(m["label"], "")
        shown = m["label"] if label_a in ("", m["label"]) else f"{label_a} → {m['label']}"
        pairs.append({"a": label_a, "b": m["label"], "label": shown, "role": m["role"]})
    taken = {p["a"] for p in pairs}
    pairs += [
        {"a": m["label"], "b": "", "label": m["label"], "role": m["role"]}
        for m in ma
        if m["label"] not in taken
    ]
    note = (
        f"A's {next(iter(renamed.values()))} and B's {next(iter(renamed))} are each run's only student: "
        "compared as one model."
        if renamed
        else ""
    )
    return pairs, note


def _top_suites(record: RunRecord) -> list[str]:
    return [name for name, s in ordered_suites(record.metrics.get("suites")) if not s.get("group")]


def item_scores(record: RunRecord, suites: list[str]) -> Scores:
    """(suite, variant, model) -> {(item's suite, item id): score}; a group's subtask items (bbh:nav)
    count for the group (bbh) too."""
    out: Scores = {}
    top = set(suites)
    for row in record.items:
        score = num(row.get("score"))
        if score is None:
            continue
        suite = str(row.get("suite", ""))
        key = (str(row.get("suite", "")), str(row.get("item_id", "")))
        for owner in {suite, suite.split(":", 1)[0]} & top:
            out.setdefault((owner, str(row.get("variant", "")), str(row.get("model", ""))), {})[key] = score
    return out


def _diff_cell(
    a: dict[tuple[str, str], float], b: dict[tuple[str, str], float], recorded: Any
) -> dict[str, Any]:
    shared = sorted(set(a) & set(b))
    if not shared:
        value = num(recorded)
        return {
            "text": "undefined" if value is None else f"{100 * value:+.1f}",
            "ci": "",
            "cls": "undef" if value is None else "",
            "n": "no shared items" if a or b else "no items in the record",
            "note": "no shared items: recorded scores" if value is not None else "",
            "value": value,
        }
    est = stats.paired_bootstrap_diff(
        np.array([b[k] for k in shared]), np.array([a[k] for k in shared]), n_boot=N_BOOT, seed=0
    )
    lo, hi = est.ci_low, est.ci_high
    cls = "" if lo is None or hi is None else "good" if lo > 0 else "bad" if hi < 0 else ""
    return {
        "text": "undefined" if est.value is None else f"{100 * est.value:+.1f}",
        "ci": "" if lo is None or hi is None else f"[{100 * lo:+.1f}, {100 * hi:+.1f}]",
        "cls": cls,
        "n": f"{len(shared)}" + ("" if len(shared) == len(a) == len(b) else f" of {len(a)} / {len(b)}"),
        "note": ""
        if len(shared) == len(a) == len(b)
        else f"{len(shared)} shared items of {len(a)} / {len(b)}",
        "value": est.value,
    }


def _score(stats_: Any) -> dict[str, str]:
    s = as_dict(stats_)
    return {"text": fmt_pct(s.get("score")) if s else "—", "ci": fmt_ci(s.get("ci_low"), s.get("ci_high"))}


def score_rows(a: RunRecord, b: RunRecord, pairs: list[dict[str, str]]) -> list[dict[str, Any]]:
    suites = list(dict.fromkeys(_top_suites(b) + _top_suites(a)))
    sa, sb = item_scores(a, suites), item_scores(b, suites)
    ma, mb = as_dict(a.metrics.get("suites")), as_dict(b.metrics.get("suites"))
    rows = []
    for suite in suites:
        va, vb = (
            as_dict(as_dict(ma.get(suite)).get("variants")),
            as_dict(as_dict(mb.get(suite)).get("variants")),
        )
        for variant in sorted(set(va) | set(vb), key=natural_key):
            for p in pairs:
                stats_a = as_dict(va.get(variant)).get(p["a"]) if p["a"] else None
                stats_b = as_dict(vb.get(variant)).get(p["b"]) if p["b"] else None
                if stats_a is None and stats_b is None:
                    continue
                score_a, score_b = num(as_dict(stats_a).get("score")), num(as_dict(stats_b).get("score"))
                recorded = None if score_a is None or score_b is None else score_b - score_a
                diff = _diff_cell(
                    sa.get((suite, variant, p["a"]), {}), sb.get((suite, variant, p["b"]), {}), recorded
                )
                rows.append(
                    {
                        "suite": suite,
                        "variant": variant,
                        "model": p["label"],
                        "role": p["role"],
                        "a": _score(stats_a),
                        "b": _score(stats_b),
                        "diff": diff,
                    }
                )
    return rows


def _kd_stat(kd: dict[str, Any], label: str, t: str, keys: tuple[str, ...]) -> float | None:
    per_t = as_dict(as_dict(as_dict(kd.get(label)).get("temperatures")).get(t))
    key = first_key(per_t, keys)
    return num(as_dict(per_t.get(key)).get("mean")) if key else None


def kd_rows(a: RunRecord, b: RunRecord, pairs: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Per student and temperature: forward KL mean and top-1 agreement in A and B."""
    ka, kb = as_dict(a.metrics.get("kd")), as_dict(b.metrics.get("kd"))
    rows = []
    for p in pairs:
        if p["role"] == "teacher":
            continue
        temps_a = as_dict(as_dict(ka.get(p["a"])).get("temperatures"))
        temps_b = as_dict(as_dict(kb.get(p["b"])).get("temperatures"))
        for t in sorted(set(temps_a) | set(temps_b), key=natural_key):
            fa, fb = _kd_stat(ka, p["a"], t, FORWARD_KL_KEYS), _kd_stat(kb, p["b"], t, FORWARD_KL_KEYS)
            ta, tb = _kd_stat(ka, p["a"], t, TOP1_KEYS), _kd_stat(kb, p["b"], t, TOP1_KEYS)
            lower = [
                "lower bound" in str(as_dict(k.get(lab)).get("semantics", ""))
                for k, lab in ((ka, p["a"]), (kb, p["b"]))
            ]
            rows.append(
                {
                    "model": p["label"],
                    "t": t,
                    "fkl_a": ("≥ " if lower[0] and fa is not None else "") + fmt_num(fa),
                    "fkl_b": ("≥ " if lower[1] and fb is not None else "") + fmt_num(fb),
                    "fkl_diff": "undefined" if fa is None or fb is None else f"{fb - fa:+.3f}",
                    "fkl_cls": "" if fa is None or fb is None or fa == fb else "good" if fb < fa else "bad",
                    "top1_a": fmt_pct(ta),
                    "top1_b": fmt_pct(tb),
                    "bounds_differ": lower[0] != lower[1],
                }
            )
    return rows


def retention_rows(a: RunRecord, b: RunRecord, pairs: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Retention on each suite's headline variant (B's choice), per student, in A and B."""
    ma, mb = as_dict(a.metrics.get("suites")), as_dict(b.metrics.get("suites"))
    rows = []
    for suite in dict.fromkeys(_top_suites(b) + _top_suites(a)):
        sa, sb = as_dict(ma.get(suite)), as_dict(mb.get(suite))
        variants = sorted(set(as_dict(sb.get("variants")) or as_dict(sa.get("variants"))), key=natural_key)
        variant = headline_variant(sb or sa, variants)
        for p in pairs:
            if p["role"] == "teacher":
                continue
            ra = as_dict(as_dict(sa.get("retention")).get(p["a"])).get(variant) if p["a"] else None
            rb = as_dict(as_dict(sb.get("retention")).get(p["b"])).get(variant) if p["b"] else None
            if ra is None and rb is None:
                continue
            rows.append(
                {
                    "suite": suite,
                    "variant": variant,
                    "model": p["label"],
                    "a": retention_cell(ra),
                    "b": retention_cell(rb),
                }
            )
    return rows


def _flat(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: str(value)}


def changes(a: RunRecord, b: RunRecord, pairs: list[dict[str, str]]) -> dict[str, Any]:
    """Model fingerprints in each run, and the config values that differ."""
    ia, ib = as_dict(a.manifest.get("models")), as_dict(b.manifest.get("models"))

    def fp(models: dict[str, Any], label: str) -> str:
        return str(as_dict(as_dict(models.get(label)).get("info")).get("fingerprint", "?")) if label else "—"

    models = [
        {
            "label": p["label"],
            "role": p["role"],
            "a": fp(ia, p["a"]),
            "b": fp(ib, p["b"]),
            "changed": fp(ia, p["a"]) != fp(ib, p["b"]),
        }
        for p in pairs
    ]
    ca, cb = _flat(a.manifest.get("config", {})), _flat(b.manifest.get("config", {}))
    config = [
        {"key": k, "a": ca.get(k, "—"), "b": cb.get(k, "—")}
        for k in sorted(set(ca) | set(cb))
        if ca.get(k) != cb.get(k)
    ]
    return {"models": models, "config": config}


def _run_info(record: RunRecord, name: str) -> dict[str, str]:
    m = record.manifest
    return {
        "name": name,
        "dir": str(record.run_dir),
        "created": str(m.get("created", "?")),
        "version": str(m.get("harness_version", "?")),
        "models": ", ".join(x["label"] for x in model_list(record)) or "none",
    }


def suite_tables(rows: list[dict[str, Any]], pairs: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The rows pivoted for the page: one table per suite, a row per variant, a column per model."""
    tables: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for r in rows:
        tables.setdefault(r["suite"], {})[(r["variant"], r["model"])] = r
    out = []
    for suite, cells in tables.items():
        models = [p for p in pairs if any(m == p["label"] for _, m in cells)]
        variants = sorted({v for v, _ in cells}, key=natural_key)
        out.append(
            {
                "name": suite,
                "anchor": "suite-" + re.sub(r"[^A-Za-z0-9]", "-", suite),
                "models": models,
                "rows": [
                    {"variant": v, "cells": [cells.get((v, m["label"])) for m in models]} for v in variants
                ],
            }
        )
    return out


def comparison_view(a: RunRecord, b: RunRecord) -> dict[str, Any]:
    pairs, note = match_models(a, b)
    rows = score_rows(a, b, pairs)
    return {
        "suites": suite_tables(rows, pairs),
        "title": f"distill-harness: {a.run_dir.name} → {b.run_dir.name}",
        "a": _run_info(a, "A"),
        "b": _run_info(b, "B"),
        "note": note,
        "rows": rows,
        "n_better": sum(r["diff"]["cls"] == "good" for r in rows),
        "n_worse": sum(r["diff"]["cls"] == "bad" for r in rows),
        "kd": kd_rows(a, b, pairs),
        "retention": retention_rows(a, b, pairs),
        "changes": changes(a, b, pairs),
    }


def render_comparison_html(view: dict[str, Any]) -> str:
    from harness.report.html import render_page

    return render_page("compare_runs.html.j2", v=view)


def render_comparison_markdown(view: dict[str, Any]) -> str:
    from harness.report.markdown import escape_md

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    def with_ci(text: str, ci: str) -> str:
        return f"{text} {ci}".strip()

    a, b = view["a"], view["b"]
    lines = [
        f"# distill-harness: {escape_md(a['dir'])} (A) → {escape_md(b['dir'])} (B)",
        "",
        f"A created {escape_md(a['created'])}, B created {escape_md(b['created'])}. "
        f"Scores in % with 95% CIs; B − A in points, paired over the shared items (bootstrap 95% CI). "
        f"Better (▲, CI above 0): {view['n_better']} rows; worse (▼, CI below 0): {view['n_worse']}.",
        "",
    ]
    if view["note"]:
        lines += [escape_md(view["note"]), ""]
    lines += [
        row(["Suite", "Variant", "Model", "A", "B", "B − A", "shared items"]),
        row([":--"] * 3 + ["--:"] * 4),
    ]
    for r in view["rows"]:
        d = r["diff"]
        lines.append(
            row(
                [
                    escape_md(r["suite"]),
                    escape_md(r["variant"]),
                    escape_md(r["model"]),
                    with_ci(r["a"]["text"], r["a"]["ci"]),
                    with_ci(r["b"]["text"], r["b"]["ci"]),
                    with_ci(d["text"], d["ci"]) + {"good": " ▲", "bad": " ▼"}.get(d["cls"], ""),
                    escape_md(d["n"]),
                ]
            )
        )
    if view["kd"]:
        lines += [
            "",
            "## KD check (token level)",
            "",
            row(["Student", "T", "forward KL A", "forward KL B", "B − A", "top-1 A", "top-1 B"]),
            row([":--", "--:"] + ["--:"] * 5),
        ]
        for k in view["kd"]:
            lines.append(
                row(
                    [
                        escape_md(k["model"]),
                        escape_md(k["t"]),
                        k["fkl_a"],
                        k["fkl_b"],
                        k["fkl_diff"],
                        k["top1_a"],
                        k["top1_b"],
                    ]
                )
            )
    return "\n".join(lines) + "\n"


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def write_comparison(
    run_a: Path,
    run_b: Path,
    formats: set[str] | frozenset[str] = frozenset({"html"}),
    out: Path | None = None,
) -> dict[str, Path]:
    """Write the comparison of RUN_A (before) and RUN_B (after); html -> `out` or RUN_B/vs-<A>.html,
    md -> next to it with the .md suffix. Returns {format: path}."""
    bad = sorted(set(formats) - set(FORMATS))
    if bad or not formats:
        raise HarnessError(
            f"--format {','.join(sorted(formats))}: comparing two runs writes html and md only; "
            "for latex or figures, run `harness report` on one run folder"
        )
    a, b = read_record(Path(run_a)), read_record(Path(run_b))
    view = comparison_view(a, b)
    html_path = Path(out) if out else Path(run_b) / f"vs-{_safe_name(Path(run_a).resolve().name)}.html"
    texts = {
        "html": (html_path, render_comparison_html),
        "md": (html_path.with_suffix(".md"), render_comparison_markdown),
    }
    written = {}
    for fmt in sorted(formats):
        path, render = texts[fmt]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(view), encoding="utf-8")
        except OSError as exc:
            raise HarnessError(f"cannot write {path}: {exc.strerror}; pick another --out") from exc
        written[fmt] = path
    return written
