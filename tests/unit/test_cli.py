"""The CLI's contract: fast help, one-line errors with exit code 2, tracebacks only with --debug."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=120
    )


def test_help_is_fast_and_imports_nothing_heavy() -> None:
    started = time.perf_counter()
    result = _run("--help")
    elapsed = time.perf_counter() - started
    assert result.returncode == 0 and "compare" in result.stdout
    assert elapsed < 3.0  # generous for a loaded CI machine; typically ~0.1 s
    heavy = "('torch', 'vllm', 'transformers', 'lm_eval')"
    probe = f"import sys, harness.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    assert (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["compare", "hf:/nonexistent/teacher", "hf:/nonexistent/student"], "does not exist"),
        (["compare", "mock:t", "mock:s", "--limit", "0"], "--limit 0"),
        (["compare", "mock:t", "mock:s", "--engine-arg", "oops"], "KEY=VALUE"),
        (["compare", "mock:t", "mock:s", "--kd-temperature", "x"], "--kd-temperature"),
        (["compare", "mock:t", "mock:s", "--chunk-size", "0"], "--chunk-size"),
        (["compare", "nosuch:thing", "mock:s", "--backend", "tpu"], "--backend"),
        (["report", "/nonexistent/run"], "does not exist"),
    ],
)
def test_user_errors_are_one_line_exit_2(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_incomplete_run_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    assert main(["report", str(tmp_path)]) == 2
    assert "incomplete" in capsys.readouterr().err


def test_debug_shows_the_traceback() -> None:
    result = _run("--debug", "report", "/nonexistent/run")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_suites_lists_the_built_ins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["suites"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("icl-basic", "cot-basic", "if-basic"))


def test_validate_a_good_and_a_bad_suite_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.suites import tasks_dir

    assert main(["validate", str(tasks_dir() / "cot-basic" / "suite.yaml")]) == 0
    assert "ok: cot-basic" in capsys.readouterr().out
    bad = tmp_path / "suite.yaml"
    good_text = (tasks_dir() / "cot-basic" / "suite.yaml").read_text()
    bad.write_text(good_text + "\nbogus_key: 1\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bogus_key" in err and err.count("\n") == 1
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_unknown_suite_name_fails_before_any_model_loads(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "mock:t", "mock:s", "--suite", "no-such-suite"]) == 2
    assert "no-such-suite" in capsys.readouterr().err


def test_score_subcommand_rescores_saved_responses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`harness score` end to end through the CLI: prints the summary, writes metrics.json, exit 0."""
    import json

    case = Path(__file__).parent / "cases" / "rescore" / "if_basic_responses.jsonl"
    code = main(["score", "if-basic", "--responses", str(case), "--out", str(tmp_path), "--bootstrap", "100"])
    out = capsys.readouterr().out
    assert code == 0 and "if-basic" in out and f"metrics: {tmp_path / 'metrics.json'}" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    row = metrics["suites"]["if-basic"]["variants"]["default"]["if_basic_responses"]
    assert row["n"] == 5 and abs(row["score"] - 0.4) < 1e-9


def test_score_subcommand_bad_responses_file_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    case = Path(__file__).parent / "cases" / "rescore" / "if_basic_missing_field.jsonl"
    assert main(["score", "if-basic", "--responses", str(case)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "line 2: missing field 'response'" in err


def test_progress_without_a_terminal_is_one_line_per_phase_event(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.api import _line_progress

    update = _line_progress()
    for done in (0, 5, 10, 10):
        update("teacher: suites", done, 10)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "[harness] teacher: suites: 10 to do"
    assert len(err) == 2 and err[1].startswith("[harness] teacher: suites: done in ")
