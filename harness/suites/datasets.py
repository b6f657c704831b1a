"""Where a task's dataset comes from: a local copy under `--data-dir`, else the Hugging Face hub.

lm-eval's task YAMLs name hub datasets (`dataset_path: openai/gsm8k`). For the public datasets the
harness knows, a local folder in the benchmark's original layout replaces the hub:

    DATA_DIR/gsm8k/train.jsonl, test.jsonl          (openai/grade-school-math)
    DATA_DIR/bbh/bbh/<subtask>.json                 (suzgunmirac/BIG-Bench-Hard: {"examples": [...]})
    DATA_DIR/ifeval/input_data.jsonl                (google-research instruction_following_eval)

Any other dataset is read from the hub, which needs a network connection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

DATA_DIR_ENV = "HARNESS_DATA_DIR"


@dataclass(frozen=True)
class LocalDataset:
    """How one hub dataset is laid out in a local folder."""

    folder: str
    splits: dict[str, str]  # lm-eval split name -> file under DATA_DIR (may hold "{name}")
    field: str | None = None  # a JSON file's key holding the records

    def files(self, data_dir: Path, name: str | None) -> dict[str, Path]:
        return {split: data_dir / rel.format(name=name or "") for split, rel in self.splits.items()}


KNOWN: dict[str, LocalDataset] = {
    "openai/gsm8k": LocalDataset("gsm8k", {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"}),
    "gsm8k": LocalDataset("gsm8k", {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"}),
    "SaylorTwift/bbh": LocalDataset("bbh", {"test": "bbh/bbh/{name}.json"}, field="examples"),
    "lukaemon/bbh": LocalDataset("bbh", {"test": "bbh/bbh/{name}.json"}, field="examples"),
    "google/IFEval": LocalDataset("ifeval", {"train": "ifeval/input_data.jsonl"}),
}


def default_data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser() if value else None


def hub_offline() -> bool:
    return any(
        os.environ.get(k, "").lower() in ("1", "true", "yes")
        for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def localize(config: dict[str, Any], data_dir: Path | None, task_file: Path) -> dict[str, Any]:
    """Point a task config at the local copy of its dataset when one is known and present.

    Raises a HarnessError saying where it looked when the data is neither local nor reachable.
    """
    path = config.get("dataset_path")
    if not isinstance(path, str) or path in ("json", "csv", "parquet", "text", "arrow"):
        return config
    layout = KNOWN.get(path)
    name = config.get("dataset_name")
    task = config.get("task", task_file.stem)
    if layout is not None and data_dir is not None:
        files = layout.files(data_dir, name)
        missing = [p for p in files.values() if not p.is_file()]
        if not missing:
            out = dict(config)
            out["dataset_path"] = "json"
            out["dataset_name"] = None
            kwargs: dict[str, Any] = {"data_files": {s: str(p.resolve()) for s, p in files.items()}}
            if layout.field:
                kwargs["field"] = layout.field
            out["dataset_kwargs"] = kwargs
            return out
        looked = f"looked for {', '.join(str(p) for p in missing)}"
    elif layout is not None:
        looked = "no --data-dir was given"
    else:
        looked = "the harness has no local layout for it"
    if hub_offline():
        where = (
            f"pass --data-dir DIR holding {layout.folder}/ (as in {', '.join(layout.splits.values())})"
            if layout is not None
            else "unset HF_HUB_OFFLINE/HF_DATASETS_OFFLINE and run online"
        )
        raise HarnessError(
            f"task {task} needs the dataset {path}{'/' + name if name else ''}, but {looked} and the "
            f"hub is offline: {where}"
        )
    return config
