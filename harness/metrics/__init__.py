"""Pure metric functions: token divergences (divergence.py), their summaries (summary.py), the worst
sequences and positions (worst.py) and the tokenizer comparison (tokenizers.py)."""

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
from harness.metrics.summary import KL_BIN_EDGES, histogram, log_histogram, summarize
from harness.metrics.tokenizers import compare_vocabularies, vocabulary_of
from harness.metrics.worst import PositionTokens, top_positions, top_sequences

__all__ = [
    "KL_BIN_EDGES",
    "METRIC_NAMES",
    "PositionDivergences",
    "PositionTokens",
    "compare_vocabularies",
    "concat_divergences",
    "full_vocab_divergences",
    "histogram",
    "log_histogram",
    "student_full_vs_teacher_topk",
    "summarize",
    "temper",
    "top_positions",
    "top_sequences",
    "truncated_divergences",
    "vocabulary_of",
]
