"""Linear CKA between teacher and student hidden states, one model in memory at a time.

Inputs: the teacher's KD text (prompt + greedy generation), at the positions whose next-token
distributions the KD check compares, a seeded sample of at most N of them. At its turn each model
returns every layer's hidden state there (`hidden_features`, transformers backend) and the array is
stored under the cache folder (`features/<key>.npy`, key = model fingerprint + token ids + positions),
so the teacher need not stay loaded and a resumed run does not run the forwards again. When a
student's features exist, the layer x layer matrix is computed (harness.metrics.cka, float64).

A backend without hidden states (vLLM) whose model is a local folder of at most SIDE_LOAD_MAX_BYTES of
weight files gets its features from the same folder side-loaded with the transformers backend, which is
closed as soon as they are stored. Each features file has a JSON note beside it saying which backend gave
them; the CKA entry records it. Deciding starts no engine (a LazyBackend answers `hasattr` from its class),
and features already stored are used without loading anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.backends import _common as common
from harness.backends.base import Backend
from harness.errors import HarnessError
from harness.kd import KDSequence
from harness.metrics.cka import cka_matrix, sample_positions
from harness.store.cache import blob_key

CKA_TEXT = "teacher generations (the KD check's scored positions)"
# weight files up to this size are side-loaded with transformers beside an engine without hidden states
SIDE_LOAD_MAX_BYTES = 4 << 30
_GIB = float(1 << 30)


def _own_hidden_states(backend: Backend) -> bool:
    """`hasattr` first: a LazyBackend answers it from its engine's class without starting the engine."""
    return hasattr(backend, "hidden_features") and backend.capabilities().hidden_states


def _local_weights(backend: Backend) -> tuple[Path, int] | None:
    """(model folder, bytes of weight files) of a backend whose weights are a local folder, else None.
    The local-weights backends (and LazyBackend, before its engine starts) keep the folder in `_model_dir`."""
    folder = getattr(backend, "_model_dir", None)
    if not isinstance(folder, Path) or not folder.is_dir():
        return None
    return folder, sum(f.stat().st_size for f in common.weight_files(folder))


def _backend_name(backend: Backend) -> str:
    """The backend's name; a LazyBackend's from its engine's class, so nothing starts."""
    engine_class = getattr(backend, "_engine_class", None)
    name = getattr(engine_class or type(backend), "name", None)
    return str(name) if name else backend.info().backend


def hidden_state_gap(backend: Backend, who: str) -> str | None:
    """Why no hidden states can be had for `backend`'s model, or None: it returns them, or its folder is
    small enough to side-load with the transformers backend."""
    if _own_hidden_states(backend):
        return None
    local = _local_weights(backend)
    if local is not None and local[1] <= SIDE_LOAD_MAX_BYTES:
        return None
    name = _backend_name(backend)
    if local is None:
        return (
            f"the {who}'s backend ({name}) does not return hidden states and its model is not a local "
            "folder to side-load: load it with hf (hf:PATH) for CKA"
        )
    return (
        f"the {who}'s backend ({name}) does not return hidden states, and its weight files "
        f"({local[1] / _GIB:.1f} GiB) are above the {SIDE_LOAD_MAX_BYTES / _GIB:.0f} GiB that are "
        "side-loaded with transformers beside the engine: load it with hf (hf:PATH) for CKA"
    )


def positions_for(sequences: Sequence[KDSequence], n_max: int, seed: int) -> list[np.ndarray]:
    """Per sequence, the sampled positions (indices into token_ids) among start - 1 .. len - 2."""
    picked = sample_positions([len(s.token_ids) - s.start for s in sequences], n_max, seed)
    return [p + s.start - 1 for p, s in zip(picked, sequences, strict=True)]


def features_file(
    cache_dir: Path, fingerprint: str, sequences: Sequence[KDSequence], n_max: int, seed: int
) -> Path:
    key = blob_key("cka-features", fingerprint, [s.token_ids for s in sequences], n_max, seed)
    return cache_dir / "features" / f"{key}.npy"


def collect_features(
    backend: Backend,
    fingerprint: str,
    sequences: Sequence[KDSequence],
    n_max: int,
    seed: int,
    cache_dir: Path,
) -> Path:
    """Store this model's (layers + 1, n, hidden) float32 features (unless already stored); their path.

    From `backend` when it returns hidden states, else from its model folder side-loaded with the
    transformers backend (see hidden_state_gap), closed before returning."""
    path = features_file(cache_dir, fingerprint, sequences, n_max, seed)
    if path.exists():
        return path
    started = time.perf_counter()
    positions = positions_for(sequences, n_max, seed)
    token_ids = [s.token_ids for s in sequences]
    if _own_hidden_states(backend):
        features = backend.hidden_features(token_ids, positions)  # type: ignore[attr-defined]
        source: dict[str, Any] = {"backend": backend.info().backend, "side_loaded": False}
    else:
        features, source = _side_loaded_features(backend, token_ids, positions)
    source["seconds"] = round(time.perf_counter() - started, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda handle: np.save(handle, np.ascontiguousarray(features, dtype=np.float32)))
    _atomic_write(_source_file(path), lambda handle: handle.write(json.dumps(source).encode()))
    return path


def _side_loaded_features(
    backend: Backend, token_ids: list[tuple[int, ...]], positions: list[np.ndarray]
) -> tuple[np.ndarray, dict[str, Any]]:
    """Hidden states from the backend's model folder loaded with transformers, closed again at once."""
    gap = hidden_state_gap(backend, "model")
    local = _local_weights(backend)
    if gap is not None or local is None:
        raise HarnessError(gap or "no hidden states: load the model with hf (hf:PATH) for CKA")
    from harness.backends.hf import HFBackend

    hf = HFBackend(str(local[0]), device=_side_device(local[1]))
    try:
        features = hf.hidden_features(token_ids, positions)
        info = hf.info()
    finally:
        hf.close()
    device = str(info.extra.get("device", "?"))
    source = {"backend": "hf", "side_loaded": True, "beside": _backend_name(backend)}
    return features, {**source, "dtype": info.dtype, "device": device}


def _side_device(weight_bytes: int) -> str:
    """cuda when the GPU has room for the weights (twice, with activations) beside the engine, else cpu."""
    import torch

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        if free > 2 * weight_bytes + (1 << 30):
            return "cuda"
    return "cpu"


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _source_file(features: Path) -> Path:
    return features.with_suffix(".json")


def features_source(features: Path) -> dict[str, Any] | None:
    """Which backend gave a features file: {"backend", "side_loaded", "seconds"[, "beside", "dtype",
    "device"]}; None for a file stored before this was recorded."""
    try:
        value = json.loads(_source_file(features).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _without_seconds(source: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if source is None else {k: v for k, v in source.items() if k != "seconds"}


def describe_source(source: dict[str, Any] | None) -> str:
    """One line for the report: "hf", or "hf (side-loaded beside vllm; float32 on cpu)"."""
    if source is None:
        return "unknown (stored before the source was recorded)"
    if not source.get("side_loaded"):
        return str(source.get("backend"))
    where = f"{source.get('dtype')} on {source.get('device')}"
    return f"{source.get('backend')} (side-loaded beside {source.get('beside')}; {where})"


def cka_entry(teacher_path: Path, student_path: Path, n_sequences: int) -> dict[str, Any]:
    """{"text", "n_positions", "n_sequences", "teacher_layers", "student_layers", "matrix" (teacher layer
    rows x student layer columns; layer 0 = embeddings), "best_teacher_layer" (per student layer),
    "features_backend" and "features_source" ({"teacher", "student"}: which backend gave the hidden states,
    as a line and as recorded), "skipped": None}."""
    teacher = np.load(teacher_path, mmap_mode="r")
    student = np.load(student_path, mmap_mode="r")
    matrix = stored_cka_matrix(teacher_path, student_path, teacher, student)
    best = [None if np.isnan(col).all() else int(np.nanargmax(col)) for col in matrix.T]
    return {
        "text": CKA_TEXT,
        "method": "linear CKA (feature-centred, float64); layer 0 = embeddings",
        "n_positions": int(teacher.shape[1]),
        "n_sequences": n_sequences,
        "teacher_layers": int(teacher.shape[0]),
        "student_layers": int(student.shape[0]),
        "matrix": [[None if np.isnan(v) else round(float(v), 6) for v in row] for row in matrix],
        "best_teacher_layer": best,
        "features_backend": {
            "teacher": describe_source(features_source(teacher_path)),
            "student": describe_source(features_source(student_path)),
        },
        "features_source": {  # without the seconds it took: the record's metrics are measured-time free
            "teacher": _without_seconds(features_source(teacher_path)),
            "student": _without_seconds(features_source(student_path)),
        },
        "skipped": None,
    }


def stored_cka_matrix(
    teacher_path: Path, student_path: Path, teacher: np.ndarray, student: np.ndarray
) -> np.ndarray:
    """The layer x layer CKA of two feature files (`teacher`, `student`: their arrays), kept beside the
    student's.

    Features are written once per (model, sequences, positions), so a re-run or a nightly run with
    the same models computes the same matrix: 0.8 s of a 5.9 s re-run on 2 cores (py-spy). The file
    is named by both feature files' names, sizes and mtimes, so features written again give a new one.
    """
    stats = []
    for path in (teacher_path, student_path):
        st = path.stat()
        stats.append((path.name, st.st_size, st.st_mtime_ns))
    stored = student_path.parent / f"cka-{blob_key('cka-matrix', stats)[:32]}.npy"
    if stored.exists():
        try:
            return np.asarray(np.load(stored), dtype=np.float64)
        except (OSError, ValueError):
            pass  # a damaged file: computed again below and replaced
    matrix = cka_matrix(list(teacher), list(student))
    with contextlib.suppress(OSError):  # a read-only cache: computed again next time
        _atomic_write(stored, lambda handle: np.save(handle, matrix))
    return matrix


def skipped(reason: str) -> dict[str, Any]:
    return {"text": CKA_TEXT, "skipped": reason}
