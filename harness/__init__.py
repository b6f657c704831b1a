"""distill-harness: what did the distilled student keep of its teacher?

The public API is small and re-exported here; everything heavy is imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CompareConfig",
    "HarnessError",
    "RunStore",
    "__version__",
    "compare",
    "load_backend",
    "load_run",
    "parse_model_spec",
    "read_record",
    "report",
    "run_gate",
]

if TYPE_CHECKING:
    from harness.api import compare, report
    from harness.backends import load_backend, parse_model_spec
    from harness.config import CompareConfig
    from harness.errors import HarnessError
    from harness.regress import run_gate
    from harness.results import load_run
    from harness.store.index import RunStore
    from harness.store.record import read_record

_LAZY = {
    "compare": "harness.api",
    "report": "harness.api",
    "load_backend": "harness.backends",
    "load_run": "harness.results",
    "parse_model_spec": "harness.backends",
    "CompareConfig": "harness.config",
    "HarnessError": "harness.errors",
    "read_record": "harness.store.record",
    "run_gate": "harness.regress",
    "RunStore": "harness.store.index",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
