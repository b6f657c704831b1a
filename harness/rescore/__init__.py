"""`harness score SUITE --responses FILE`: re-score saved responses without any model.

Reads four formats, told apart by their fields (`formats`): harness run records, IFEval
`input_response_data`, BBH `{input, prediction, target}` records and lm-eval `--log_samples` files.
`selection` loads the suites (and only the subtasks) the records answer, `match` pairs each record
with its suite item, `command` scores them, `summary` prints the table.

Matched responses go through the suite's own `score()` and `summarize_suites`, so the metrics are
those a live run writes. Prompt rendering plays no part in scoring (filters and metrics see only the
doc and the response), so suites are loaded without chat templates and items are matched by content.
"""

from __future__ import annotations

from harness.rescore.command import score_responses
from harness.rescore.formats import BBH, IFEVAL, LM_EVAL, RUN_RECORD, Saved, SavedResponses, read_responses
from harness.rescore.summary import format_summary

__all__ = [
    "BBH",
    "IFEVAL",
    "LM_EVAL",
    "RUN_RECORD",
    "Saved",
    "SavedResponses",
    "format_summary",
    "read_responses",
    "score_responses",
]
