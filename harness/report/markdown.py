"""`summary.md`: the headline table with CIs and retention, the KD summary lines and the run's notes.

Record strings are untrusted and Markdown renderers differ: `escape_md` backslash-escapes every
character that can start markup inline (emphasis, code, links, HTML, table pipes, math) and any
block marker a line could start with, and turns newlines into spaces, so a note or a label stays
plain text in one table cell or list item. Bold and ties follow tables.tex (harness.report.latex).
When the gate has judged the run (RUN_DIR/regress.json), its verdict comes first, read through
harness.report.verdict like the HTML report's, so both show the same values.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.report.latex import Num, best_flags, headline_data, students_of
from harness.report.terminal import kd_lines
from harness.report.verdict import verdict_view
from harness.report.view import as_dict, model_list, ordered_suites
from harness.store.record import RunRecord

UNDEFINED = "—"
# CommonMark lets a backslash escape any ASCII punctuation; these can start inline markup (GFM
# strikethrough "~", math "$", entities "&", table pipes "|").
_INLINE = re.compile(r"([\\`*_\[\]<>|&~$#!])")
_BLOCK_START = re.compile(r"^([-+=>]|\d+[.)])")


def escape_md(text: Any, *, line_start: bool = False) -> str:
    """`text` as Markdown that renders literally, on one line (fit for a table cell or list item).

    line_start: the text starts a block (a list item's content), where "1. x", "- x" or "> x" would
    open a nested list or a quote: its first marker is escaped too."""
    one_line = re.sub(r"[\s\x00-\x1f\x7f]+", " ", str(text)).strip()
    escaped = _INLINE.sub(r"\\\1", one_line)
    match = _BLOCK_START.match(escaped) if line_start else None
    if match:
        marker = match.group(1)
        escaped = marker[:-1] + "\\" + marker[-1] + escaped[len(marker) :]
    return escaped


def cell(n: Num, bold: bool) -> str:
    shown = n.printed()
    if shown is None:
        return UNDEFINED
    ci = n.ci()
    body = f"**{shown}**" if bold else shown
    return body if ci is None else f"{body} [{ci[0]}, {ci[1]}]"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def headline_markdown(suites: dict[str, Any], models: list[dict[str, str]]) -> list[str]:
    students = students_of(models)
    heads = ["Suite", "Variant"]
    heads += [
        escape_md(m["label"]) + (f" ({escape_md(m['role'])})" if m["role"] != m["label"] else "")
        for m in models
    ]
    heads += [f"Retention {escape_md(s['label'])}" for s in students]
    lines = [_row(heads), _row([":--", ":--"] + ["--:"] * (len(models) + len(students)))]
    for name, variant, scores, retention in headline_data(suites, models):
        cells = [escape_md(name), escape_md(variant)]
        cells += [cell(n, b) for n, b in zip(scores, best_flags(scores), strict=True)]
        cells += [cell(n, b) for n, b in zip(retention, best_flags(retention), strict=True)]
        lines.append(_row(cells))
    return lines


def _warnings(suites: dict[str, Any]) -> list[str]:
    """The suites' own warnings (small samples, dropped items), one bullet each."""
    out = []
    for name, summary in ordered_suites(suites):
        for w in summary.get("warnings") or []:
            out.append(f"- {escape_md(name, line_start=True)}: {escape_md(w)}")
    return out


def _margin(row: dict[str, Any]) -> str:
    source = row["margin_source"]
    return row["margin"] + (f" ({escape_md(source)})" if source else "")


def verdict_markdown(run_dir: Path) -> list[str]:
    """The gate's verdict: a heading, one line, and a table of the failed metrics (baseline -> current,
    margin, the gate's status in words); [] when the run has not been gated."""
    view = verdict_view(run_dir)
    if view is None:
        return []
    shown = view["verdict"] if view["verdict"] != "unknown" else f"verdict {escape_md(view['verdict_text'])}"
    lines = [f"## Regression gate: {shown}", ""]
    if view["error"]:
        return [*lines, f"**Warning:** {escape_md(view['error'])}", ""]
    rows, n_failed = view["rows"], view["n_regressed"]
    names = f"against the baseline {escape_md(view['baseline'])} (this run: {escape_md(view['current'])})"
    ni = view["test"] == "non-inferiority"
    if not n_failed:
        how = "shown non-inferior" if ni else "within their margins"
        return [*lines, f"All {len(rows)} metrics passed {names}: {how}.", ""]
    lines.append(
        f"**{n_failed} of {len(rows)} metrics failed** {names}; {len(rows) - n_failed} passed."
        + (
            " The gate tests non-inferiority: a metric passes only when the data show its drop is below its"
            ' margin; "not shown non-inferior" means too few items to tell, not a measured drop.'
            if ni
            else " The gate tests for a drop beyond each metric's margin."
        )
    )
    lines += ["", _row(["Suite", "Variant", "Metric", "Model", "Baseline → current", "Margin", "Status"])]
    lines.append(_row([":--"] * 4 + ["--:", "--:", ":--"]))
    for r in rows:
        if r["regressed"]:
            change = f"{r['baseline']} → {r['current']} ({r['diff']})"
            cells = [escape_md(r[k]) for k in ("suite", "variant", "metric", "model")]
            lines.append(_row([*cells, escape_md(change), _margin(r), escape_md(r["status"])]))
    return [*lines, ""]


def render_markdown(record: RunRecord) -> str:
    models = model_list(record)
    suites = as_dict(record.metrics.get("suites"))
    teacher = next((m["label"] for m in models if m["role"] == "teacher"), "")
    students = [m["label"] for m in models if m["role"] != "teacher"]
    manifest = record.manifest
    title = f"{escape_md(teacher) or 'run'} vs {', '.join(escape_md(s) for s in students) or 'no students'}"
    lines = [
        f"# distill-harness: {title}",
        "",
        " · ".join(
            [
                f"Run {escape_md(record.run_dir)}",
                f"created {escape_md(manifest.get('created', '?'))}",
                f"harness {escape_md(manifest.get('harness_version', '?'))}",
            ]
        ),
        "",
        *verdict_markdown(record.run_dir),
        "## Headline",
        "",
    ]
    if any(not s.get("group") for _, s in ordered_suites(suites)):
        lines += [
            "Each suite's primary metric (%) on its headline variant with 95% bootstrap CIs"
            + ("; retention = student / teacher with paired-bootstrap 95% CIs" if students else "")
            + ". **Bold**: the best value per row among the models and among the retention columns (ties "
            f"all bold). {UNDEFINED}: undefined (the HTML report says why).",
            "",
            *headline_markdown(suites, models),
        ]
    else:
        lines.append("No suite results in this record.")
    kd = kd_lines(record)
    if kd:
        lines += [
            "",
            "## KD check (token level)",
            "",
            *(f"- {escape_md(line, line_start=True)}" for line in kd),
        ]
    warnings = _warnings(suites)
    if warnings:
        lines += ["", "## Warnings", "", *warnings]
    notes = [str(n) for n in record.metrics.get("notes") or []]
    lines += [
        "",
        "## Notes",
        "",
        *(f"- {escape_md(n, line_start=True)}" for n in notes or ["No notes were recorded."]),
    ]
    return "\n".join(lines) + "\n"
