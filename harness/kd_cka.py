"""Linear CKA between teacher and student hidden states, one model in memory at a time.

Inputs: the teacher's KD text (prompt + greedy generation), at the positions whose next-token
distributions the KD check compares, a seeded sample of at most N of them. At its turn each model
returns every layer's hidden state there (`hidden_features`, transformers backend) and the array is
stored under the cache folder (`features/<key>.npy`, key = model fingerprint + token ids + positions),
so the teacher need not stay loaded and a resumed run does not run the forwards again. When a
student's features exist, the layer x layer matrix is computed (harness.metrics.cka, float64).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.backends.base import Backend
from harness.kd import KDSequence
from harness.metrics.cka import cka_matrix, sample_positions
from harness.store.cache import blob_key

CKA_TEXT = "teacher generations (the KD check's scored positions)"


def hidden_state_gap(backend: Backend, who: str) -> str | None:
    """Why `backend` cannot give hidden states, or None when it can."""
    if backend.capabilities().hidden_states and hasattr(backend, "hidden_features"):
        return None
    return f"the {who}'s backend ({backend.info().backend}) does not return hidden states: load it with hf"


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
    """Store this model's (layers + 1, n, hidden) float32 features (unless already stored); their path."""
    path = features_file(cache_dir, fingerprint, sequences, n_max, seed)
    if path.exists():
        return path
    positions = positions_for(sequences, n_max, seed)
    features = backend.hidden_features([s.token_ids for s in sequences], positions)  # type: ignore[attr-defined]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".features.", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, np.ascontiguousarray(features, dtype=np.float32))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def cka_entry(teacher_path: Path, student_path: Path, n_sequences: int) -> dict[str, Any]:
    """{"text", "n_positions", "n_sequences", "teacher_layers", "student_layers", "matrix" (teacher layer
    rows x student layer columns; layer 0 = embeddings), "best_teacher_layer" (per student layer),
    "skipped": None}."""
    teacher = np.load(teacher_path, mmap_mode="r")
    student = np.load(student_path, mmap_mode="r")
    matrix = cka_matrix(list(teacher), list(student))
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
        "skipped": None,
    }


def skipped(reason: str) -> dict[str, Any]:
    return {"text": CKA_TEXT, "skipped": reason}
