"""Per-unit series out of a run record: what the gate pairs across two runs.

Per student: every top-level suite's primary metric at its headline variant, one unit per item (items
sharing a prompt are clustered by it); IF suites also their instruction-level strict accuracy, one
unit per prompt (instructions followed, instructions); and the KD check's forward KL and top-1
agreement at T = 1 on the teacher's text, one unit per sequence (sum, tokens), paired by a hash of
the scored token ids.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.store.record import RunRecord

KD_TEMPERATURE = "1"
KD_METRICS = ("forward_kl", "top1_agree")
LOWER_IS_BETTER = frozenset({"forward_kl", "reverse_kl", "js", "tvd"})


@dataclass(frozen=True)
class Series:
    """One metric of one model in one run: per unit (item, prompt or sequence) a (sum, count) pair."""

    suite: str
    variant: str
    metric: str
    model: str
    units: dict[str, tuple[float, float]]
    clusters: dict[str, str] = field(default_factory=dict)  # unit -> cluster when units share a prompt
    kind: str = "score"  # "score" (a suite's primary metric), "inst_level_strict" or a KD metric name

    @property
    def binary(self) -> bool:
        return not self.clusters and all(c == 1 and s in (0.0, 1.0) for s, c in self.units.values())


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def headline_variant(summary: dict[str, Any]) -> str | None:
    """The suite's headline variant (recorded since the ranking was added; else the largest non-baseline)."""
    if summary.get("headline_variant"):
        return str(summary["headline_variant"])
    present = [v for v, rows in _dict(summary.get("variants")).items() if rows]
    others = sorted((v for v in present if v != summary.get("baseline_variant")), key=natural_key)
    return others[-1] if others else (present[-1] if present else None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def _suite_items(record: RunRecord) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """(suite, variant, model) -> items; group suites (bbh) pool their members with subtask-prefixed ids."""
    by_key: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for item in record.items:
        by_key[(str(item.get("suite")), str(item.get("variant")), str(item.get("model")))].append(item)
    for name, summary in _dict(record.metrics.get("suites")).items():
        for member in _dict(summary).get("members") or []:
            prefix = str(member).split(":", 1)[-1]
            for (suite, variant, model), items in list(by_key.items()):
                if suite == member:
                    pooled = [{**i, "item_id": f"{prefix}/{i.get('item_id')}"} for i in items]
                    by_key[(name, variant, model)].extend(pooled)
    return by_key


def _clusters(items: list[dict[str, Any]]) -> dict[str, str]:
    """item -> cluster when several items share one prompt; {} when every prompt is its own."""
    prompts = [str(i.get("prompt", "")) for i in items]
    if len(set(prompts)) == len(prompts):
        return {}
    return {
        str(i.get("item_id")): hashlib.sha256(p.encode()).hexdigest()[:16]
        for i, p in zip(items, prompts, strict=True)
    }


def suite_series(record: RunRecord, models: Iterable[str]) -> list[Series]:
    """The headline-variant primary metric of every top-level suite (and IF instruction-level accuracy)."""
    by_key = _suite_items(record)
    out = []
    for suite, summary in _dict(record.metrics.get("suites")).items():
        summary = _dict(summary)
        variant = headline_variant(summary)
        if summary.get("group") is not None or variant is None:
            continue  # a subtask: gated through its group
        metric = str(summary.get("primary_metric") or "score")
        for model in models:
            items = by_key.get((suite, variant, model), [])
            units = {
                str(i.get("item_id")): (score, 1.0)
                for i in items
                if (score := _number(i.get("score"))) is not None
            }
            if units:
                out.append(Series(suite, variant, metric, model, units, _clusters(items)))
            inst = _instruction_units(items)
            if inst:
                out.append(Series(suite, variant, "inst_level_strict", model, inst, kind="inst_level_strict"))
    return out


def _instruction_units(items: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """IFEval instruction-level strict accuracy: per prompt, (instructions followed, instructions)."""
    units = {}
    for item in items:
        found = _dict(item.get("details")).get("instructions") or []
        if found:
            units[str(item.get("item_id"))] = (
                float(sum(bool(i.get("strict")) for i in found)),
                float(len(found)),
            )
    return units


def kd_per_sequence(sequences: Sequence[Any], divergences: Sequence[Any]) -> dict[str, Any]:
    """Per-sequence sums and counts of the gated KD metrics (written into the record at T = 1).

    sequences: KDSequence (seq_id, token_ids, start); divergences: PositionDivergences in the same
    order. "keys" identify each scored text (a hash of its token ids), so two runs pair a sequence only
    when it is the same text.
    """
    out: dict[str, Any] = {"t": KD_TEMPERATURE, "ids": [], "keys": []}
    for name in KD_METRICS:
        out[name] = {"sums": [], "counts": []}
    for seq, div in zip(sequences, divergences, strict=False):
        out["ids"].append(seq.seq_id)
        digest = hashlib.sha256(json.dumps([list(seq.token_ids), seq.start]).encode()).hexdigest()
        out["keys"].append(digest[:20])
        for name in KD_METRICS:
            values = np.asarray(getattr(div, name), dtype=np.float64)
            out[name]["sums"].append(float(np.nansum(values)))
            out[name]["counts"].append(int(np.count_nonzero(~np.isnan(values))))
    return out


def kd_series(record: RunRecord, models: Iterable[str]) -> tuple[list[Series], list[str]]:
    out, notes = [], []
    kd = _dict(record.metrics.get("kd"))
    for model in models:
        entry = _dict(kd.get(model))
        if not entry or entry.get("skipped"):
            continue
        per_seq = _dict(entry.get("per_sequence"))
        if not per_seq:
            notes.append(f"{record.run_dir.name}: {model} has no per-sequence KD values (an older record)")
            continue
        keys = [str(k) for k in per_seq.get("keys") or []]
        for name in KD_METRICS:
            block = _dict(per_seq.get(name))
            units = {
                k: (float(s), float(c))
                for k, s, c in zip(keys, block.get("sums") or [], block.get("counts") or [], strict=False)
                if c
            }
            if units:
                variant = f"T={per_seq.get('t', KD_TEMPERATURE)} off-policy"
                out.append(Series("kd", variant, name, model, units, kind=name))
    return out, notes


def students(record: RunRecord) -> list[str]:
    models = _dict(record.manifest.get("models"))
    return [label for label, entry in models.items() if _dict(entry).get("role") == "student"]


def record_series(
    record: RunRecord, models: list[str]
) -> tuple[dict[tuple[str, str, str, str], Series], list[str]]:
    """(suite, variant, metric, model) -> Series of every gated metric, and notes on what is missing."""
    kd, notes = kd_series(record, models)
    found = {(s.suite, s.variant, s.metric, s.model): s for s in [*suite_series(record, models), *kd]}
    return found, notes
