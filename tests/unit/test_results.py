"""harness.results.load_run: a run record written by write_record, read back as DataFrames."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from harness.aggregate import summarize_suites
from harness.errors import HarnessError
from harness.results import load_run
from harness.store.record import write_record
from harness.suites.base import ItemResult, SuiteInfo

pd = pytest.importorskip("pandas")

ROLES = {"T": "teacher", "B": "base", "S1": "student", "S2": "student"}
# icl suite, per variant and model: right/wrong on 4 items
ICL = {
    "k=0": {"T": [1, 1, 0, 1], "B": [0, 0, 0, 1], "S1": [1, 0, 0, 1], "S2": [0, 1, 0, 0]},
    "k=2": {"T": [1, 1, 1, 1], "B": [1, 0, 0, 0], "S1": [1, 1, 0, 1], "S2": [1, 0, 0, 1]},
}
# if suite: two prompts, instructions (strict verdicts) per model
IF = {"T": [[1, 1], [1]], "B": [[0, 1], [0]], "S1": [[1, 0], [1]], "S2": [[0, 0], [1]]}


class Info:
    def __init__(self, name: str, ability: str, variants: tuple[str, ...]) -> None:
        self._info = SuiteInfo(
            name=name,
            ability=ability,  # type: ignore[arg-type]
            description=name,
            variants=variants,
            baseline_variant=variants[0],
            primary_metric="acc",
            chance=0.25,
            n_items=4,
        )

    def info(self) -> SuiteInfo:
        return self._info


def _items() -> list[ItemResult]:
    out = []
    for variant, per_model in ICL.items():
        for model, scores in per_model.items():
            for i, score in enumerate(scores):
                out.append(
                    ItemResult(
                        "icl",
                        variant,
                        f"q{i}",
                        model,
                        "p",
                        f"out {i}",
                        "t",
                        str(score),
                        float(score),
                        metrics={"acc": float(score), "exact_match,flex": float(score)},
                        truncated=i == 3,
                    )
                )
    for model, prompts in IF.items():
        for i, verdicts in enumerate(prompts):
            out.append(
                ItemResult(
                    "ifx",
                    "default",
                    f"p{i}",
                    model,
                    "p",
                    "o",
                    "t",
                    None,
                    float(all(verdicts)),
                    details={
                        "instructions": [{"id": "x", "strict": bool(v), "loose": True} for v in verdicts]
                    },
                )
            )
    return out


KD_STATS = {
    "mean": 0.3,
    "ci_low": 0.2,
    "ci_high": 0.4,
    "median": 0.25,
    "p90": 0.6,
    "max": 2.0,
    "n_tokens": 50,
}


def _kd() -> dict[str, Any]:
    block = {"temperatures": {"1": {"forward_kl": KD_STATS, "top1_agree": {**KD_STATS, "mean": 0.8}}}}
    return {
        "S1": {
            "semantics": "full-vocab",
            "top_k": None,
            **block,
            "on_policy": {"semantics": "full-vocab", "temperatures": {"0.5": {"forward_kl": KD_STATS}}},
        },
        "S2": {"semantics": "top-k+tail lower bound", "top_k": 8, **block, "on_policy": {"skipped": "why"}},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    items = _items()
    suites = [Info("icl", "icl", ("k=0", "k=2")), Info("ifx", "if", ("default",))]
    metrics = {
        "suites": summarize_suites(suites, items, ROLES, seed=0, n_boot=200),  # type: ignore[arg-type]
        "kd": _kd(),
        "notes": [],
    }
    manifest = {"models": {label: {"role": role} for label, role in ROLES.items()}}
    run_dir = tmp_path_factory.mktemp("results") / "run"
    write_record(run_dir, manifest, items, metrics)
    return run_dir, metrics


def test_items_frame(run: tuple[Path, dict[str, Any]]) -> None:
    frames = load_run(run[0])
    items = frames.items
    assert len(items) == 2 * 4 * 4 + 4 * 2
    row = items[
        (items.suite == "icl") & (items.variant == "k=2") & (items.model == "S2") & (items.item_id == "q3")
    ]
    assert len(row) == 1
    row = row.iloc[0]
    assert (row.role, row.score, row.extracted, bool(row.truncated), row.output) == (
        "student",
        1.0,
        "1",
        True,
        "out 3",
    )
    assert row["exact_match,flex"] == 1.0 and row["acc"] == 1.0
    assert items.groupby("model").role.first().to_dict() == ROLES
    accuracy = items[items.suite == "icl"].groupby(["variant", "model"]).score.mean()
    assert accuracy[("k=0", "S1")] == 0.5 and accuracy[("k=2", "T")] == 1.0


def test_metrics_frame(run: tuple[Path, dict[str, Any]]) -> None:
    path, metrics = run
    m = load_run(path).metrics
    assert len(m) == 2 * 4 + 4  # icl: 2 variants x 4 models; ifx: 1 variant x 4 models
    s1 = m[(m.suite == "icl") & (m.variant == "k=2") & (m.model == "S1")].iloc[0]
    assert (s1.score, s1.n, s1.truncated, s1.role) == (0.75, 4, 1, "student")
    assert s1.retention == pytest.approx(0.75)
    summary = metrics["suites"]["icl"]
    assert s1.retention_ci_low == summary["retention"]["S1"]["k=2"]["ci_low"]
    assert s1.gain == pytest.approx(0.25) and s1.gain_retention == pytest.approx(0.25 / 0.25)
    assert s1.diff_vs_teacher == pytest.approx(-0.25)
    assert s1.gap_closed == pytest.approx((0.75 - 0.25) / (1.0 - 0.25))
    assert s1.chance_retention == pytest.approx((0.75 - 0.25) / 0.75)
    assert bool(s1.is_headline) and not bool(s1.is_baseline) and s1["rank"] == 1
    s2 = m[(m.suite == "icl") & (m.variant == "k=2") & (m.model == "S2")].iloc[0]
    assert s2["rank"] == 2
    teacher = m[(m.suite == "icl") & (m.variant == "k=0") & (m.model == "T")].iloc[0]
    assert pd.isna(teacher.retention) and pd.isna(teacher["rank"])
    ifx = m[(m.suite == "ifx") & (m.model == "T")].iloc[0]
    assert ifx.inst_level_strict == 1.0 and ifx.inst_level_loose == 1.0
    s2_if = m[(m.suite == "ifx") & (m.model == "S2")].iloc[0]
    assert s2_if.inst_level_strict == pytest.approx(1 / 3)  # pooled over 3 instructions
    assert (
        s2_if.inst_level_strict_ci_low
        == metrics["suites"]["ifx"]["variants"]["default"]["S2"]["inst_level_strict"]["ci_low"]
    )


def test_kd_frame(run: tuple[Path, dict[str, Any]]) -> None:
    kd = load_run(run[0]).kd
    assert len(kd) == 2 + 2 + 1  # S1 off-policy (2 metrics), S2 off-policy (2), S1 on-policy (1)
    on = kd[(kd.student == "S1") & (kd.text == "on_policy")].iloc[0]
    assert (on.temperature, on.metric, on["mean"], on.p90) == (0.5, "forward_kl", 0.3, 0.6)
    s2 = kd[(kd.student == "S2") & (kd.metric == "top1_agree")].iloc[0]
    assert (s2.semantics, s2.top_k, s2["mean"], s2.text) == ("top-k+tail lower bound", 8, 0.8, "off_policy")


def test_paired_frame(run: tuple[Path, dict[str, Any]]) -> None:
    path, metrics = run
    p = load_run(path).paired
    teacher_rows = p[p.kind == "teacher"]
    pairwise_rows = p[p.kind == "pairwise"]
    assert len(teacher_rows) == 3 * 3  # B, S1, S2 vs T on icl k=0, k=2 and ifx default
    assert len(pairwise_rows) == 3 * 3  # S1 vs S2, S1 vs B, S2 vs B on the same
    row = teacher_rows[
        (teacher_rows.suite == "icl") & (teacher_rows.variant == "k=0") & (teacher_rows.a == "S2")
    ]
    row = row.iloc[0]
    # T [1,1,0,1] vs S2 [0,1,0,0]: both right 1, teacher only 2, student only 0, neither 1
    assert (row.b, row.both_right, row.a_only, row.b_only, row.neither) == ("T", 1, 0, 2, 1)
    assert row["diff"] == pytest.approx(0.25 - 0.75)
    test = metrics["suites"]["icl"]["paired"]["S2"]["k=0"]["mcnemar"]
    assert (row.p, row.p_holm) == (test["p_value"], test["p_holm"])
    family = metrics["suites"]["icl"]["multiple_comparisons"]["family_size"]
    assert family == 18 and (p.holm_family_size == 18).all()
    assert (p.p_holm >= p.p).all()
    pair = pairwise_rows[(pairwise_rows.suite == "icl") & (pairwise_rows.variant == "k=2")]
    s1_s2 = pair[(pair.a == "S1") & (pair.b == "S2")].iloc[0]
    assert s1_s2["diff"] == pytest.approx(0.25) and (s1_s2.a_only, s1_s2.b_only) == (1, 0)


def test_empty_run_gives_frames_with_columns(tmp_path: Path) -> None:
    write_record(tmp_path / "run", {"models": {}}, [], {"suites": {}, "kd": {}, "notes": []})
    frames = load_run(tmp_path / "run")
    assert frames.items.empty and {"suite", "item_id", "model", "score"} <= set(frames.items.columns)
    assert frames.paired.empty and {"p", "p_holm"} <= set(frames.paired.columns)
    assert frames.metrics.empty and frames.kd.empty


def test_without_pandas_the_error_says_how_to_get_it(
    run: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(HarnessError, match="pip install pandas"):
        load_run(run[0])


def test_missing_folder_is_a_harness_error(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="does not exist"):
        load_run(tmp_path / "nowhere")
