"""ECE against values computed by hand, and the multiple-choice glue over item results."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from harness.errors import HarnessError
from harness.metrics.calibration import (
    choice_confidence,
    expected_calibration_error,
    multiple_choice_calibration,
    suite_calibration,
)


def test_ece_hand_computed_with_ten_bins() -> None:
    # bins (0.1 wide): 0.25 -> bin 2; 0.3 -> bin 2 (right-closed); 0.55, 0.6 -> bin 5; 0.95, 1.0 -> bin 9
    confidence = [0.25, 0.3, 0.55, 0.6, 0.95, 1.0]
    correct = [0, 1, 1, 1, 1, 0]
    # bin 2: conf 0.275, acc 0.5, gap 0.225; bin 5: conf 0.575, acc 1.0, gap 0.425; bin 9: conf 0.975,
    # acc 0.5, gap 0.475. ECE = (2 * 0.225 + 2 * 0.425 + 2 * 0.475) / 6 = 0.375; MCE = 0.475
    out = expected_calibration_error(confidence, correct, n_bins=10)
    assert out["ece"] == pytest.approx(0.375, abs=1e-12)
    assert out["mce"] == pytest.approx(0.475, abs=1e-12)
    assert out["n"] == 6 and out["accuracy"] == pytest.approx(4 / 6)
    assert out["mean_confidence"] == pytest.approx(sum(confidence) / 6)
    filled = {i: b for i, b in enumerate(out["bins"]) if b["n"]}
    assert sorted(filled) == [2, 5, 9]
    assert filled[2]["confidence"] == pytest.approx(0.275) and filled[2]["accuracy"] == 0.5
    assert filled[5]["lo"] == pytest.approx(0.5) and filled[5]["hi"] == pytest.approx(0.6)
    assert out["bins"][0]["confidence"] is None and len(out["bins"]) == 10


def test_ece_default_fifteen_bins_and_edge_cases() -> None:
    # 0.5 -> bin ceil(7.5) - 1 = 7; 2/3 -> bin 9 ((0.6, 0.667] closed on the right); 0.0 -> bin 0
    out = expected_calibration_error([0.5, 2 / 3, 0.0], [1, 1, 0])
    assert out["n_bins"] == 15
    assert [i for i, b in enumerate(out["bins"]) if b["n"]] == [0, 7, 9]
    assert out["ece"] == pytest.approx((0.5 + 1 / 3 + 0.0) / 3)
    perfect = expected_calibration_error([1.0, 1.0], [1, 1])
    assert perfect["ece"] == 0.0 and perfect["mce"] == 0.0
    empty = expected_calibration_error([], [])
    assert empty["ece"] is None and empty["n"] == 0
    with pytest.raises(HarnessError, match="in \\[0, 1\\]"):
        expected_calibration_error([1.2], [1])
    with pytest.raises(HarnessError, match="0 or 1"):
        expected_calibration_error([0.5], [0.5])
    with pytest.raises(HarnessError, match="bins"):
        expected_calibration_error([0.5], [1], n_bins=0)


def test_choice_confidence_is_the_softmax_of_the_argmax() -> None:
    best, conf = choice_confidence([-1.0, -0.2, -3.0])
    expected = math.exp(-0.2) / (math.exp(-1.0) + math.exp(-0.2) + math.exp(-3.0))
    assert best == 1 and conf == pytest.approx(expected, rel=1e-12)
    assert choice_confidence([-1e4, -1e4 - 50]) == (0, pytest.approx(1.0))  # stable for huge magnitudes
    assert choice_confidence([-2.0, -2.0]) == (0, pytest.approx(0.5))  # ties: the first, as lm-eval
    assert choice_confidence([float("-inf"), -1.0]) == (1, 1.0)
    with pytest.raises(HarnessError):
        choice_confidence([float("nan"), -1.0])


def test_multiple_choice_calibration_two_items() -> None:
    # item 1: p = (e^-0.1, e^-2) normalised -> conf 0.8699, right; item 2: conf 0.5 exactly (tie), wrong
    out = multiple_choice_calibration([[-0.1, -2.0], [-1.0, -1.0]], [True, False], n_bins=15)
    c1 = 1 / (1 + math.exp(-1.9))
    assert out["ece"] == pytest.approx(((1 - c1) + 0.5) / 2, rel=1e-12)


@dataclass
class _Item:
    suite: str
    variant: str
    model: str
    output: str
    target: str
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def test_suite_calibration_groups_items_and_skips_non_mc() -> None:
    items = [
        _Item("mc", "k=0", "t", "yes", "yes", {"acc,none": 1.0}, {"option_logprobs": [-0.1, -2.0]}),
        _Item("mc", "k=0", "t", "yes", "no", {"acc,none": 0.0}, {"option_logprobs": [-0.5, -0.9]}),
        _Item("mc", "k=0", "s", "no", "no", {}, {"option_logprobs": [-3.0, -0.1]}),  # no acc: text compare
        _Item("gen", "cot", "t", "6", "6", {"exact_match,none": 1.0}),  # generate item: ignored
        _Item("ll", "k=0", "t", "x", "x", {}, {"option_logprobs": [-1.0]}),  # one option: not MC
    ]
    out = suite_calibration(items, n_bins=10)
    assert out["skipped"] is None and set(out["suites"]) == {"mc"}
    teacher = out["suites"]["mc"]["k=0"]["t"]
    assert teacher["n"] == 2 and teacher["accuracy"] == 0.5
    student = out["suites"]["mc"]["k=0"]["s"]
    assert student["accuracy"] == 1.0 and student["n"] == 1
    none = suite_calibration(items[3:])
    assert none["suites"] == {} and "multiple choice" in none["skipped"]


def test_calibration_view_rows_and_reliability_points() -> None:
    from harness.report.figures_kd import REL_SIZE, calibration_view

    stats = expected_calibration_error([0.25, 0.95, 1.0], [0, 1, 0], n_bins=10)
    record = {"n_bins": 10, "suites": {"mc": {"k=0": {"s": stats, "t": stats}}}, "skipped": None}
    models = [{"label": "t", "role": "teacher"}, {"label": "s", "role": "student"}]
    view = calibration_view(record, models)
    assert view["present"] and not view["skipped"]
    assert [c["model"] for c in view["rows"][0]["cells"]] == ["t", "s"]  # the run's model order
    assert view["rows"][0]["cells"][0]["ece"] == f"{stats['ece']:.3f}"
    chart = view["charts"][0]["chart"]
    points = chart["lines"][0]["points"]
    assert len(points) == 2  # two non-empty bins
    assert points[0]["x"] == pytest.approx(chart["x0"] + 0.25 * REL_SIZE, abs=0.1)
    assert points[0]["y"] == pytest.approx(chart["y0"] + REL_SIZE, abs=0.1)  # accuracy 0 at the bottom
    empty = calibration_view({"suites": {}, "skipped": "no multiple choice"}, models)
    assert empty["skipped"] == "no multiple choice" and empty["rows"] == []
