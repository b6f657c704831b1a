"""Plain-text views of the run store for `harness runs list` and `harness runs show`."""

from __future__ import annotations

from harness.store.index import StoredRun
from harness.store.record import read_record


def format_runs(runs: list[StoredRun]) -> str:
    if not runs:
        return "no runs match"
    lines = [f"{'run':30s} {'created':20s} {'verdict':10s} {'students':24s} {'suites':24s} tags"]
    for run in runs:
        lines.append(
            f"{run.run_id:30s} {run.created:20s} {run.verdict or '-':10s} {','.join(run.students)[:24]:24s} "
            f"{','.join(run.suites)[:24]:24s} {','.join(run.tags)}"
        )
    return "\n".join(lines)


def format_run(run: StoredRun) -> str:
    """One run: identity, models with fingerprints, tags, verdict, and each suite's headline scores."""
    from harness.regress import headline_variant

    lines = [f"run:      {run.run_id}", f"path:     {run.path}", f"created:  {run.created}"]
    lines += [
        f"tags:     {', '.join(run.tags) or '-'}",
        f"verdict:  {run.verdict or '-'} (baseline {run.baseline or '-'})",
    ]
    for label, role, spec, fingerprint in run.models:
        lines.append(f"model:    {label} ({role}) {spec} fingerprint {fingerprint[:16]}")
    record = read_record(run.path)
    for suite, summary in record.metrics.get("suites", {}).items():
        if not isinstance(summary, dict) or summary.get("group") is not None:
            continue
        variant = headline_variant(summary)
        rows = summary.get("variants", {}).get(variant, {}) if variant else {}
        scores = ", ".join(
            f"{model} {rows[model]['score']:.3f}"
            for model in sorted(rows, key=lambda m: (m != run.teacher, m))
            if isinstance(rows[model].get("score"), float)
        )
        lines.append(f"suite:    {suite} {variant}: {scores}")
    return "\n".join(lines)
