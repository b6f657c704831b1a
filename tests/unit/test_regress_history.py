"""`harness history`: the trend page shows every run, its gate verdict, and the regressed points."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.regress import run_gate
from harness.report.history import collect, render_history
from harness.store.index import RunStore
from tests.unit.test_regress import make_record

EVIL = "<script>alert(1)</script>"


def _store(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "store"
    seqs = [(0.3 * n, n) for n in (10, 12, 8, 15, 9, 11)]
    nights = [  # 300 items: enough to show a 1-item loss non-inferior at the 2-point margin (p 0.02)
        ([1] * 300, seqs),  # baseline
        ([1] * 299 + [0], seqs),  # unchanged within the margin
        ([1] * 100 + [0] * 200, [(s * 3, n) for s, n in seqs]),  # damaged
    ]
    ids = []
    with RunStore(root) as store:
        for i, (scores, kd) in enumerate(nights):
            run = make_record(tmp_path / f"n{i}", {"teacher": [1] * 300, EVIL: scores}, kd={EVIL: kd})
            ids.append(store.commit(run, tags=("first",) if i == 0 else ()).run_id)
    for run_id in ids[1:]:
        run_gate("first", run_id, store=root)
    return root, ids


def test_history_page_shows_runs_verdicts_and_regressions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = _store(tmp_path)
    capsys.readouterr()
    runs = RunStore(root).runs()
    sections = {s.key: s for s in collect(runs)}
    assert set(sections) == {"arith", "kd:forward_kl", "kd:top1_agree"}
    student = sections["arith"].series[EVIL]
    assert [p.value for p in student] == pytest.approx([1.0, 299 / 300, 1 / 3])
    assert [p.regressed for p in student] == [False, False, True]
    assert [p.regressed for p in sections["kd:forward_kl"].series[EVIL]] == [False, False, True]
    assert main(["history", "--store", str(root)]) == 0
    html = (root / "history.html").read_text()
    assert "Content-Security-Policy" in html and "script-src" not in html and "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    for run_id in ids:
        assert f'id="run-{run_id}"' in html
    assert html.count('<span class="pill good">pass</span>') == 1
    assert html.count('<span class="pill bad">regression</span>') == 1
    assert html.count('<span class="pill undef">not gated</span>') == 1
    assert html.count("<svg") == 3 and html.count("regressed</span>") == 2  # the suite and KL cells
    assert re.search(r"<td class=\"num bad\">33\.3", html)  # the damaged run's score, flagged


def test_history_of_an_empty_or_missing_store(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="not a run store"):
        render_history(tmp_path / "nowhere")
    RunStore(tmp_path / "empty").close()
    with pytest.raises(HarnessError, match="no runs"):
        render_history(tmp_path / "empty")
