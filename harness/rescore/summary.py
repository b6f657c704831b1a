"""`format_summary`: the plain-text table `harness score` prints from the metrics it wrote."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def format_summary(metrics: Mapping[str, Any]) -> str:
    """A plain-text table, one row per suite, variant and model: score, CI, n, every other metric.

    Metric values are lm-eval's own aggregations (IFEval's instruction-level accuracy pools
    instructions) where the summary has them, else the per-item means."""
    header = ("suite", "variant", "model", "score", "95% CI", "n", "trunc", "metrics")
    rows: list[tuple[str, ...]] = []
    for suite, summary in (metrics.get("suites") or {}).items():
        for variant, per_model in (summary.get("variants") or {}).items():
            for label, row in per_model.items():
                values = row.get("lm_eval") or {k: v for k, v in row.items() if "," in k}
                rows.append(
                    (
                        suite,
                        variant,
                        label,
                        _num(row.get("score")),
                        f"[{_num(row.get('ci_low'))}, {_num(row.get('ci_high'))}]",
                        str(row.get("n", "")),
                        str(row.get("truncated", "")),
                        "  ".join(f"{k}={_num(v)}" for k, v in sorted(values.items())),
                    )
                )
    if not rows:
        return "no scores"
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)), r[-1]]).rstrip()
        for r in (header, *rows)
    ]
    agreement = (metrics.get("rescore") or {}).get("lm_eval_agreement") or {}
    for suite, per_variant in agreement.items():
        for variant, per_key in per_variant.items():
            for key, cell in per_key.items():
                agree = f"{cell['agree']}/{cell['n']}"
                lines.append(f"agrees with lm-eval's logged {key} on {suite} {variant}: {agree} items")
    lines.extend(f"note: {note}" for note in metrics.get("notes") or [])
    return "\n".join(lines)


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"
