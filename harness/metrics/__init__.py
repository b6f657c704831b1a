"""Pure metric functions: token divergences (divergence.py) and their summaries (summary.py)."""

from __future__ import annotations

from harness.metrics.divergence import (
    METRIC_NAMES,
    PositionDivergences,
    concat_divergences,
    full_vocab_divergences,
    student_full_vs_teacher_topk,
    temper,
    truncated_divergences,
)
from harness.metrics.summary import histogram, summarize

__all__ = [
    "METRIC_NAMES",
    "PositionDivergences",
    "concat_divergences",
    "full_vocab_divergences",
    "histogram",
    "student_full_vs_teacher_topk",
    "summarize",
    "temper",
    "truncated_divergences",
]
