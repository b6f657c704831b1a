"""Per-item results -> per-suite summaries (scores with CIs, gains, retention) for metrics.json.

Paired statistics join models on item id: an item one model lacks is left out of every comparison with
that model and listed under the summary's "dropped". Every McNemar p-value of a run is one family for
Holm's correction (summarize_suites), since a reader scans them all for "significant" differences.
Per-variant rows and suite-level views are in harness.aggregate_variants, paired statistics in
harness.aggregate_paired.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from harness import stats
from harness.aggregate_paired import _gains, _paired_block, _pairwise, _retentions
from harness.aggregate_variants import (
    _add_lm_eval_aggregates,
    _draw_spread,
    _HasInfo,
    _headline_variant,
    _instruction_types,
    _item_coverage,
    _ranking,
    _small_sample_warnings,
    _variant_row,
)
from harness.suites.base import ItemResult, Suite, SuiteInfo

HOLM_SCOPE_RUN = (
    "every McNemar test in this run: the teacher vs each other model and each pair of non-teacher "
    "models, over all suites (a group and its subtasks included) and variants"
)
HOLM_SCOPE_SUITE = "every McNemar test in this suite summary (teacher vs model, model vs model, all variants)"
NO_BASE_NOTE = (
    "gap closed not computed: no base model in this run (pass --base MODEL to measure the share of the "
    "base-to-teacher gap each student closed)"
)


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
    cells = _cells(results)
    variants = {
        v: {m: _variant_row(cells[(v, m)], seed, n_boot) for m in roles if cells.get((v, m))}
        for v in info.variants
    }
    _add_lm_eval_aggregates(suite, results, variants)
    teacher = next(label for label, role in roles.items() if role == "teacher")
    gain = _gains(cells, roles, info, seed, n_boot)
    retention, gain_retention = _retentions(cells, roles, info, teacher, seed, n_boot)
    paired = {
        model: _paired_block(model, teacher, roles, cells, info.variants, info.chance, seed, n_boot)
        for model, role in roles.items()
        if role != "teacher"
    }
    dropped, warnings = _item_coverage(cells, roles, info.variants)
    warnings += _small_sample_warnings(variants)
    headline = _headline_variant(info, [v for v in info.variants if variants[v]])
    out = {
        **_suite_fields(info),
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
    _add_optional(out, info, cells, results, roles, seed, n_boot)
    apply_holm({info.name: out}, HOLM_SCOPE_SUITE)
    return out


def _cells(results: Sequence[ItemResult]) -> dict[tuple[str, str], list[ItemResult]]:
    """Results by (variant, model)."""
    cells: dict[tuple[str, str], list[ItemResult]] = defaultdict(list)
    for r in results:
        cells[(r.variant, r.model)].append(r)
    return cells


def _suite_fields(info: SuiteInfo) -> dict[str, Any]:
    """What a summary repeats of the suite's own description."""
    return {
        "ability": info.ability,
        "description": info.description,
        "primary_metric": info.primary_metric,
        "chance": info.chance,
        "baseline_variant": info.baseline_variant,
        "n_items": info.n_items,
        "chat_template": info.chat_template,
        "group": info.group,
    }


def _add_optional(
    out: dict[str, Any],
    info: SuiteInfo,
    cells: dict[tuple[str, str], list[ItemResult]],
    results: Sequence[ItemResult],
    roles: dict[str, str],
    seed: int,
    n_boot: int,
) -> None:
    """The blocks only some suites have: ICL draw spreads and IFEval instruction types."""
    if info.draws:
        out["draws"] = _draw_spread(info.draws, cells, roles, seed, n_boot)
    if info.ability == "if":
        out["instruction_types"] = _instruction_types(results, roles)


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
