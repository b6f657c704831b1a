"""The summary table printed at the end of `harness compare` and by `harness report`."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from harness.report.kd import build_kd
from harness.report.view import (
    as_dict,
    fmt_pct,
    model_list,
    natural_key,
    ordered_suites,
    retention_cell,
)
from harness.store.record import RunRecord

STYLES = {"good": "green", "fair": "yellow", "bad": "red", "undef": "dim italic"}


def summary_table(record: RunRecord) -> Table:
    models = model_list(record)
    students = [m["label"] for m in models if m["role"] != "teacher"]
    table = Table(title="distill-harness: scores and retention (CIs in the HTML report)", header_style="bold")
    table.add_column("suite")
    table.add_column("variant")
    for m in models:
        table.add_column(f"{m['label']}\n({m['role']})", justify="right")
    for s in students:
        table.add_column(f"retention\n{s}", justify="right")
    for suite, summary in ordered_suites(record.metrics.get("suites")):
        if summary.get("group"):
            continue  # a subtask (bbh:navigate): its group's row stands for it; the HTML report lists it
        per_variant = as_dict(summary.get("variants"))
        retention = as_dict(summary.get("retention"))
        for i, variant in enumerate(sorted(per_variant, key=natural_key)):
            stats = as_dict(per_variant[variant])
            cells: list[Any] = [suite if i == 0 else "", variant]
            cells += [fmt_pct(as_dict(stats.get(m["label"])).get("score")) for m in models]
            for s in students:
                cell = retention_cell(as_dict(retention.get(s)).get(variant))
                cells.append(Text(cell["text"], style=STYLES[cell["cls"]]))
            table.add_row(*cells)
        table.add_section()
    return table


def _kd_parts(temps: list[dict[str, Any]]) -> str:
    parts = [
        f"T={t['t']}: forward KL {'>= ' if t['fkl']['lower_bound'] else ''}{t['fkl']['mean']}, "
        f"top-1 {t['top1']}"
        for t in temps
    ]
    return "; ".join(parts) or "no temperatures recorded"


def kd_lines(record: RunRecord) -> list[str]:
    """One line per student: forward KL mean per temperature and top-1 agreement; one more for its
    on-policy check (the student's own text) when the record has one."""
    kd = build_kd(as_dict(record.metrics.get("kd")), model_list(record))
    lines = []
    for s in kd["students"]:
        if s["skipped"]:
            lines.append(f"KD {s['label']}: skipped ({s['skipped']})")
        else:
            suffix = " (lower bound: top-k + tail)" if s["lower_bound"] else ""
            lines.append(f"KD {s['label']}: {_kd_parts(s['temps'])}{suffix}")
        op = s["on_policy"]
        if op:
            body = f"skipped ({op['skipped']})" if op["skipped"] else _kd_parts(op["temps"])
            lines.append(f"KD {s['label']} on-policy (own text): {body}")
    return lines


def render_terminal_summary(record: RunRecord, console: Any) -> None:
    """Print the score/retention table and one KD line per student on a rich Console."""
    console.print(summary_table(record))
    for line in kd_lines(record):
        console.print(Text(line))
