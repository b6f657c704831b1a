"""Writing a run folder into the store durably: fsynced copies and trees; the error of a failed write."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from harness.errors import InfrastructureError
from harness.store.record import fsync_dir


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(Path(folder))


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy a run folder file by file, fsyncing each; the first failed write (ENOSPC, EFBIG) raises."""
    for folder, _, files in os.walk(src):
        target = dst / Path(folder).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                continue  # an atomic write in flight in the source
            with open(os.path.join(folder, name), "rb") as fin, open(target / name, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
                fout.flush()
                os.fsync(fout.fileno())
        fsync_dir(target)


def _infra(action: str, exc: OSError) -> InfrastructureError:
    reason = exc.strerror or str(exc)
    return InfrastructureError(f"{action} failed ({reason}): nothing was committed, earlier runs are intact")
