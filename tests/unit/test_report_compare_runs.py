"""`harness report RUN_A RUN_B`: two synthetic runs side by side (tests/fake_record.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.report.compare_runs import comparison_view, write_comparison
from harness.store.record import read_record, write_record
from tests.fake_record import HOSTILE, write_fake_record


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    return write_fake_record(root / "before", n_items=12, seed=0), write_fake_record(
        root / "after", n_items=12, seed=3
    )


def _scores(run: Path, suite: str, variant: str, model: str) -> dict[str, float]:
    rows = [json.loads(x) for x in (run / "items.jsonl").read_text().splitlines()]
    return {
        r["item_id"]: r["score"]
        for r in rows
        if (r["suite"], r["variant"], r["model"]) == (suite, variant, model)
    }


def test_paired_difference_over_shared_items(runs: tuple[Path, Path]) -> None:
    a, b = runs
    view = comparison_view(read_record(a), read_record(b))
    row = next(
        r for r in view["rows"] if (r["suite"], r["variant"], r["model"]) == ("icl-arith", "k=2", "student")
    )
    sa, sb = _scores(a, "icl-arith", "k=2", "student"), _scores(b, "icl-arith", "k=2", "student")
    expected = np.mean([sb[i] - sa[i] for i in sa])
    assert row["diff"]["text"] == f"{100 * expected:+.1f}" and row["diff"]["n"] == "12"
    lo, hi = (float(x) for x in re.findall(r"[-+]\d+\.\d", row["diff"]["ci"]))
    assert lo <= 100 * expected <= hi and lo < hi
    assert row["a"]["text"] == f"{100 * np.mean(list(sa.values())):.1f}%"
    # one row per suite x variant x model: 7 variants x 4 models
    assert len(view["rows"]) == 28 and view["note"] == ""
    assert [k["t"] for k in view["kd"] if k["model"] == "student"] == ["1", "2"]
    topk = next(k for k in view["kd"] if k["model"] == "student-topk")
    assert topk["fkl_a"].startswith("≥ ") and topk["fkl_diff"] == "+0.000"
    assert view["changes"]["config"] == [] and not any(m["changed"] for m in view["changes"]["models"])


def test_renamed_student_partial_items_and_no_items(tmp_path: Path) -> None:
    one = (("teacher", "teacher"), ("ckpt-100", "student"))
    two = (("teacher", "teacher"), ("ckpt-200", "student"))
    a = write_fake_record(tmp_path / "a", n_items=6, models=one, seed=1)
    b = write_fake_record(tmp_path / "b", n_items=6, models=two, seed=2)
    lines = (b / "items.jsonl").read_text().splitlines()
    keep = [x for x in lines if not json.loads(x)["item_id"].endswith("0005")]  # B lacks one item
    (b / "items.jsonl").write_text("\n".join(keep) + "\n")
    view = comparison_view(read_record(a), read_record(b))
    assert "ckpt-100 and B's ckpt-200" in view["note"]
    row = next(r for r in view["rows"] if r["model"] == "ckpt-100 → ckpt-200" and r["variant"] == "k=0")
    assert row["diff"]["n"] == "5 of 6 / 5" and row["diff"]["ci"]
    changed = {m["label"]: m["changed"] for m in view["changes"]["models"]}
    assert changed == {"teacher": False, "ckpt-100 → ckpt-200": True}
    # records without items: the recorded scores' difference, no CI
    metrics = json.loads((b / "metrics.json").read_text())
    write_record(tmp_path / "c", json.loads((b / "manifest.json").read_text()), [], metrics)
    view = comparison_view(read_record(b), read_record(tmp_path / "c"))
    row = view["rows"][0]
    assert row["diff"]["ci"] == "" and row["diff"]["n"] == "no shared items"
    assert row["diff"]["text"] == "+0.0"


def test_html_and_markdown_are_escaped_and_self_contained(tmp_path: Path) -> None:
    evil = HOSTILE[1]
    models = (("teacher", "teacher"), ("student" + evil, "student"))
    a = write_fake_record(tmp_path / "a", n_items=4, models=models, hostile=True)
    b = write_fake_record(tmp_path / "b", n_items=4, models=models, hostile=True, seed=5)
    written = write_comparison(a, b, {"html", "md"})
    assert written == {"html": b / "vs-a.html", "md": b / "vs-a.md"}
    html = written["html"].read_text()
    assert "<img src=x" not in html and "student&lt;img src=x onerror=alert(1)&gt;" in html
    assert len(re.findall(r"<script\b", html)) == 1 and "script-src &#39;sha256-" in html
    assert 'id="scores"' in html and 'id="kd"' in html and 'id="changes"' in html
    md = written["md"].read_text()
    assert "student\\<img src=x onerror=alert(1)\\>" in md and not re.search(r"(?<!\\)<", md)
    assert md.startswith("# distill-harness:") and "| Suite | Variant | Model | A | B | B − A |" in md


def test_cli_two_runs_and_errors(runs: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    a, b = runs
    out = tmp_path / "cmp" / "ab.html"
    assert main(["report", str(a), str(b), "--out", str(out), "--format", "html,md"]) == 0
    assert out.exists() and out.with_suffix(".md").exists()
    assert f"report: {out}" in capsys.readouterr().out
    assert main(["report", str(a), str(b), "--format", "latex"]) == 2
    assert "html and md only" in capsys.readouterr().err
    assert main(["report", str(a), str(b), str(b)]) == 2
    with pytest.raises(HarnessError, match="does not exist"):
        write_comparison(a, tmp_path / "missing")
