"""Task suites: user-writable suite files over lm-eval task YAML; four built-ins in `tasks/`.

Importing this package is cheap; lm-eval is imported when a suite is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.suites.base import ItemRequests, ItemResult, Renderer, Request, Response, Suite, SuiteInfo
from harness.suites.punkt import ensure_punkt
from harness.suites.spec import SuiteSpec, tasks_dir

if TYPE_CHECKING:
    from pathlib import Path

    from harness.suites.loader import SuiteListing
    from harness.suites.suite import LmEvalSuite

__all__ = [
    "ItemRequests",
    "ItemResult",
    "Renderer",
    "Request",
    "Response",
    "Suite",
    "SuiteInfo",
    "SuiteSpec",
    "ensure_punkt",
    "list_suites",
    "load_suite",
    "load_suites",
    "tasks_dir",
    "validate_suite_file",
]


def load_suite(
    path_or_name: str,
    *,
    limit: int | None,
    data_dir: Path | None = None,
    chat_template: bool | None = None,
    seed: int = 1234,
) -> LmEvalSuite:
    """See `harness.suites.loader.load_suite`."""
    from harness.suites.loader import load_suite as _load

    return _load(path_or_name, limit=limit, data_dir=data_dir, chat_template=chat_template, seed=seed)


def load_suites(
    selection: str,
    *,
    limit: int | None,
    data_dir: Path | None = None,
    chat_template: bool | None = None,
    seed: int = 1234,
    shots: Any = None,
    draws: int | None = None,
    max_gen_tokens: int | None = None,
) -> list[LmEvalSuite]:
    """See `harness.suites.loader.load_suites`."""
    from harness.suites.loader import load_suites as _load

    return _load(
        selection,
        limit=limit,
        data_dir=data_dir,
        chat_template=chat_template,
        seed=seed,
        shots=shots,
        draws=draws,
        max_gen_tokens=max_gen_tokens,
    )


def validate_suite_file(path: Any) -> SuiteInfo:
    """See `harness.suites.loader.validate_suite_file`."""
    from harness.suites.loader import validate_suite_file as _validate

    return _validate(path)


def list_suites(data_dir: Path | None = None) -> list[SuiteListing]:
    """See `harness.suites.loader.list_suites`."""
    from harness.suites.loader import list_suites as _list

    return _list(data_dir)
