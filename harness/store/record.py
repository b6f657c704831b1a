"""The run record: one folder per run, the only input of reports and gates.

Layout of RUN_DIR:
- `manifest.json`  schema_version, harness version, created (UTC ISO), config (the CLI/config values),
  seeds, models {label: {role, spec, info (ModelInfo fields), timings}}, hardware, versions,
  logprob semantics of the KD check.
- `items.jsonl`    one ItemResult per line (suite, variant, item_id, model, prompt, output, target,
  extracted, score, metrics, truncated, details).
- `metrics.json`   {"suites": {suite: SuiteSummary}, "kd": {student: KDSummary}, "notes": [str]}
  SuiteSummary = {"ability", "description", "primary_metric", "chance", "baseline_variant",
                  "n_items", "variants": {variant: {model: {"score", "ci_low", "ci_high", "n",
                  "truncated", <other metric means>}}},
                  "gain": {model: {variant: Estimate}}   # variant score - baseline variant score, paired
                  "retention": {student: {variant: Estimate}},   # student / teacher, paired bootstrap
                  "gain_retention": {student: {variant: Estimate}},   # student gain / teacher gain
                  "paired": {student: {variant: Paired}}}   # every non-teacher model vs the teacher
  Paired = {"mcnemar": {"both_right", "teacher_only", "student_only", "neither": int, "p_value": float,
                        "n": int, "cells": {"both_right" | "teacher_only" | "student_only" | "neither":
                        [item_id]}},   # only when every paired score is 0/1 (NaN pairs left out)
            "chance_retention": Estimate,   # (S - chance) / (T - chance); undefined when T <= chance
            "gap_closed": Estimate}   # (S - B) / (T - B); only for role "student" when a "base" model ran
  Estimate = {"value": float|None, "ci_low", "ci_high", "note": str|None}  (None + note when undefined)
  KDSummary = {"text": "teacher generations", "semantics": "full-vocab" | "top-k+tail lower bound",
               "top_k": int|None, "coverage_mean": float|None, "n_sequences", "n_tokens",
               "temperatures": {str(T): {metric: {"mean","ci_low","ci_high","median","p90","p99","max"}}},
               "skipped": str|None}
Keys added since (all optional, readers must not require them):
  SuiteSummary += "chat_template", "group" (a subtask's group), "members" (a group's subtasks),
    "headline_variant", "draws" {variant: {model: {draws, scores, mean, std, min, max}}} (ICL),
    "instruction_types" {type: {model: {n, strict, loose}}} (IF), "pairwise" {"A vs B": {variant:
    {a, b, diff: Estimate, mcnemar: {both_right, a_only, b_only, neither, p_value, p_holm, n, cells}}}},
    "ranking" {variant, metric, models: [{model, score, ci_low, ci_high, n, retention, rank}]},
    "dropped" {model: {variant: [item_id]}}, "warnings" [str], "notes" [str],
    "multiple_comparisons" {method: "holm", family_size, scope}; Paired += "diff": Estimate and
    mcnemar.p_holm; variant rows of IF suites += "inst_level_strict"/"inst_level_loose" (Estimate over
    prompt clusters, + n, n_prompts) and "lm_eval" {metric: lm-eval's own aggregation}.
  metrics.json += "cost" {model: {parameters, weights_bytes, load_rss_delta_bytes, load_seconds,
    suite_requests, suite_seconds, generated_tokens, tokens_per_second, seconds_per_request,
    throughput_note, (students:) parameter_fraction, speedup, mean_retention,
    retention_per_parameter_fraction}} and "sequence" (harness.sequence.sequence_checks); KDSummary +=
    per-metric "p99_9" and "histogram" {edges, counts, n_above, n_below, n_nan}, "worst", "nll",
    "tokenizer", "coverage" (lower bound), "on_policy" (a KDSummary of the student's own text).
Reading is tolerant: unknown keys are kept, missing optional keys get defaults, and a record
whose schema_version is newer than ours is read with a warning rather than refused.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.suites.base import ItemResult

SCHEMA_VERSION = 1
COMPLETE_MARKER = "COMPLETE"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(
    run_dir: Path, manifest: dict[str, Any], items: list[ItemResult], metrics: dict[str, Any]
) -> None:
    """Write the three files, then the COMPLETE marker last: a half-written run is never complete."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / COMPLETE_MARKER).unlink(missing_ok=True)
    manifest = {"schema_version": SCHEMA_VERSION, **manifest}
    _atomic_write(run_dir / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True, default=str))
    lines = (json.dumps(asdict(item), ensure_ascii=False, default=str) for item in items)
    _atomic_write(run_dir / "items.jsonl", "\n".join(lines) + ("\n" if items else ""))
    _atomic_write(run_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True, default=str))
    _atomic_write(run_dir / COMPLETE_MARKER, "")


class RunRecord:
    """A run folder read back (tolerantly)."""

    def __init__(
        self, run_dir: Path, manifest: dict[str, Any], items: list[dict[str, Any]], metrics: dict[str, Any]
    ):
        self.run_dir = run_dir
        self.manifest = manifest
        self.items = items
        self.metrics = metrics

    @property
    def schema_version(self) -> int:
        return int(self.manifest.get("schema_version", 0))


def read_record(run_dir: Path | str) -> RunRecord:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise HarnessError(
            f"run folder {run_dir} does not exist: pass the --out folder of a finished compare"
        )
    if not (run_dir / COMPLETE_MARKER).exists():
        raise HarnessError(
            f"run folder {run_dir} is incomplete (no {COMPLETE_MARKER} marker): "
            "rerun the compare to finish it"
        )
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        items = []
        with open(run_dir / "items.jsonl", encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        items.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise HarnessError(
                            f"{run_dir / 'items.jsonl'} line {line_no} is not JSON: {exc}"
                        ) from exc
    except FileNotFoundError as exc:
        raise HarnessError(
            f"run folder {run_dir} lacks {Path(exc.filename).name}: it is not a run record"
        ) from exc
    metrics.setdefault("suites", {})
    metrics.setdefault("kd", {})
    metrics.setdefault("notes", [])
    return RunRecord(run_dir, manifest, items, metrics)
