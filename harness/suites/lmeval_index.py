"""lm-eval's task name -> YAML file, kept on disk between runs.

lm-eval's TaskManager parses all of its ~14,000 task YAML files to build this index: 7.3 s of a 105 s
`harness compare` with `--suite lm-eval:gsm8k_cot` on 2 CPU cores (py-spy). The index depends only on
the installed task files, so it is stored under the harness's cache folder, keyed by lm-eval's version,
its tasks folder and the count and newest mtime of the YAML files there (0.07 s to read from the
folder's listing): installing another lm-eval, or adding or editing a task file, builds it again. A
name found in a stored index whose file has gone also rebuilds it (`task_yaml`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path

_INDEX: dict[str, Path] | None = None
_FRESH = False  # whether _INDEX was built by lm-eval in this process


def lm_eval_tasks_root() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


def _signature(root: Path) -> str:
    """lm-eval's version, the tasks folder, and the count and newest mtime of its YAML files."""
    from importlib.metadata import version

    count, newest = 0, 0
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.name.endswith((".yaml", ".yml")):
                    count += 1
                    newest = max(newest, entry.stat().st_mtime_ns)
    text = json.dumps([version("lm_eval"), str(root), count, newest])
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _stored_path(root: Path) -> Path:
    from harness.config import default_cache_dir

    return default_cache_dir() / f"lm-eval-task-index-{_signature(root)}.json"


def _build() -> dict[str, Path]:
    from lm_eval.tasks import TaskManager

    with contextlib.redirect_stderr(io.StringIO()):  # lm-eval's own progress output
        manager = TaskManager()
    return {
        name: Path(entry.yaml_path)
        for name, entry in manager.task_index.items()
        if getattr(entry, "yaml_path", None) is not None and str(entry.kind).endswith("TASK")
    }


def _load_stored(path: Path) -> dict[str, Path] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return None
    return {name: Path(p) for name, p in data.items()}


def _store(path: Path, index: dict[str, Path]) -> None:
    """Written whole then renamed, so a concurrent run reads the old file or the new one; a folder
    that cannot be written only costs the next run the rebuild."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.part")
        partial.write_text(json.dumps({k: str(v) for k, v in sorted(index.items())}), encoding="utf-8")
        partial.replace(path)


def task_index(rebuild: bool = False) -> dict[str, Path]:
    """The index: from this process, else the stored file, else built by lm-eval (and stored)."""
    global _INDEX, _FRESH
    if _INDEX is not None and not (rebuild and not _FRESH):
        return _INDEX
    root = lm_eval_tasks_root()
    stored = _stored_path(root)
    index = None if rebuild else _load_stored(stored)
    if index is None:
        index, _FRESH = _build(), True
        _store(stored, index)
    _INDEX = index
    return index


def task_yaml(name: str) -> Path | None:
    """The YAML file of lm-eval's task `name`, or None when lm-eval has no such task."""
    found = task_index().get(name)
    if found is None or not found.is_file():
        found = task_index(rebuild=True).get(name)
    return found
