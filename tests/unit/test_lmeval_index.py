"""lm-eval's task index kept between runs (harness.suites.lmeval_index); lm-eval's own build is
stood in for here, and the real one is exercised by every `lm-eval:NAME` suite test."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.suites import lmeval_index


@pytest.fixture
def index_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """A fresh process state, a cache folder of its own, and a counting stand-in for lm-eval's build."""
    task = tmp_path / "tasks" / "demo.yaml"
    task.parent.mkdir()
    task.write_text("task: demo\n")
    state: dict[str, object] = {"builds": 0, "signature": "v1", "task": task}

    def build() -> dict[str, Path]:
        state["builds"] = int(state["builds"]) + 1  # type: ignore[call-overload]
        return {"demo": task}

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(lmeval_index, "_build", build)
    monkeypatch.setattr(lmeval_index, "_signature", lambda root: state["signature"])
    monkeypatch.setattr(lmeval_index, "_INDEX", None)
    monkeypatch.setattr(lmeval_index, "_FRESH", False)
    return state


def _stored_file(tmp_path: Path, text: str) -> None:
    """The index file a run before this one left, with this text (signature "v1")."""
    stored = tmp_path / "cache" / "lm-eval-task-index-v1.json"
    stored.parent.mkdir()
    stored.write_text(text)


def _new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lmeval_index, "_INDEX", None)
    monkeypatch.setattr(lmeval_index, "_FRESH", False)


def test_the_index_is_built_once_then_read_from_the_cache_folder(
    index_env: dict[str, object], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert lmeval_index.task_yaml("demo") == index_env["task"] and index_env["builds"] == 1
    assert list((tmp_path / "cache").glob("lm-eval-task-index-v1.json"))
    _new_process(monkeypatch)
    assert lmeval_index.task_yaml("demo") == index_env["task"] and index_env["builds"] == 1


def test_another_lm_eval_or_changed_task_files_build_it_again(
    index_env: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    lmeval_index.task_yaml("demo")
    _new_process(monkeypatch)
    index_env["signature"] = "v2"
    lmeval_index.task_yaml("demo")
    assert index_env["builds"] == 2


def test_a_stored_entry_whose_file_has_gone_builds_it_again(
    index_env: dict[str, object], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _stored_file(tmp_path, '{"demo": "/no/such/file.yaml", "other": "/x.yaml"}')
    assert lmeval_index.task_yaml("demo") == index_env["task"] and index_env["builds"] == 1
    assert lmeval_index.task_yaml("nothing") is None and index_env["builds"] == 1  # built fresh already


def test_a_broken_or_unwritable_store_only_costs_a_build(
    index_env: dict[str, object], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _stored_file(tmp_path, "{not json")
    assert lmeval_index.task_yaml("demo") == index_env["task"] and index_env["builds"] == 1
    _new_process(monkeypatch)
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(blocker / "cache"))  # a folder under a file
    assert lmeval_index.task_yaml("demo") == index_env["task"] and index_env["builds"] == 2


def test_the_signature_follows_the_task_files(tmp_path: Path) -> None:
    pytest.importorskip("lm_eval")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "t.yaml").write_text("task: t\n")
    first = lmeval_index._signature(tmp_path)
    assert lmeval_index._signature(tmp_path) == first
    (tmp_path / "a" / "u.yaml").write_text("task: u\n")
    assert lmeval_index._signature(tmp_path) != first
