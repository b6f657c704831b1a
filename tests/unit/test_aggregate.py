"""Per-suite summaries: the "paired" block (McNemar cells, chance-corrected retention, gap closed)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from harness import aggregate, stats
from harness.aggregate import summarize_suite, summarize_suites
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


def _results(scores: Mapping[str, Sequence[float]], variant: str = "k=0") -> list[ItemResult]:
    return [
        ItemResult("fake", variant, f"q{i}", model, "p", "o", "t", None, score)
        for model, values in scores.items()
        for i, score in enumerate(values)
    ]


def _summary(
    scores: Mapping[str, Sequence[float]], roles: dict[str, str] = ROLES, chance: float = 0.25
) -> Any:
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


class NamedSuite(FakeSuite):
    def __init__(self, name: str, ability: str = "icl", variants: tuple[str, ...] = ("k=0", "k=2")) -> None:
        super().__init__(0.25, variants)
        self._info = SuiteInfo(
            name=name,
            ability=ability,  # type: ignore[arg-type]
            description="crafted",
            variants=variants,
            baseline_variant=variants[0],
            primary_metric="exact_match",
            chance=0.25,
            n_items=0,
        )


def _rows(
    suite: str, variant: str, scores: Mapping[str, Sequence[float]], ids: list[str] | None = None
) -> list:
    return [
        ItemResult(suite, variant, ids[i] if ids else f"q{i}", model, "p", "o", "t", None, score)
        for model, values in scores.items()
        for i, score in enumerate(values)
    ]


def test_teacher_difference_has_a_paired_interval() -> None:
    teacher = [1] * 15 + [0] * 5
    student = [1] * 12 + [0] * 8
    entry = _summary({"T": teacher, "S": student}, roles={"T": "teacher", "S": "student"})["paired"]["S"][
        "k=0"
    ]
    order = sorted(range(20), key=lambda i: f"q{i}")  # items are joined on id, in id order
    diff = stats.paired_bootstrap_diff(
        [student[i] for i in order], [teacher[i] for i in order], seed=0, n_boot=200
    )
    assert entry["diff"] == {
        "value": pytest.approx(-0.15),
        "ci_low": diff.ci_low,
        "ci_high": diff.ci_high,
        "note": None,
        "n": 20,
    }


def test_instruction_level_accuracy_resamples_prompts() -> None:
    # 12 prompts with 1-3 instructions; strict verdicts agree within a prompt, loose are all followed
    sizes = [3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2]
    followed = [1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0]
    results = [
        ItemResult(
            "if",
            "default",
            f"p{i}",
            "T",
            "p",
            "o",
            "t",
            None,
            float(ok),
            details={"instructions": [{"id": "x", "strict": bool(ok), "loose": True}] * size},
        )
        for i, (size, ok) in enumerate(zip(sizes, followed, strict=True))
    ]
    suite = NamedSuite("if", "if", ("default",))
    row = summarize_suite(suite, results, {"T": "teacher"}, seed=3, n_boot=500)["variants"]["default"]["T"]
    strict = np.repeat(followed, sizes).astype(float)
    assert row["inst_level_strict"]["value"] == pytest.approx(strict.sum() / sum(sizes))  # pooled: 16 / 24
    assert row["inst_level_strict"]["value"] == pytest.approx(16 / 24)
    clustered = stats.bootstrap_mean_ci(strict, np.repeat(np.arange(12), sizes), seed=3, n_boot=500)
    naive = stats.bootstrap_mean_ci(strict, seed=3, n_boot=500)
    got = row["inst_level_strict"]
    assert (got["ci_low"], got["ci_high"]) == (clustered.ci_low, clustered.ci_high)
    assert (got["ci_low"], got["ci_high"]) != (naive.ci_low, naive.ci_high)
    assert got["n"] == 24 and got["n_prompts"] == 12
    assert row["inst_level_loose"]["value"] == 1.0
    assert row["score"] == pytest.approx(7 / 12)  # the prompt-level score is unchanged


def test_pairwise_between_non_teacher_models() -> None:
    teacher = [1] * 20
    s1 = [1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1]
    s2 = [1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1]
    roles = {"T": "teacher", "S1": "student", "S2": "student", "B": "base"}
    summary = _summary({"T": teacher, "S1": s1, "S2": s2, "B": [0] * 20}, roles=roles)
    assert set(summary["pairwise"]) == {"S1 vs S2", "S1 vs B", "S2 vs B"}
    entry = summary["pairwise"]["S1 vs S2"]["k=0"]
    assert (entry["a"], entry["b"]) == ("S1", "S2")
    assert entry["diff"]["value"] == pytest.approx((sum(s1) - sum(s2)) / 20)
    test = entry["mcnemar"]
    assert (test["both_right"], test["a_only"], test["b_only"], test["neither"]) == (10, 6, 0, 4)
    assert test["cells"]["a_only"] == ["q1", "q14", "q17", "q2", "q7", "q9"]
    tables = pytest.importorskip("statsmodels.stats.contingency_tables")
    assert test["p_value"] == pytest.approx(tables.mcnemar([[10, 6], [0, 4]], exact=True).pvalue)
    assert "teacher_only" not in test
    no_pairs = summarize_suite(FakeSuite(), _results({"T": teacher, "S1": s1}), roles, 0, 50, pairwise=False)
    assert "pairwise" not in no_pairs


def test_ranking_of_students_by_the_headline_variant() -> None:
    roles = {"T": "teacher", "A": "student", "B0": "base", "C": "student", "D": "student"}
    results = _rows(
        "fake", "k=0", {"T": [1] * 10, "A": [0] * 10, "B0": [1] * 10, "C": [1] * 10, "D": [0] * 10}
    )
    results += _rows(
        "fake",
        "k=2",
        {
            "T": [1] * 10,
            "A": [1] * 4 + [0] * 6,
            "B0": [1] * 10,
            "C": [1] * 8 + [0] * 2,
            "D": [1] * 4 + [0] * 6,
        },
    )
    summary = summarize_suite(FakeSuite(), results, roles, seed=0, n_boot=100)
    assert summary["headline_variant"] == "k=2"
    ranking = summary["ranking"]
    assert ranking["variant"] == "k=2" and ranking["metric"] == "exact_match"
    assert [(e["model"], e["rank"], e["score"]) for e in ranking["models"]] == [
        ("C", 1, 0.8),
        ("A", 2, 0.4),
        ("D", 2, 0.4),
    ]
    assert ranking["models"][0]["retention"] == pytest.approx(0.8)
    assert ranking["models"][0]["ci_low"] < 0.8 < ranking["models"][0]["ci_high"]


def test_different_item_sets_are_joined_on_id_and_reported() -> None:
    teacher = _rows("fake", "k=0", {"T": [1] * 12}, [f"q{i}" for i in range(12)])
    student = _rows("fake", "k=0", {"S": [1, 0] * 5}, [f"q{i}" for i in range(2, 12)])
    summary = summarize_suite(FakeSuite(), teacher + student, {"T": "teacher", "S": "student"}, 0, 200)
    assert summary["dropped"] == {"S": {"k=0": ["q0", "q1"]}}
    assert any("S lacks 2 of the 12 items" in w for w in summary["warnings"])
    entry = summary["paired"]["S"]["k=0"]
    assert entry["mcnemar"]["n"] == 10 and entry["diff"]["n"] == 10
    assert entry["diff"]["value"] == pytest.approx(0.5 - 1.0)  # the shared q2..q11 only
    assert summary["variants"]["k=0"]["T"]["n"] == 12  # each model's own score keeps all its items
    full = _summary({"T": [1] * 12, "S": [0] * 12}, roles={"T": "teacher", "S": "student"})
    assert full["dropped"] == {} and full["warnings"] == []


def test_small_suites_warn_but_still_report_an_interval() -> None:
    small = _summary(
        {"T": [1, 0, 1, 1, 0, 1], "S": [1, 0, 0, 1, 0, 1]}, roles={"T": "teacher", "S": "student"}
    )
    assert small["warnings"] == [
        "k=0: only 6 items per model (fewer than 10): intervals are reported but too rough to rely on"
    ]
    row = small["variants"]["k=0"]["T"]
    assert row["ci_low"] is not None and row["ci_low"] < row["score"] < row["ci_high"]


def test_notes_say_why_gap_closed_is_missing() -> None:
    no_base = _summary({"T": [1] * 10, "S": [0] * 10}, roles={"T": "teacher", "S": "student"})
    assert no_base["notes"] == [aggregate.NO_BASE_NOTE] and "--base MODEL" in aggregate.NO_BASE_NOTE
    assert "gap_closed" not in no_base["paired"]["S"]["k=0"]
    results = _rows("fake", "k=0", {"T": [1] * 10, "S": [0] * 10, "B": [0] * 10})
    results += _rows("fake", "k=2", {"T": [1] * 10, "S": [0] * 10})
    partial = summarize_suite(FakeSuite(), results, ROLES, 0, 100)
    assert partial["notes"] == ["gap closed for k=2 not computed: the base model B has no results for it"]
    assert "gap_closed" in partial["paired"]["S"]["k=0"] and "gap_closed" not in partial["paired"]["S"]["k=2"]


def test_holm_over_every_mcnemar_test_of_the_run() -> None:
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(4)
    roles = {"T": "teacher", "S1": "student", "S2": "student"}
    suites = [NamedSuite("alpha"), NamedSuite("beta")]
    results = []
    for suite, skill in (("alpha", 0.9), ("beta", 0.6)):
        for variant in ("k=0", "k=2"):
            results += _rows(
                suite,
                variant,
                {
                    "T": list((rng.random(30) < skill).astype(float)),
                    "S1": list((rng.random(30) < skill - 0.3).astype(float)),
                    "S2": list((rng.random(30) < skill - 0.1).astype(float)),
                },
            )
    summary = summarize_suites(suites, results, roles, seed=0, n_boot=100)  # type: ignore[arg-type]
    tests = [
        summary[s][block][key][v]["mcnemar"]
        for s in ("alpha", "beta")
        for block, keys in (("paired", ("S1", "S2")), ("pairwise", ("S1 vs S2",)))
        for key in keys
        for v in ("k=0", "k=2")
    ]
    assert len(tests) == 12  # 2 suites x 2 variants x (2 teacher-vs-student + 1 student pair)
    expected = multitest.multipletests([t["p_value"] for t in tests], method="holm")[1]
    np.testing.assert_allclose([t["p_holm"] for t in tests], expected, rtol=1e-12)
    assert all(t["p_holm"] >= t["p_value"] for t in tests)
    assert summary["alpha"]["multiple_comparisons"] == {
        "method": "holm",
        "family_size": 12,
        "scope": aggregate.HOLM_SCOPE_RUN,
    }
    alone = summarize_suite(NamedSuite("alpha"), [r for r in results if r.suite == "alpha"], roles, 0, 100)
    assert alone["multiple_comparisons"]["family_size"] == 6  # a suite on its own: its own family
    json.dumps(summary)
