"""The settings of one compare run, validated before any model loads."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.backends import ModelSpec
from harness.errors import HarnessError

DEFAULT_SUITES = ("icl-basic", "cot-basic", "if-basic", "mc-basic")


@dataclass(frozen=True)
class CompareConfig:
    teacher: ModelSpec
    students: tuple[ModelSpec, ...]
    base: ModelSpec | None = None
    suites: tuple[str, ...] = DEFAULT_SUITES
    limit: int | None = None
    out_dir: Path = Path("reports/latest")
    cache_dir: Path = field(default_factory=lambda: default_cache_dir())
    data_dir: Path | None = None
    seed: int = 1234
    bootstrap: int = 1000
    chat_template: bool | None = None  # None = each suite's default
    shots: tuple[int, ...] | None = None  # ICL shot sweep for every icl suite (None: each suite's own)
    icl_draws: int | None = None  # seeded example draws per k > 0 (None: each suite's own)
    max_gen_tokens: int | None = None  # caps every suite generation budget (None: the tasks' own)
    kd: bool = True
    kd_temperatures: tuple[float, ...] = (1.0, 2.0)
    kd_max_tokens: int = 64
    kd_max_sequences: int = 48  # teacher generations scored, an even share from each suite
    kd_top_k: int = 20
    kd_mode: str = "auto"  # auto | exact | lower-bound
    kd_cka_positions: int = 1024  # token positions sampled for linear CKA of hidden states (0 = no CKA)
    chunk_size: int = 256  # requests per engine call: big enough to batch well, small enough to resume
    engine_args: dict[str, Any] = field(default_factory=dict)

    def roles(self) -> list[tuple[str, ModelSpec]]:
        """(role, spec) in scheduling order: teacher first, then students, then the base."""
        out = [("teacher", self.teacher)] + [("student", s) for s in self.students]
        return out + ([("base", self.base)] if self.base else [])

    def validate(self) -> None:
        """Cheap checks that need no model: raise HarnessError with the fix."""
        if self.limit is not None and self.limit < 1:
            raise HarnessError(
                f"--limit {self.limit}: the limit must be a positive number of items per suite"
            )
        if self.chunk_size < 1:
            raise HarnessError(f"--chunk-size {self.chunk_size}: use a positive number of requests")
        if self.kd_max_sequences < 1 or self.kd_max_tokens < 1:
            raise HarnessError("--kd-max-sequences and --kd-max-tokens must be positive")
        if not self.suites:
            raise HarnessError("no suites selected: pass --suite NAME (see `harness suites`)")
        if not self.students:
            raise HarnessError("no student given: `harness compare TEACHER STUDENT [STUDENT...]`")
        if self.kd_cka_positions < 0:
            raise HarnessError(
                f"--kd-cka-positions {self.kd_cka_positions}: use a number >= 0 (0 turns CKA off)"
            )
        if self.kd_mode not in ("auto", "exact", "lower-bound"):
            raise HarnessError(f"--kd-mode {self.kd_mode!r}: use auto, exact or lower-bound")
        for t in self.kd_temperatures:
            if not t > 0:
                raise HarnessError(f"--kd-temperature {t}: temperatures must be positive")
        labels = [spec.label for _, spec in self.roles()]
        if len(set(labels)) != len(labels):
            raise HarnessError(f"two models share the display name in {labels}: give distinct folders")
        for role, spec in self.roles():
            check_model_path(role, spec)


def check_model_path(role: str, spec: ModelSpec) -> None:
    """A local-looking path must exist; a hub id (org/name) is left to the backend."""
    if spec.backend in ("mock", "openai"):  # not a folder: a scripted model or a URL
        return
    path = Path(spec.path).expanduser()
    looks_local = spec.path.startswith((".", "/", "~")) or path.exists() or spec.path.count("/") != 1
    if looks_local and not path.exists():
        raise HarnessError(
            f"{role} model folder {spec.path} does not exist: check the path (or run `harness demo prepare`)"
        )
    if path.is_dir() and not (path / "config.json").exists():
        raise HarnessError(
            f"{role} model folder {spec.path} has no config.json: point at a Hugging Face model folder"
        )


def default_cache_dir() -> Path:
    root = os.environ.get("HARNESS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "distill-harness"
    )
    return Path(root)
