"""Per-item results -> per-suite summaries (scores with CIs, gains, retention) for metrics.json.

Paired statistics join models on item id: an item one model lacks is left out of every comparison with
that model and listed under the summary's "dropped". Every McNemar p-value of a run is one family for
Holm's correction (summarize_suites), since a reader scans them all for "significant" differences.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from harness import stats
from harness.suites.base import ItemResult, Suite, SuiteInfo

# Below this many items (or prompts) per model, an interval is still reported but flagged as rough.
MIN_ITEMS_FOR_INTERVAL = 10
HOLM_SCOPE_RUN = (
    "every McNemar test in this run: the teacher vs each other model and each pair of non-teacher "
    "models, over all suites (a group and its subtasks included) and variants"
)
HOLM_SCOPE_SUITE = "every McNemar test in this suite summary (teacher vs model, model vs model, all variants)"
NO_BASE_NOTE = (
    "gap closed not computed: no base model in this run (pass --base MODEL to measure the share of the "
    "base-to-teacher gap each student closed)"
)


def _estimate_dict(estimate: Any) -> dict[str, Any]:
    return {
        "value": estimate.value,
        "ci_low": estimate.ci_low,
        "ci_high": estimate.ci_high,
        "note": getattr(estimate, "note", None),
    }


def _estimate_n(estimate: stats.Estimate) -> dict[str, Any]:
    return {**_estimate_dict(estimate), "n": estimate.n}


def _by_item(results: Sequence[ItemResult]) -> dict[str, float]:
    return {r.item_id: r.score for r in results}


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


def _paired(a: dict[str, float], b: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    shared = sorted(set(a) & set(b))
    return np.array([a[i] for i in shared]), np.array([b[i] for i in shared])


class _HasInfo(Protocol):
    def info(self) -> SuiteInfo: ...


def summarize_suite(
    suite: _HasInfo,
    results: Sequence[ItemResult],
    roles: dict[str, str],
    seed: int,
    n_boot: int,
    *,
    pairwise: bool = True,
) -> dict[str, Any]:
    """One suite's summary; `pairwise`: also compare every pair of non-teacher models.

    McNemar p-values get "p_holm" over this suite's tests; summarize_suites redoes the correction over
    the whole run.
    """
    info = suite.info()
    cells: dict[tuple[str, str], list[ItemResult]] = defaultdict(list)
    for r in results:
        cells[(r.variant, r.model)].append(r)
    variants = {
        v: {m: _variant_row(cells[(v, m)], seed, n_boot) for m in roles if cells.get((v, m))}
        for v in info.variants
    }
    _add_lm_eval_aggregates(suite, results, variants)
    teacher = next(label for label, role in roles.items() if role == "teacher")
    gain: dict[str, dict[str, Any]] = {}
    gain_retention: dict[str, dict[str, Any]] = {}
    retention: dict[str, dict[str, Any]] = {}
    base_variant = info.baseline_variant
    for model in roles:
        gain[model] = {}
        for v in info.variants:
            if v == base_variant or not cells.get((v, model)) or not cells.get((base_variant, model)):
                continue
            hi, lo = _paired(_by_item(cells[(v, model)]), _by_item(cells[(base_variant, model)]))
            gain[model][v] = _estimate_dict(stats.paired_bootstrap_diff(hi, lo, seed=seed, n_boot=n_boot))
    for model, role in roles.items():
        if role == "teacher":
            continue
        retention[model], gain_retention[model] = {}, {}
        for v in info.variants:
            if not cells.get((v, model)) or not cells.get((v, teacher)):
                continue
            s, t = _paired(_by_item(cells[(v, model)]), _by_item(cells[(v, teacher)]))
            retention[model][v] = _estimate_dict(stats.paired_bootstrap_ratio(s, t, seed=seed, n_boot=n_boot))
            if v != base_variant and cells.get((base_variant, model)) and cells.get((base_variant, teacher)):
                s0, t0 = _paired(
                    _by_item(cells[(base_variant, model)]), _by_item(cells[(base_variant, teacher)])
                )
                gain_retention[model][v] = _estimate_dict(
                    stats.retention_of_gain(s, s0, t, t0, seed=seed, n_boot=n_boot)
                )
    paired = {
        model: _paired_block(model, teacher, roles, cells, info.variants, info.chance, seed, n_boot)
        for model, role in roles.items()
        if role != "teacher"
    }
    dropped, warnings = _item_coverage(cells, roles, info.variants)
    warnings += _small_sample_warnings(variants)
    headline = _headline_variant(info, [v for v in info.variants if variants[v]])
    out = {
        "ability": info.ability,
        "description": info.description,
        "primary_metric": info.primary_metric,
        "chance": info.chance,
        "baseline_variant": base_variant,
        "n_items": info.n_items,
        "chat_template": info.chat_template,
        "group": info.group,
        "variants": variants,
        "gain": gain,
        "retention": retention,
        "gain_retention": gain_retention,
        "paired": paired,
        "headline_variant": headline,
        "ranking": _ranking(variants, retention, roles, headline, info.primary_metric),
        "dropped": dropped,
        "warnings": warnings,
        "notes": _base_notes(roles, cells, info.variants, teacher),
    }
    if pairwise:
        out["pairwise"] = _pairwise(roles, cells, info.variants, seed, n_boot)
    if info.draws:
        out["draws"] = _draw_spread(info.draws, cells, roles, seed, n_boot)
    if info.ability == "if":
        out["instruction_types"] = _instruction_types(results, roles)
    apply_holm({info.name: out}, HOLM_SCOPE_SUITE)
    return out


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


def _base_notes(
    roles: dict[str, str],
    cells: dict[tuple[str, str], list[ItemResult]],
    variants: Sequence[str],
    teacher: str,
) -> list[str]:
    """Why gap closed is missing, when it is."""
    if "student" not in roles.values():
        return []
    base = next((label for label, role in roles.items() if role == "base"), None)
    if base is None:
        return [NO_BASE_NOTE]
    return [
        f"gap closed for {v} not computed: the base model {base} has no results for it"
        for v in variants
        if cells.get((v, teacher)) and not cells.get((v, base))
    ]


def _pairwise(
    roles: dict[str, str],
    cells: dict[tuple[str, str], list[ItemResult]],
    variants: Sequence[str],
    seed: int,
    n_boot: int,
) -> dict[str, dict[str, Any]]:
    """Every pair of non-teacher models: score difference a - b (paired bootstrap) and McNemar."""
    others = [m for m, role in roles.items() if role != "teacher"]
    out: dict[str, dict[str, Any]] = {}
    for a, b in itertools.combinations(others, 2):
        per_variant: dict[str, Any] = {}
        for v in variants:
            if not cells.get((v, a)) or not cells.get((v, b)):
                continue
            a_by, b_by = _by_item(cells[(v, a)]), _by_item(cells[(v, b)])
            x, y = _paired(a_by, b_by)
            entry: dict[str, Any] = {
                "a": a,
                "b": b,
                "diff": _estimate_n(stats.paired_bootstrap_diff(x, y, seed=seed, n_boot=n_boot)),
            }
            test = _mcnemar(a_by, b_by, ("a_only", "b_only"))
            if test is not None:
                entry["mcnemar"] = test
            per_variant[v] = entry
        if per_variant:
            out[f"{a} vs {b}"] = per_variant
    return out


def _mcnemar_tests(suites: dict[str, Any]) -> list[dict[str, Any]]:
    tests = []
    for name in sorted(suites):
        summary = suites[name]
        for block in ("paired", "pairwise"):
            for per_variant in (summary.get(block) or {}).values():
                for entry in per_variant.values():
                    if isinstance(entry, dict) and isinstance(entry.get("mcnemar"), dict):
                        tests.append(entry["mcnemar"])
    return tests


def apply_holm(suites: dict[str, Any], scope: str = HOLM_SCOPE_RUN) -> int:
    """Holm-adjust every McNemar p-value in `suites` as one family: "p_holm" beside each "p_value".

    Each summary records the family under "multiple_comparisons". Returns the family size.
    """
    tests = _mcnemar_tests(suites)
    for test, adjusted in zip(tests, stats.holm([t["p_value"] for t in tests]), strict=True):
        test["p_holm"] = adjusted
    for summary in suites.values():
        summary["multiple_comparisons"] = {"method": "holm", "family_size": len(tests), "scope": scope}
    return len(tests)


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


TEACHER_CELLS = ("teacher_only", "student_only")


def _mcnemar(
    first: dict[str, float], second: dict[str, float], only: tuple[str, str] = TEACHER_CELLS
) -> dict[str, Any] | None:
    """McNemar's test and the item ids in each 2x2 cell; None unless every score is 0/1.

    `only` names the discordant cells (first right only, second right only). Items where either score
    is NaN are left out, as stats.mcnemar does.
    """
    shared = sorted(i for i in set(first) & set(second) if not (np.isnan(first[i]) or np.isnan(second[i])))
    if not shared or any(first[i] not in (0.0, 1.0) or second[i] not in (0.0, 1.0) for i in shared):
        return None
    cells: dict[str, list[str]] = {"both_right": [], only[0]: [], only[1]: [], "neither": []}
    for i in shared:
        f, s = first[i] == 1.0, second[i] == 1.0
        key = "both_right" if f and s else only[0] if f else only[1] if s else "neither"
        cells[key].append(i)
    result = stats.mcnemar([first[i] for i in shared], [second[i] for i in shared]).as_dict()
    result[only[0]], result[only[1]] = result.pop("teacher_only"), result.pop("student_only")
    return {**result, "cells": cells}


def _paired_block(
    model: str,
    teacher: str,
    roles: dict[str, str],
    cells: dict[tuple[str, str], list[ItemResult]],
    variants: Sequence[str],
    chance: float | None,
    seed: int,
    n_boot: int,
) -> dict[str, dict[str, Any]]:
    """Difference to the teacher, McNemar, chance-corrected retention and (students, given a base) gap
    closed, per variant."""
    base = next((label for label, role in roles.items() if role == "base"), None)
    out: dict[str, dict[str, Any]] = {}
    for v in variants:
        if not cells.get((v, model)) or not cells.get((v, teacher)):
            continue
        student_by, teacher_by = _by_item(cells[(v, model)]), _by_item(cells[(v, teacher)])
        s, t = _paired(student_by, teacher_by)
        entry: dict[str, Any] = {
            "diff": _estimate_n(stats.paired_bootstrap_diff(s, t, seed=seed, n_boot=n_boot)),
        }
        test = _mcnemar(teacher_by, student_by)
        if test is not None:
            entry["mcnemar"] = test
        if chance is None:
            entry["chance_retention"] = _estimate_dict(
                stats.Estimate(None, None, None, note="the suite has no chance score")
            )
        else:
            entry["chance_retention"] = _estimate_dict(
                stats.chance_corrected_retention(s, t, chance, seed=seed, n_boot=n_boot)
            )
        if base is not None and roles[model] == "student" and cells.get((v, base)):
            by_base = _by_item(cells[(v, base)])
            shared = sorted(set(student_by) & set(teacher_by) & set(by_base))
            entry["gap_closed"] = _estimate_dict(
                stats.gap_closed(
                    [student_by[i] for i in shared],
                    [by_base[i] for i in shared],
                    [teacher_by[i] for i in shared],
                    seed=seed,
                    n_boot=n_boot,
                )
            )
        out[v] = entry
    return out


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


class _Group:
    """A group of subtask suites (BBH) seen as one suite: items pooled, ids prefixed by subtask, so
    the group's scores weight subtasks by size (as lm-eval's bbh group does)."""

    def __init__(self, name: str, members: list[SuiteInfo]) -> None:
        self.members = members
        first = members[0]
        n_items = sum(m.n_items for m in members)
        chance = sum(m.chance * m.n_items for m in members) / max(1, n_items)
        self._info = SuiteInfo(
            name=name,
            ability=first.ability,
            description=f"{len(members)} subtasks, items pooled",
            variants=first.variants,
            baseline_variant=first.baseline_variant,
            primary_metric=first.primary_metric,
            chance=chance,
            n_items=n_items,
            chat_template=first.chat_template,
        )

    def info(self) -> SuiteInfo:
        return self._info


def _group_results(results: Sequence[ItemResult], group: str) -> list[ItemResult]:
    return [
        dataclasses.replace(r, suite=group, item_id=f"{r.suite.split(':', 1)[-1]}/{r.item_id}")
        for r in results
    ]


def summarize_suites(
    suites: Sequence[Suite],
    results: Sequence[ItemResult],
    roles: dict[str, str],
    seed: int,
    n_boot: int,
    *,
    pairwise: bool = True,
) -> dict[str, Any]:
    """Per suite; and for subtask suites (bbh:navigate, ...) also their group (bbh) over all members.

    Every McNemar p-value of the run (all suites, groups, variants, teacher-vs-model and model-vs-model)
    is then Holm-adjusted as one family.
    """
    by_suite: dict[str, list[ItemResult]] = defaultdict(list)
    for r in results:
        by_suite[r.suite].append(r)
    out: dict[str, Any] = {}
    groups: dict[str, list[SuiteInfo]] = defaultdict(list)
    for s in suites:
        info = s.info()
        if info.group:
            groups[info.group].append(info)
    for group, members in groups.items():
        pooled = _group_results([r for m in members for r in by_suite[m.name]], group)
        entry = summarize_suite(_Group(group, members), pooled, roles, seed, n_boot, pairwise=pairwise)
        entry["members"] = [m.name for m in members]
        out[group] = entry
    for s in suites:
        name = s.info().name
        out[name] = summarize_suite(s, by_suite[name], roles, seed, n_boot, pairwise=pairwise)
    apply_holm(out)
    return out
