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
    "tokenizer", "coverage" (lower bound), "on_policy" (a KDSummary of the student's own text),
    "per_sequence" {t, ids, keys (hash of each scored token sequence), forward_kl/top1_agree: {sums,
    counts}} (T = 1 per-sequence values, paired across runs by the regression gate).
  KDSummary (and its "on_policy") += "suites" {suite: {n_sequences, n_tokens, temperatures: {T: {metric:
    summary}}}}; KDSummary += "gold" (a KDSummary of the suites' gold reference texts, + "suites",
    "suites_skipped" {suite: reason}) and "cka" {text, method, n_positions, n_sequences, teacher_layers,
    student_layers, matrix [[float|None]] (teacher layer rows x student layer columns, 0 = embeddings),
    best_teacher_layer [int|None], skipped: str|None, features_backend {teacher, student: str},
    features_source {teacher, student: {backend, side_loaded, device, dtype, seconds, ...}}} (linear CKA of
    hidden states, harness.kd_cka; a vLLM model's hidden states come from a transformers side-load).
  metrics.json += "calibration" {method, n_bins, suites: {suite: {variant: {model: {ece, mce, n, n_bins,
    accuracy, mean_confidence, bins: [{lo, hi, n, confidence, accuracy}]}}}}, skipped: str|None}
    (ECE of multiple-choice suites, harness.metrics.calibration).
  RUN_DIR/regress.json (optional, from `harness regress`): {baseline, current, verdict, metrics: [...]}.
Reading is tolerant: unknown keys are kept, missing optional keys get defaults, and a record
whose schema_version is newer than ours is read with a warning (RecordVersionWarning) rather than
refused. Older records are migrated in memory on read (MIGRATIONS, one step per version; the files
are not rewritten): version 0 (no schema_version; gains as bare numbers, no headline_variant) -> 1.
Files besides the record (index.html, regress.json, ...) may be added to a folder after it is COMPLETE.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.suites.base import ItemResult

SCHEMA_VERSION = 1
COMPLETE_MARKER = "COMPLETE"


class RecordVersionWarning(UserWarning):
    """A record written by a newer harness: read tolerantly, but some of it may be ignored."""


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, rename over `path`: readers see old or new, never half.

    On any failure (a full disk included) the temp file is removed and the old file is untouched.
    """
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
    fsync_dir(path.parent)


def write_record(
    run_dir: Path, manifest: dict[str, Any], items: list[ItemResult], metrics: dict[str, Any]
) -> None:
    """Write the three files, then the COMPLETE marker last: a half-written run is never complete."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / COMPLETE_MARKER).unlink(missing_ok=True)
    manifest = {"schema_version": SCHEMA_VERSION, **manifest}
    atomic_write(run_dir / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True, default=str))
    lines = (json.dumps(asdict(item), ensure_ascii=False, default=str) for item in items)
    atomic_write(run_dir / "items.jsonl", "\n".join(lines) + ("\n" if items else ""))
    atomic_write(run_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True, default=str))
    atomic_write(run_dir / COMPLETE_MARKER, "")


class RunRecord:
    """A run folder read back (tolerantly); `migrated_from` is the version it was migrated from, if any."""

    def __init__(
        self,
        run_dir: Path,
        manifest: dict[str, Any],
        items: list[dict[str, Any]],
        metrics: dict[str, Any],
        migrated_from: int | None = None,
    ):
        self.run_dir = run_dir
        self.manifest = manifest
        self.items = items
        self.metrics = metrics
        self.migrated_from = migrated_from

    @property
    def schema_version(self) -> int:
        return int(self.manifest.get("schema_version", 0))


def _natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _migrate_0_to_1(manifest: dict[str, Any], items: list[dict[str, Any]], metrics: dict[str, Any]) -> None:
    """Version 0 (before schema_version): bare-number gains, no headline_variant, sparse items."""
    for summary in metrics.get("suites", {}).values():
        if not isinstance(summary, dict):
            continue
        for per_variant in (summary.get("gain") or {}).values():
            if isinstance(per_variant, dict):
                for variant, value in list(per_variant.items()):
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        note = "migrated from a version 0 record (no interval)"
                        per_variant[variant] = {
                            "value": float(value),
                            "ci_low": None,
                            "ci_high": None,
                            "note": note,
                        }
        if "headline_variant" not in summary:
            present = [v for v, rows in (summary.get("variants") or {}).items() if rows]
            others = sorted((v for v in present if v != summary.get("baseline_variant")), key=_natural_key)
            summary["headline_variant"] = others[-1] if others else (present[-1] if present else None)
    for item in items:
        item.setdefault("metrics", {})
        item.setdefault("details", {})
        item.setdefault("truncated", False)
        item.setdefault("extracted", None)
    manifest.setdefault("models", {})
    manifest.setdefault("config", {})


# version v -> the function that upgrades a record of version v to v + 1 (in memory)
MIGRATIONS: dict[int, Callable[[dict[str, Any], list[dict[str, Any]], dict[str, Any]], None]] = {
    0: _migrate_0_to_1,
}


def migrate(manifest: dict[str, Any], items: list[dict[str, Any]], metrics: dict[str, Any]) -> int | None:
    """Upgrade a record read from disk to SCHEMA_VERSION in place; the version it had (None: current).

    A record newer than this harness is left as it is, with a RecordVersionWarning.
    """
    try:
        version = int(manifest.get("schema_version", 0))
    except (TypeError, ValueError):
        raise HarnessError(
            f"manifest schema_version {manifest.get('schema_version')!r} is not a whole number"
        ) from None
    if version > SCHEMA_VERSION:
        warnings.warn(
            f"run record schema_version {version} is newer than this harness reads ({SCHEMA_VERSION}): "
            "read tolerantly, newer fields are ignored; upgrade distill-harness to see them",
            RecordVersionWarning,
            stacklevel=3,
        )
        return None
    if version == SCHEMA_VERSION:
        return None
    for step in range(version, SCHEMA_VERSION):
        MIGRATIONS[step](manifest, items, metrics)
    manifest["schema_version"] = SCHEMA_VERSION
    return version


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{path} is not valid JSON ({exc}): the record is damaged") from exc
    if not isinstance(data, dict):
        raise HarnessError(f"{path} holds {type(data).__name__}, not a JSON object: the record is damaged")
    return data


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
        manifest = _read_json(run_dir / "manifest.json")
        metrics = _read_json(run_dir / "metrics.json")
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
    migrated_from = migrate(manifest, items, metrics)
    return RunRecord(run_dir, manifest, items, metrics, migrated_from)
