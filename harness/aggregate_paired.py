"""Paired statistics of one suite summary: models joined on item id, per variant. Gains over the baseline
variant, retention of the teacher's score (and of its gain), each model against the teacher (difference,
McNemar, chance-corrected retention, gap closed) and each pair of non-teacher models."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness import stats
from harness.suites.base import ItemResult, SuiteInfo


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


def _paired(a: dict[str, float], b: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    shared = sorted(set(a) & set(b))
    return np.array([a[i] for i in shared]), np.array([b[i] for i in shared])


def _gains(
    cells: dict[tuple[str, str], list[ItemResult]],
    roles: dict[str, str],
    info: SuiteInfo,
    seed: int,
    n_boot: int,
) -> dict[str, dict[str, Any]]:
    """{model: {variant: score - the baseline variant's score}}, paired on items (every model)."""
    gain: dict[str, dict[str, Any]] = {}
    base_variant = info.baseline_variant
    for model in roles:
        gain[model] = {}
        for v in info.variants:
            if v == base_variant or not cells.get((v, model)) or not cells.get((base_variant, model)):
                continue
            hi, lo = _paired(_by_item(cells[(v, model)]), _by_item(cells[(base_variant, model)]))
            gain[model][v] = _estimate_dict(stats.paired_bootstrap_diff(hi, lo, seed=seed, n_boot=n_boot))
    return gain


def _retentions(
    cells: dict[tuple[str, str], list[ItemResult]],
    roles: dict[str, str],
    info: SuiteInfo,
    teacher: str,
    seed: int,
    n_boot: int,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per non-teacher model and variant: retention (model / teacher) and retention of the gain over
    the baseline variant, both paired on items."""
    gain_retention: dict[str, dict[str, Any]] = {}
    retention: dict[str, dict[str, Any]] = {}
    base_variant = info.baseline_variant
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
    return retention, gain_retention


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
