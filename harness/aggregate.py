"""Per-item results -> per-suite summaries (scores with CIs, gains, retention) for metrics.json."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from harness import stats
from harness.suites.base import ItemResult, Suite, SuiteInfo


def _estimate_dict(estimate: Any) -> dict[str, Any]:
    return {
        "value": estimate.value,
        "ci_low": estimate.ci_low,
        "ci_high": estimate.ci_high,
        "note": getattr(estimate, "note", None),
    }


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
    return row


def _paired(a: dict[str, float], b: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    shared = sorted(set(a) & set(b))
    return np.array([a[i] for i in shared]), np.array([b[i] for i in shared])


class _HasInfo(Protocol):
    def info(self) -> SuiteInfo: ...


def summarize_suite(
    suite: _HasInfo, results: Sequence[ItemResult], roles: dict[str, str], seed: int, n_boot: int
) -> dict[str, Any]:
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
    }
    if info.draws:
        out["draws"] = _draw_spread(info.draws, cells, roles, seed, n_boot)
    if info.ability == "if":
        out["instruction_types"] = _instruction_types(results, roles)
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


def _mcnemar(student: dict[str, float], teacher: dict[str, float]) -> dict[str, Any] | None:
    """McNemar's test and the item ids in each cell of the 2x2 table; None unless every score is 0/1.

    Items where either score is NaN are left out, as stats.mcnemar does.
    """
    shared = sorted(
        i for i in set(student) & set(teacher) if not (np.isnan(student[i]) or np.isnan(teacher[i]))
    )
    if not shared or any(student[i] not in (0.0, 1.0) or teacher[i] not in (0.0, 1.0) for i in shared):
        return None
    cells: dict[str, list[str]] = {"both_right": [], "teacher_only": [], "student_only": [], "neither": []}
    for i in shared:
        t, s = teacher[i] == 1.0, student[i] == 1.0
        key = "both_right" if t and s else "teacher_only" if t else "student_only" if s else "neither"
        cells[key].append(i)
    result = stats.mcnemar([teacher[i] for i in shared], [student[i] for i in shared]).as_dict()
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
    """McNemar, chance-corrected retention and (for students, given a base) gap closed, per variant."""
    base = next((label for label, role in roles.items() if role == "base"), None)
    out: dict[str, dict[str, Any]] = {}
    for v in variants:
        if not cells.get((v, model)) or not cells.get((v, teacher)):
            continue
        student_by, teacher_by = _by_item(cells[(v, model)]), _by_item(cells[(v, teacher)])
        s, t = _paired(student_by, teacher_by)
        entry: dict[str, Any] = {}
        test = _mcnemar(student_by, teacher_by)
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
    suites: Sequence[Suite], results: Sequence[ItemResult], roles: dict[str, str], seed: int, n_boot: int
) -> dict[str, Any]:
    """Per suite; and for subtask suites (bbh:navigate, ...) also their group (bbh) over all members."""
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
        entry = summarize_suite(_Group(group, members), pooled, roles, seed, n_boot)
        entry["members"] = [m.name for m in members]
        out[group] = entry
    for s in suites:
        out[s.info().name] = summarize_suite(s, by_suite[s.info().name], roles, seed, n_boot)
    return out
