"""Per-variant rows of one suite summary and the suite-level views built on them: scores with CIs, IFEval
instruction-level accuracy and instruction types, lm-eval's own aggregations, ICL draw spreads, the
headline variant, the students' ranking, and warnings about missing items and small samples."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from harness import stats
from harness.aggregate_paired import _estimate_n
from harness.suites.base import ItemResult, SuiteInfo

# Below this many items (or prompts) per model, an interval is still reported but flagged as rough.
MIN_ITEMS_FOR_INTERVAL = 10


class _HasInfo(Protocol):
    def info(self) -> SuiteInfo: ...


def _variant_row(results: list[ItemResult], seed: int, n_boot: int) -> dict[str, Any]:
    scores = np.array([r.score for r in results], dtype=np.float64)
    estimate = stats.bootstrap_mean_ci(scores, seed=seed, n_boot=n_boot)
    row: dict[str, Any] = {
        "score": estimate.value,
        "ci_low": estimate.ci_low,
        "ci_high": estimate.ci_high,
        "n": len(results),
        "truncated": sum(r.truncated for r in results),
    }
    metric_names = sorted({name for r in results for name in r.metrics})
    for name in metric_names:
        values = [r.metrics[name] for r in results if name in r.metrics]
        row[name] = float(np.mean(values)) if values else None
    row.update(_instruction_level(results, seed, n_boot))
    return row


def _instruction_level(results: list[ItemResult], seed: int, n_boot: int) -> dict[str, dict[str, Any]]:
    """IFEval instruction-level accuracy: pooled over instructions, CI resampling prompts (clusters).

    The instructions of one prompt share its response, so they are not independent: resampling single
    instructions would give too narrow an interval. The value equals lm-eval's pooled inst_level_*_acc.
    """
    strict: list[float] = []
    loose: list[float] = []
    prompt: list[int] = []
    for i, r in enumerate(results):
        for inst in r.details.get("instructions") or []:
            strict.append(float(bool(inst["strict"])))
            loose.append(float(bool(inst["loose"])))
            prompt.append(i)
    if not prompt:
        return {}
    n_prompts = len(set(prompt))
    return {
        key: {
            **_estimate_n(stats.bootstrap_mean_ci(values, prompt, seed=seed, n_boot=n_boot)),
            "n_prompts": n_prompts,
        }
        for key, values in (("inst_level_strict", strict), ("inst_level_loose", loose))
    }


def _natural_key(text: str) -> list[Any]:
    """Sort "k=2" before "k=16" (as the report does)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _headline_variant(info: SuiteInfo, present: list[str]) -> str | None:
    """The variant a suite is ranked (and headlined) by: the largest non-baseline one (k=max, cot)."""
    others = sorted((v for v in present if v != info.baseline_variant), key=_natural_key)
    return others[-1] if others else (present[-1] if present else None)


def _ranking(
    variants: dict[str, dict[str, Any]],
    retention: dict[str, dict[str, Any]],
    roles: dict[str, str],
    variant: str | None,
    metric: str,
) -> dict[str, Any]:
    """Students ordered by the headline variant's primary score; equal scores share a rank (1, 2, 2, 4)."""
    rows = variants.get(variant, {}) if variant else {}
    entries = [
        {
            "model": m,
            "score": rows[m]["score"],
            "ci_low": rows[m]["ci_low"],
            "ci_high": rows[m]["ci_high"],
            "n": rows[m]["n"],
            "retention": retention.get(m, {}).get(variant or "", {}).get("value"),
        }
        for m, role in roles.items()
        if role == "student" and m in rows
    ]
    entries.sort(key=lambda e: (e["score"] is None, -(e["score"] or 0.0)))
    for i, e in enumerate(entries):
        same = i > 0 and e["score"] is not None and e["score"] == entries[i - 1]["score"]
        e["rank"] = None if e["score"] is None else entries[i - 1]["rank"] if same else i + 1
    return {"variant": variant, "metric": metric, "models": entries}


def _item_coverage(
    cells: dict[tuple[str, str], list[ItemResult]], roles: dict[str, str], variants: Sequence[str]
) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
    """Items each model lacks that another model of the run has (per variant), and warnings.

    Paired statistics join on item id, so such items are left out of every comparison with that model;
    a duplicated id keeps its last result.
    """
    dropped: dict[str, dict[str, list[str]]] = {}
    warnings: list[str] = []
    for v in variants:
        ids = {m: [r.item_id for r in cells[(v, m)]] for m in roles if cells.get((v, m))}
        union = set().union(*ids.values()) if ids else set()
        for m, own in ids.items():
            if len(own) != len(set(own)):
                warnings.append(
                    f"{v}: {m} has {len(own) - len(set(own))} duplicated item id(s); "
                    "paired statistics keep the last result of each"
                )
            missing = sorted(union - set(own), key=_natural_key)
            if missing:
                dropped.setdefault(m, {})[v] = missing
                warnings.append(
                    f"{v}: {m} lacks {len(missing)} of the {len(union)} items other models answered; "
                    f"comparisons with {m} use the shared items only (ids under 'dropped')"
                )
    return dropped, warnings


def _small_sample_warnings(variants: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for v, rows in variants.items():
        sizes = [row["n"] for row in rows.values()]  # items; for IFEval, prompts (the resampled clusters)
        if sizes and min(sizes) < MIN_ITEMS_FOR_INTERVAL:
            out.append(
                f"{v}: only {min(sizes)} items per model (fewer than {MIN_ITEMS_FOR_INTERVAL}): "
                "intervals are reported but too rough to rely on"
            )
    return out


def _draw_spread(
    draws: dict[str, tuple[str, ...]],
    cells: dict[tuple[str, str], list[ItemResult]],
    roles: dict[str, str],
    seed: int,
    n_boot: int,
) -> dict[str, dict[str, Any]]:
    """ICL sensitivity: the score under each seeded draw of the examples, and its spread."""
    out: dict[str, dict[str, Any]] = {}
    for variant, extra in draws.items():
        out[variant] = {}
        for model in roles:
            names = [variant, *extra]
            if not all(cells.get((n, model)) for n in names):
                continue
            scores = [float(np.mean([r.score for r in cells[(n, model)]])) for n in names]
            out[variant][model] = {
                "draws": names,
                "scores": scores,
                "mean": float(np.mean(scores)),
                "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
                "min": float(min(scores)),
                "max": float(max(scores)),
            }
    return out


def _instruction_types(results: Sequence[ItemResult], roles: dict[str, str]) -> dict[str, Any]:
    """IFEval per instruction type and model: strict and loose accuracy over the instructions of that type."""
    counts: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0]))
    for r in results:
        for inst in r.details.get("instructions", []):
            cell = counts[inst["id"]][r.model]
            cell[0] += 1
            cell[1] += int(bool(inst["strict"]))
            cell[2] += int(bool(inst["loose"]))
    return {
        kind: {
            model: {"n": c[0], "strict": c[1] / c[0], "loose": c[2] / c[0]}
            for model, c in by_model.items()
            if model in roles and c[0]
        }
        for kind, by_model in sorted(counts.items())
    }


def _add_lm_eval_aggregates(suite: _HasInfo, results: Sequence[ItemResult], variants: dict[str, Any]) -> None:
    """lm-eval's own aggregations (e.g. IFEval's pooled instruction-level accuracy), as lm-eval has them."""
    aggregate = getattr(suite, "aggregate", None)
    if aggregate is None:
        return
    for model in {r.model for r in results}:
        own = aggregate([r for r in results if r.model == model])
        for variant, values in own.items():
            if model in variants.get(variant, {}):
                variants[variant][model]["lm_eval"] = values
