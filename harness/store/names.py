"""Names in the run store: where the store is by default, run ids, tags, and the --since filter's times."""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

from harness.errors import HarnessError

STORE_ENV = "HARNESS_STORE"
TAG_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")


def default_store() -> Path:
    """$HARNESS_STORE, else $XDG_DATA_HOME/distill-harness/store (~/.local/share/...)."""
    root = os.environ.get(STORE_ENV) or os.path.join(
        os.environ.get("XDG_DATA_HOME", os.path.expanduser("~/.local/share")), "distill-harness", "store"
    )
    return Path(root)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_run_id() -> str:
    """Sortable by time, unique across processes: 20261124T221500Z-1a2b3c4d."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def check_tag(tag: str) -> None:
    if not TAG_PATTERN.match(tag) or tag == "latest":
        raise HarnessError(
            f"tag {tag!r} is invalid: start with a letter, then letters, digits, '.', '_' or '-' "
            "(at most 64), and not 'latest'"
        )


def parse_since(text: str) -> str:
    """An ISO date/time ('2026-11-01', '2026-11-01T12:00') or 'Nd' (the last N days) as an ISO string."""
    match = re.fullmatch(r"(\d+)d", text.strip())
    if match:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400 * int(match.group(1))))
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2})?Z?)?", text.strip()):
        return text.strip().replace(" ", "T")
    raise HarnessError(f"--since {text!r}: give a date like 2026-11-01 (or 2026-11-01T12:00) or 7d")
