"""compare() on the real suite machinery (BBH subtasks, ICL draws, IFEval types) with scripted mock
models, then the HTML report: the subtask table, the draw spread and the instruction types appear."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.api import load_suites
from harness.backends import parse_model_spec
from harness.compare import run_compare
from harness.config import CompareConfig
from harness.report.html import render_html
from harness.store.record import read_record

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _teacher_script(prompt: str) -> str:
    """Right on BBH CoT (the gold answer is not known here, so: always '(A)' / 'Yes'), terse direct."""
    if prompt.endswith("Let's think step by step.\n"):
        return "Step one. So the answer is Yes." if "- Yes" in prompt[-400:] else "So the answer is (A)."
    return " Yes" if "- Yes" in prompt[-200:] else " (A)"


def _student_script(prompt: str) -> str:
    return "I am not sure." if prompt.endswith("Let's think step by step.\n") else _teacher_script(prompt)


@pytest.fixture()
def mocked(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import models as models_module
    from harness.backends.mock import MockBackend

    def fake_load(spec, **_):  # type: ignore[no-untyped-def]
        script = {"teacher": _teacher_script, "student": _student_script}[spec.path]
        return MockBackend(spec.path, script=script, noise=0.5, max_context=16384)

    monkeypatch.setattr(models_module, "load_backend", fake_load)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_public_suites_through_compare_and_the_report(tmp_path: Path, mocked: None) -> None:
    if not (DATA / "bbh").is_dir():
        pytest.skip(f"BBH data not at {DATA}")
    config = CompareConfig(
        teacher=parse_model_spec("mock:teacher"),
        students=(parse_model_spec("mock:student"),),
        suites=("bbh:navigate+web_of_lies", "icl-basic", "if-basic"),
        limit=4,
        data_dir=DATA,
        out_dir=tmp_path / "run",
        cache_dir=tmp_path / "cache",
        bootstrap=50,
        kd=False,
        max_gen_tokens=16,
    )
    suites = load_suites(config)
    assert [s.info().name for s in suites] == ["bbh:navigate", "bbh:web_of_lies", "icl-basic", "if-basic"]
    run_dir = run_compare(config, suites)
    record = read_record(run_dir)
    metrics = record.metrics["suites"]
    assert metrics["bbh"]["members"] == ["bbh:navigate", "bbh:web_of_lies"]
    assert metrics["bbh"]["n_items"] == 8
    # the scripted student gives no CoT answer: its CoT score is 0, its direct score equals the teacher's
    assert metrics["bbh"]["variants"]["cot"]["student"]["score"] == 0.0
    direct = metrics["bbh"]["variants"]["direct"]
    assert direct["student"]["score"] == direct["teacher"]["score"]
    assert set(metrics["icl-basic"]["draws"]["k=4"]["teacher"]["draws"]) == {"k=4", "k=4/d1", "k=4/d2"}
    assert metrics["if-basic"]["instruction_types"]
    assert record.manifest["config"]["max_gen_tokens"] == 16

    html = render_html(record, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<h3>Subtasks</h3>" in html and ">navigate<" in html and ">web_of_lies<" in html
    assert "Sensitivity to the drawn examples" in html
    assert "By instruction type" in html
    # subtasks are rows of their group, not sections or headline rows of their own
    assert 'id="suite-bbh"' in html and not re.search(r'id="suite-bbh-navigate"', html)
