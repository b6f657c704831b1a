"""The regression gate on records, in both modes (non-inferiority, the default, and regression), and the
`harness regress` command. The statistics themselves: test_regress_stats.py.

Records are written with the real write_record (small hand-made suites), so the gate reads them as it
reads a compare's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import norm

from harness.cli import build_parser, main
from harness.errors import HarnessError
from harness.regress import (
    format_verdict,
    gate,
    margin_for,
    ni_items_needed,
    paired_binary_test,
    parse_margins,
    sized_margin,
    suite_series,
)
from harness.store.record import read_record, write_record
from harness.suites.base import ItemResult
from tests.unit.test_regress_stats import Z95, _tango_reference

MANIFEST_MODELS = {"teacher": {"role": "teacher", "spec": "hf:/t", "info": {"fingerprint": "t0"}}}


def _means(seqs: Sequence[tuple[float, int]]) -> dict[str, float]:
    tokens = sum(n for _, n in seqs)
    return {"forward_kl": sum(s for s, _ in seqs) / tokens, "top1_agree": 0.5}


def _summary(mean: float) -> dict[str, float]:
    return {"mean": mean, "ci_low": mean * 0.9, "ci_high": mean * 1.1}


def make_record(
    run_dir: Path,
    scores: dict[str, Sequence[float]],
    *,
    suite: str = "arith",
    kd: dict[str, Sequence[tuple[float, int]]] | None = None,
    prompts: Sequence[str] | None = None,
    instructions: dict[str, Sequence[Sequence[bool]]] | None = None,
    extra_suites: dict[str, dict[str, Sequence[float]]] | None = None,
) -> Path:
    """A record whose models (label -> per-item 0/1 or fractional scores) ran `suite` at k=0 and k=2.

    kd: label -> per-sequence (forward KL sum, tokens); top-1 agreement sums are tokens / 2.
    """
    items: list[ItemResult] = []
    summaries: dict[str, Any] = {}
    for name, per_model in {suite: scores, **(extra_suites or {})}.items():
        for model, values in per_model.items():
            for i, score in enumerate(values):
                details = {}
                if instructions and model in instructions and name == suite:
                    details["instructions"] = [{"strict": s, "loose": s} for s in instructions[model][i]]
                for variant in ("k=0", "k=2"):
                    prompt = prompts[i] if prompts is not None else f"{name} q{i}"
                    items.append(
                        ItemResult(
                            suite=name,
                            variant=variant,
                            item_id=f"i{i}",
                            model=model,
                            prompt=prompt,
                            output="x",
                            target="y",
                            extracted="x",
                            score=float(score),
                            details=details,
                        )
                    )
        summaries[name] = {
            "ability": "if" if instructions else "icl",
            "primary_metric": "exact_match,first-word",
            "baseline_variant": "k=0",
            "headline_variant": "k=2",
            "variants": {
                v: {m: {"score": float(np.mean(s))} for m, s in per_model.items()} for v in ("k=0", "k=2")
            },
        }
    kd_block = {}
    for model, seqs in (kd or {}).items():
        kd_block[model] = {
            "skipped": None,
            "temperatures": {"1": {name: _summary(mean) for name, mean in _means(seqs).items()}},
            "per_sequence": {
                "t": "1",
                "ids": [f"kd-{i}" for i in range(len(seqs))],
                "keys": [f"k{i}" for i in range(len(seqs))],
                "forward_kl": {"sums": [s for s, _ in seqs], "counts": [n for _, n in seqs]},
                "top1_agree": {"sums": [n / 2 for _, n in seqs], "counts": [n for _, n in seqs]},
            },
        }
    models = dict(MANIFEST_MODELS)
    for model in scores:
        if model != "teacher":
            models[model] = {
                "role": "student",
                "spec": f"hf:/{model}",
                "info": {"fingerprint": f"fp-{model}"},
            }
    write_record(
        run_dir,
        {"models": models, "created": "2026-11-24T00:00:00Z"},
        items,
        {"suites": summaries, "kd": kd_block},
    )
    return run_dir


# The 2-point defaults as set margins: the tests of the statistics below use them on purpose at sizes
# where the non-inferiority mode would widen a default (test_default_margins_are_sized_to_the_items).
FIXED = {"score": "0.02", "inst_level_strict": "0.02"}


def _pair(tmp_path: Path, base: Sequence[float], cur: Sequence[float], **kw: Any) -> tuple[Any, Any]:
    """Records of a baseline and a current student (the teacher right everywhere), read back."""
    a = make_record(tmp_path / "a", {"teacher": [1] * len(base), "student": base}, **kw)
    b = make_record(tmp_path / "b", {"teacher": [1] * len(cur), "student": cur}, **kw)
    return read_record(a), read_record(b)


# -- the gate on records: both modes ------------------------------------------------------------------------
def test_obvious_regression_fails_in_both_modes_and_names_the_metric(tmp_path: Path) -> None:
    base, cur = _pair(tmp_path, [1] * 36 + [0] * 4, [1] * 10 + [0] * 30)
    for test in ("non-inferiority", "regression"):
        verdict = gate(base, cur, test=test, margins=FIXED)
        assert verdict.verdict == "regression" and verdict.exit_code == 1 and verdict.test == test
        (metric,) = verdict.metrics
        assert (metric.suite, metric.variant, metric.metric, metric.model) == (
            "arith",
            "k=2",
            "exact_match,first-word",
            "student",
        )
        assert metric.baseline == 0.9 and metric.current == 0.25 and metric.diff == pytest.approx(-0.65)
        assert metric.regressed and metric.worse and metric.n == 40 and metric.margin == 0.02
        assert metric.p_worse < 1e-6 and metric.test == test
        assert metric.status().startswith("regressed (worse than the margin, p=")
    assert verdict.metrics[0].p_holm < 1e-6  # regression mode: the worse tail decides
    ni = gate(base, cur, margins=FIXED).metrics[0]
    assert ni.p_value == pytest.approx(1 - ni.p_worse) and ni.p_holm > 0.99


def test_identical_outputs_pass_with_enough_items_and_are_not_shown_with_few(tmp_path: Path) -> None:
    """Zero discordant pairs: Tango's Z = -sqrt(n m / (1 - m)). 200 agreeing items show a 2-point
    non-inferiority (p 0.022); 20 do not (p 0.26), which the regression mode would pass."""
    base, cur = _pair(tmp_path / "many", [1, 0] * 100, [1, 0] * 100)
    metric = gate(base, cur, margins=FIXED).metrics[0]
    assert not metric.regressed and metric.diff == 0.0
    assert metric.p_holm == pytest.approx(norm.cdf(-math.sqrt(200 * 0.02 / 0.98)), rel=1e-9)
    assert metric.drop_upper == pytest.approx(Z95**2 / (200 + Z95**2), rel=1e-6)
    assert metric.status() == "non-inferior (95% upper bound of the drop 0.01335 < margin)"
    base, cur = _pair(tmp_path / "few", [1, 0] * 10, [1, 0] * 10)
    verdict = gate(base, cur, margins=FIXED)
    metric = verdict.metrics[0]
    assert verdict.exit_code == 1 and metric.regressed and not metric.worse
    assert metric.p_holm == pytest.approx(0.2615, abs=1e-4) and metric.p_worse > 0.7
    assert metric.status().startswith(
        "not shown non-inferior (n=20, the CI of the drop reaches past the margin"
    )
    assert "(0 worse than the margin, 1 not shown non-inferior)" in format_verdict(verdict)
    old = gate(base, cur, test="regression")
    assert old.exit_code == 0 and old.metrics[0].p_value == pytest.approx(1 - metric.p_value, rel=1e-12)


def test_a_drop_within_the_margin_passes_with_many_items_and_not_with_few(tmp_path: Path) -> None:
    """A 1-point drop against the 2-point margin: 1,000 items show it non-inferior; 100 items do not
    (the regression mode passes them: nothing shows the drop exceeds 2 points)."""
    base, cur = _pair(tmp_path / "many", [1] * 1000, [0] * 10 + [1] * 990)
    metric = gate(base, cur, margins=FIXED).metrics[0]
    assert metric.diff == pytest.approx(-0.01) and not metric.regressed
    assert metric.p_value == pytest.approx(norm.cdf(_tango_reference(10, 0, 1000, 0.02)), rel=1e-6)
    assert metric.p_value == pytest.approx(0.0119, abs=1e-4) and metric.drop_upper < 0.02
    base, cur = _pair(tmp_path / "few", [1] * 100, [0] + [1] * 99)
    few = gate(base, cur, margins=FIXED)
    assert few.exit_code == 1 and few.metrics[0].p_value == pytest.approx(0.2375, abs=1e-4)
    assert few.metrics[0].drop_upper > 0.02 and not few.metrics[0].worse
    old = gate(base, cur, test="regression")
    assert old.exit_code == 0 and old.metrics[0].p_value == pytest.approx(1 - 0.2375, abs=1e-4)


def test_holm_across_metrics_and_student_pairing_by_single_label(tmp_path: Path) -> None:
    """Regression mode, two suites: one regressed clearly, one a little. Holm doubles the smaller p; the
    baseline's only student is paired with the current run's only student although their labels differ."""
    base = make_record(
        tmp_path / "a",
        {"teacher": [1] * 60, "s-old": [1] * 60},
        extra_suites={"words": {"teacher": [1] * 60, "s-old": [1] * 60}},
    )
    cur = make_record(
        tmp_path / "b",
        {"teacher": [1] * 60, "s-new": [0] * 30 + [1] * 30},
        extra_suites={"words": {"teacher": [1] * 60, "s-new": [0] * 4 + [1] * 56}},
    )
    verdict = gate(read_record(base), read_record(cur), test="regression")
    by_suite = {m.suite: m for m in verdict.metrics}
    ps = sorted(m.p_value for m in verdict.metrics)
    assert by_suite["arith"].p_holm == pytest.approx(2 * ps[0])
    assert by_suite["words"].p_holm == pytest.approx(max(ps[1], 2 * ps[0]))
    assert by_suite["arith"].regressed and by_suite["arith"].model == "s-new"
    assert any("s-old" in note for note in verdict.notes)


def test_holm_in_the_non_inferiority_mode(tmp_path: Path) -> None:
    """Two suites of agreeing items, p 0.030 (174 items) and 0.040 (151): each alone shows non-
    inferiority at 0.05, but Holm (statsmodels' multipletests) needs 0.025 for the smaller: both fail,
    their upper bounds inside the margin; with alpha 0.1 both pass."""
    from statsmodels.stats.multitest import multipletests

    runs = []
    for name in ("a", "b"):
        scores = {"teacher": [1] * 174, "student": [1] * 174}
        extra = {"words": {"teacher": [1] * 151, "student": [1] * 151}}
        runs.append(read_record(make_record(tmp_path / name, scores, extra_suites=extra)))
    verdict = gate(*runs, margins=FIXED)
    by_suite = {m.suite: m for m in verdict.metrics}
    assert by_suite["arith"].p_value == pytest.approx(0.0298, abs=1e-4)
    assert by_suite["words"].p_value == pytest.approx(0.0396, abs=1e-4)
    reference = multipletests([m.p_value for m in verdict.metrics], method="holm")[1]
    assert [m.p_holm for m in verdict.metrics] == pytest.approx(list(reference), rel=1e-12)
    assert verdict.exit_code == 1 and all(m.regressed and m.drop_upper < m.margin for m in verdict.metrics)
    assert "is within the margin, but not after Holm's correction" in verdict.metrics[0].status()
    assert gate(*runs, alpha=0.1, margins=FIXED).exit_code == 0


def test_kd_metrics_are_gated_per_sequence(tmp_path: Path) -> None:
    """Identical sequences: every bootstrap drop is 0, non-inferior at p = 1/(B + 1); doubled KL is worse."""
    seqs = [(0.3 * n, n) for n in (10, 12, 8, 15, 9, 11, 14, 10)]
    worse = [(s * 2.0, n) for s, n in seqs]
    scores = {"teacher": [1] * 200, "student": [1] * 200}
    base = make_record(tmp_path / "a", scores, kd={"student": seqs})
    same = make_record(tmp_path / "b", scores, kd={"student": seqs})
    bad = make_record(tmp_path / "c", scores, kd={"student": worse})
    unchanged = gate(read_record(base), read_record(same))
    assert unchanged.verdict == "pass"
    kl = next(m for m in unchanged.metrics if m.metric == "forward_kl")
    assert kl.p_value == pytest.approx(1 / 4001) and kl.drop_upper == 0.0
    for test in ("non-inferiority", "regression"):
        verdict = gate(read_record(base), read_record(bad), test=test)
        kl = next(m for m in verdict.metrics if m.metric == "forward_kl")
        assert (
            kl.baseline == pytest.approx(0.3) and kl.current == pytest.approx(0.6) and not kl.higher_is_better
        )
        assert (
            kl.margin == pytest.approx(0.03) and kl.regressed and kl.worse and kl.variant == "T=1 off-policy"
        )
        assert not next(m for m in verdict.metrics if m.metric == "top1_agree").regressed


def test_if_instruction_level_is_clustered_by_prompt(tmp_path: Path) -> None:
    inst = {"teacher": [[True, True]] * 30, "student": [[True, True, True]] * 30}
    lost = {
        "teacher": [[True, True]] * 30,
        "student": [[False, False, True]] * 10 + [[True, True, True]] * 20,
    }
    base = make_record(tmp_path / "a", {"teacher": [1] * 30, "student": [1] * 30}, instructions=inst)
    cur = make_record(
        tmp_path / "b", {"teacher": [1] * 30, "student": [0] * 10 + [1] * 20}, instructions=lost
    )
    verdict = gate(read_record(base), read_record(cur), margins=FIXED)
    inst_row = next(m for m in verdict.metrics if m.metric == "inst_level_strict")
    assert inst_row.current == pytest.approx(70 / 90) and inst_row.regressed and inst_row.n == 30
    assert inst_row.worse and "bootstrap over units (30 groups)" in inst_row.method


def test_items_sharing_a_prompt_are_resampled_as_clusters(tmp_path: Path) -> None:
    prompts = [f"p{i // 4}" for i in range(40)]
    base = make_record(tmp_path / "a", {"teacher": [1] * 40, "student": [1] * 40}, prompts=prompts)
    cur = make_record(tmp_path / "b", {"teacher": [1] * 40, "student": [0] * 4 + [1] * 36}, prompts=prompts)
    series = suite_series(read_record(base), ["student"])[0]
    assert len(set(series.clusters.values())) == 10 and not series.binary
    verdict = gate(read_record(base), read_record(cur))
    metric = verdict.metrics[0]
    assert "clusters (10 groups)" in metric.method and metric.diff == pytest.approx(-0.1)


def test_margins_resolve_most_specific_first(tmp_path: Path) -> None:
    series = suite_series(
        read_record(make_record(tmp_path / "a", {"teacher": [1], "student": [1]})), ["student"]
    )[0]
    assert margin_for(series, 0.5, {}) == 0.02
    assert margin_for(series, 0.5, {"score": "0.05"}) == 0.05
    assert margin_for(series, 0.5, {"score": "0.05", "exact_match": "10%"}) == pytest.approx(0.05)
    assert margin_for(series, 0.8, {"exact_match": "10%", "arith": "0.2"}) == 0.2
    assert margin_for(series, 0.8, {"arith/exact_match": "0.3", "arith": "0.2"}) == 0.3
    with pytest.raises(HarnessError, match="METRIC=VALUE"):
        parse_margins(["0.2"])
    with pytest.raises(HarnessError, match="percentage"):
        parse_margins(["score=lots"])
    with pytest.raises(HarnessError, match="non-inferiority or regression"):
        gate(read_record(tmp_path / "a"), read_record(tmp_path / "a"), test="superiority")


# -- the command ------------------------------------------------------------------------------------------
def test_the_test_flag_of_regress_and_compare() -> None:
    parse = build_parser().parse_args
    assert parse(["regress", "--baseline", "a", "--current", "b"]).test == "non-inferiority"
    assert (
        parse(["regress", "--baseline", "a", "--current", "b", "--test", "regression"]).test == "regression"
    )
    assert parse(["compare", "mock:t", "mock:s", "--baseline", "a"]).test == "non-inferiority"
    assert parse(["compare", "mock:t", "mock:s", "--test", "regression"]).test == "regression"
    with pytest.raises(SystemExit) as info:
        parse(["regress", "--baseline", "a", "--current", "b", "--test", "equivalence"])
    assert info.value.code == 2


def test_regress_command_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = make_record(tmp_path / "a", {"teacher": [1] * 40, "student": [1] * 40})
    same = make_record(tmp_path / "b", {"teacher": [1] * 40, "student": [1] * 40})
    bad = make_record(tmp_path / "c", {"teacher": [1] * 40, "student": [0] * 20 + [1] * 20})
    assert main(["regress", "--baseline", str(base), "--current", str(same), "--test", "regression"]) == 0
    assert "verdict: pass (no metric dropped beyond its margin)" in capsys.readouterr().out
    # the default margin is widened to what 40 items support (0.16): an identical rerun passes
    assert main(["regress", "--baseline", str(base), "--current", str(same)]) == 0
    printed = capsys.readouterr().out
    assert "margin 0.16 sized, n 40" in printed and "default margin 0.02 widened to 0.16" in printed
    fixed = ["--margin", "score=0.02"]  # set by hand: 40 agreeing items cannot show 2 points
    assert main(["regress", "--baseline", str(base), "--current", str(same), *fixed]) == 1
    printed = capsys.readouterr().out
    assert "not shown non-inferior (n=40, the CI of the drop reaches past the margin" in printed
    assert "margin 0.02 (--margin score=0.02) needs about 1,578 items" in printed
    assert main(["regress", "--baseline", str(base), "--current", str(same), "--margin", "score=0.07"]) == 0
    assert "verdict: pass (every metric shown non-inferior" in capsys.readouterr().out
    out = tmp_path / "verdict.json"
    assert main(["regress", "--baseline", str(base), "--current", str(bad), "--json", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "REGRESSION in 1 metric(s): arith/exact_match,first-word [student]" in printed
    assert "regressed (worse than the margin, p=" in printed and "H0: drop >= margin" in printed
    written = json.loads((bad / "regress.json").read_text())
    assert list(written) == ["baseline", "current", "verdict", "metrics"]
    assert written["verdict"] == "regression"
    keys = "suite variant metric model baseline current diff margin p_value p_holm regressed"
    fields = [*keys.split(), "test", "p_worse", "drop_upper", "status", "margin_source"]
    assert list(written["metrics"][0]) == fields and written["metrics"][0]["margin_source"] == "sized"
    row = written["metrics"][0]
    assert row["test"] == "non-inferiority" and row["p_worse"] < 1e-3 and 0.5 < row["drop_upper"] < 0.7
    details = json.loads(out.read_text())
    assert details["exit_code"] == 1 and details["test"] == "non-inferiority"
    assert details["metrics"][0]["n"] == 40 and details["metrics"][0]["worse"] is True
    assert "Tango" in details["metrics"][0]["method"]
    # a margin wide enough lets the same drop (0.5) pass: its 95% upper bound is 0.626
    assert main(["regress", "--baseline", str(base), "--current", str(bad), "--margin", "score=0.7"]) == 0


def test_regress_usage_and_infrastructure_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = make_record(tmp_path / "a", {"teacher": [1] * 5, "student": [1] * 5})
    assert main(["regress", "--baseline", str(tmp_path / "nope"), "--current", str(base)]) == 2
    assert main(["regress", "--baseline", str(base), "--current", str(base)]) == 2
    broken = make_record(tmp_path / "b", {"teacher": [1] * 5, "student": [1] * 5})
    (broken / "metrics.json").write_text("{not json")
    capsys.readouterr()
    assert main(["regress", "--baseline", str(base), "--current", str(broken)]) == 3
    assert "damaged" in capsys.readouterr().err
    other = make_record(tmp_path / "c", {"teacher": [1] * 5, "student": [1] * 5}, suite="other")
    assert main(["regress", "--baseline", str(base), "--current", str(other)]) == 2
    assert "share no gated metric" in capsys.readouterr().err


def test_regress_renders_the_current_report_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run whose HTML report exists gets it rendered again, with the verdict in it; the Python API
    (harness.run_gate) takes the test too."""
    import harness
    from harness.api import report_formats

    base = make_record(tmp_path / "a", {"teacher": [1] * 30, "student": [1] * 30})
    bad = make_record(tmp_path / "b", {"teacher": [1] * 30, "student": [0] * 15 + [1] * 15})
    report_formats(bad, "html")
    assert 'id="verdict"' not in (bad / "index.html").read_text()
    assert main(["regress", "--baseline", str(base), "--current", str(bad)]) == 1
    assert 'class="verdict verdict-regression"' in (bad / "index.html").read_text()
    verdict = harness.run_gate(str(base), str(bad), test="regression")
    assert verdict.test == "regression" and verdict.exit_code == 1
    assert json.loads((bad / "regress.json").read_text())["metrics"][0]["test"] == "regression"


def test_default_margins_are_sized_to_the_items(tmp_path: Path) -> None:
    """Non-inferiority mode: a default margin widens to the smallest (0.01 steps) that the item count
    supports at Holm's strictest level; a student with no true drop that flips 10% of the items is then
    shown non-inferior about 75-80% of the time (simulated). Set margins and the regression mode keep
    theirs."""
    for n, family, expected in ((40, 1, 0.16), (48, 20, 0.23), (1319, 1, 0.03), (5000, 1, 0.02), (5, 1, 0.5)):
        m = sized_margin(n, family, 0.05)
        assert m == expected, (n, family, m)
        level = 0.05 / family
        if m < 0.5:
            assert ni_items_needed(0.1, m, alpha=level) <= n
        if m > 0.02:
            assert ni_items_needed(0.1, round(m - 0.01, 2), alpha=level) > n  # the smallest that fits
    rng = np.random.default_rng(7)
    passed = 0
    for _ in range(2000):  # 48 items, 10% flipped each way at random, no true drop, one metric
        flips = rng.random(48)
        base = (rng.random(48) < 0.6).astype(float)
        cur = np.where(flips < 0.1, 1 - base, base)
        passed += paired_binary_test(base, cur, 0.14).p_noninferior < 0.05
    assert 0.7 < passed / 2000 < 0.9, passed  # 74.7%: the normal approximation is a little optimistic
    base, cur = _pair(tmp_path / "two", [1] * 36 + [0] * 4, [1] * 36 + [0] * 4)
    sized = gate(base, cur).metrics[0]
    assert sized.margin == 0.16 and sized.margin_source == "sized" and not sized.regressed
    assert gate(base, cur, test="regression").metrics[0].margin == 0.02  # regression mode: as set
    kept = gate(base, cur, margins={"arith/exact_match": "0.05"})
    assert kept.metrics[0].margin == 0.05 and kept.metrics[0].margin_source == "set" and kept.exit_code == 1
    assert any("(--margin arith/exact_match=0.05) needs about" in note for note in kept.notes)
