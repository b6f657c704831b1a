"""The lazy backend's fingerprint memo: hashed once per unchanged folder, again after any write."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.backends import _common as common
from harness.backends.lazy import remembered_fingerprint
from harness.store.cache import ResponseCache


def test_the_fingerprint_is_remembered_until_a_weight_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    weights = model / "model.safetensors"
    weights.write_bytes(b"\x00" * 4096)
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
    changed = remembered_fingerprint(model, cache)
    assert changed != expected and changed == real(model)[0] and len(calls) == 1
    cache.close()
