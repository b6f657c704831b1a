"""The lazy backend's fingerprint memo: hashed once per unchanged folder, again after any write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.backends import _common as common
from harness.backends.lazy import remembered_fingerprint
from harness.store.cache import ResponseCache


def test_the_fingerprint_is_remembered_until_a_weight_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, weights = _model_folder(tmp_path, b"\x00" * 4096)
    cache = ResponseCache(tmp_path / "cache" / "responses.sqlite")
    expected, _ = common.fingerprint(model)
    assert remembered_fingerprint(model, cache) == expected
    calls = []
    real = common.fingerprint

    def counting(path: Path) -> tuple[str, str]:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(common, "fingerprint", counting)
    assert remembered_fingerprint(model, cache) == expected and calls == []  # from the memo
    weights.write_bytes(b"\x01" + b"\x00" * 4095)  # same size, new content (and ctime)
    _past_clock_granularity(weights)
    changed = remembered_fingerprint(model, cache)
    assert changed != expected and changed == real(model)[0] and len(calls) == 1
    cache.close()


def _model_folder(tmp_path: Path, weights: bytes) -> tuple[Path, Path]:
    """A model folder (config.json and one weight file); the folder and the weight file."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(weights)
    return model, model / "model.safetensors"


def _past_clock_granularity(path: Path) -> None:
    """A rewrite within one tick of a coarse file-system clock keeps its mtime: move it on by 1 ms."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_the_engine_asks_again_in_the_same_process_without_hashing_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lazy backend and the engine it starts both ask for the fingerprint: one hash per process."""
    model, weights = _model_folder(tmp_path, b"\x02" * 4096)
    hashed: list[Path] = []
    real = common._hash_file

    def counting(h: object, f: Path, full: bool) -> None:
        hashed.append(f)
        real(h, f, full)

    monkeypatch.setattr(common, "_hash_file", counting)
    first = common.fingerprint(model)
    assert common.fingerprint(model) == first and len(hashed) == 1
    weights.write_bytes(b"\x03" * 4096)
    _past_clock_granularity(weights)
    assert common.fingerprint(model) != first and len(hashed) == 2


def test_a_fingerprint_from_the_cache_memo_spares_the_engine_a_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later process finds the fingerprint in the cache; the engine it starts asks common.fingerprint,
    which answers from what the lazy backend told it, with the same value and method."""
    model, _ = _model_folder(tmp_path, b"\x04" * 4096)
    cache = ResponseCache(tmp_path / "cache" / "responses.sqlite")
    expected = common.fingerprint(model)
    remembered_fingerprint(model, cache)
    monkeypatch.setattr(common, "_FINGERPRINTS", {})  # a new process
    hashed: list[Path] = []
    real = common._hash_file

    def counting(h: object, f: Path, full: bool) -> None:
        hashed.append(f)
        real(h, f, full)

    monkeypatch.setattr(common, "_hash_file", counting)
    assert remembered_fingerprint(model, cache) == expected[0]
    assert common.fingerprint(model) == expected and hashed == []
    cache.close()
