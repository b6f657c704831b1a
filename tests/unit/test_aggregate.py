"""Per-suite summaries: the "paired" block (McNemar cells, chance-corrected retention, gap closed)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness import stats
from harness.aggregate import summarize_suite
from harness.suites.base import ItemResult, SuiteInfo

ROLES = {"T": "teacher", "B": "base", "S": "student"}


class FakeSuite:
    def __init__(self, chance: float = 0.25, variants: tuple[str, ...] = ("k=0", "k=2")) -> None:
        self._info = SuiteInfo(
            name="fake",
            ability="icl",
            description="crafted",
            variants=variants,
            baseline_variant=variants[0],
            primary_metric="exact_match",
            chance=chance,
            n_items=0,
        )

    def info(self) -> SuiteInfo:
        return self._info


def _results(scores: dict[str, list[float]], variant: str = "k=0") -> list[ItemResult]:
    return [
        ItemResult("fake", variant, f"q{i}", model, "p", "o", "t", None, score)
        for model, values in scores.items()
        for i, score in enumerate(values)
    ]


def _summary(scores: dict[str, list[float]], roles: dict[str, str] = ROLES, chance: float = 0.25) -> Any:
    summary = summarize_suite(FakeSuite(chance), _results(scores), roles, seed=0, n_boot=200)
    json.dumps(summary)  # metrics.json must be able to hold it
    return summary


def test_mcnemar_cells_hold_the_right_item_ids() -> None:
    teacher = [1, 1, 1, 0, 0, 1, 0, 1]
    student = [1, 0, 1, 1, 0, 0, 0, 1]
    summary = _summary({"T": teacher, "B": [0] * 8, "S": student})
    test = summary["paired"]["S"]["k=0"]["mcnemar"]
    assert test["cells"] == {
        "both_right": ["q0", "q2", "q7"],
        "teacher_only": ["q1", "q5"],
        "student_only": ["q3"],
        "neither": ["q4", "q6"],
    }
    assert (test["both_right"], test["teacher_only"], test["student_only"], test["neither"]) == (3, 2, 1, 2)
    assert test["n"] == 8
    assert test["p_value"] == pytest.approx(stats.mcnemar(teacher, student).p_value)
    assert "k=2" not in summary["paired"]["S"]  # no results for that variant
    assert "T" not in summary["paired"] and set(summary["paired"]) == {"B", "S"}
    assert set(summary) >= {"variants", "gain", "retention", "gain_retention"}  # old keys kept


def test_mcnemar_omitted_for_graded_scores() -> None:
    summary = _summary({"T": [1, 0.5, 1, 0], "S": [1, 0, 0.5, 0]}, roles={"T": "teacher", "S": "student"})
    entry = summary["paired"]["S"]["k=0"]
    assert "mcnemar" not in entry
    assert "gap_closed" not in entry  # no base model in the run
    assert entry["chance_retention"]["value"] is not None


def test_gap_closed_value_for_students_only() -> None:
    # T = 0.8, B = 0.2, S = 0.65: the student closed (0.65 - 0.2) / (0.8 - 0.2) = 0.75 of the gap
    teacher = [1] * 16 + [0] * 4
    base = [1] * 4 + [0] * 16
    student = [1] * 13 + [0] * 7
    summary = _summary({"T": teacher, "B": base, "S": student})
    gap = summary["paired"]["S"]["k=0"]["gap_closed"]
    assert gap["value"] == pytest.approx(0.75)
    assert gap["ci_low"] < 0.75 < gap["ci_high"] and gap["note"] is None
    assert set(gap) == {"value", "ci_low", "ci_high", "note"}
    assert "gap_closed" not in summary["paired"]["B"]["k=0"]  # the base is not a student


def test_chance_corrected_retention_value_and_undefined_at_chance() -> None:
    teacher = [1] * 15 + [0] * 5  # 0.75
    student = [1] * 10 + [0] * 10  # 0.5
    summary = _summary({"T": teacher, "S": student}, roles={"T": "teacher", "S": "student"}, chance=0.25)
    assert summary["paired"]["S"]["k=0"]["chance_retention"]["value"] == pytest.approx(0.5)
    at_chance = _summary({"T": teacher, "S": student}, roles={"T": "teacher", "S": "student"}, chance=0.75)
    estimate = at_chance["paired"]["S"]["k=0"]["chance_retention"]
    assert estimate["value"] is None and estimate["ci_low"] is None
    assert "not above chance" in estimate["note"]
