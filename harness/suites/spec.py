"""The suite file a user writes (`tasks/<name>/suite.yaml`), parsed strictly.

A suite file names the lm-eval task YAML(s) it runs and how the harness sweeps them:

    name: icl-basic
    ability: icl                 # icl | cot | if
    description: Antonyms, learned from examples.
    chance: 0.0                  # a random guesser's primary score
    task: antonyms.yaml          # icl and if: one lm-eval task YAML (path relative to this file)
    shots: [0, 1, 2, 4]          # icl only: the few-shot sweep (variants "k=0", "k=1", ...)
    draws: 3                     # icl only: seeded example draws per k > 0 (spread = sensitivity)
    fewshot_seed: 1234           # optional; else load_suite's seed
    chat_template: false         # default for rendering prompts with the model's chat template
    max_tokens: 8                # or per variant {cot: 64, direct: 12}; default: the task's max_gen_toks
    primary_metric: exact_match,first-word   # lm-eval's "metric,filter" key

A CoT suite names two tasks instead of `task`: `tasks: {cot: cot.yaml, direct: direct.yaml}`.
A task is a YAML path or `lm-eval:NAME`, a task of lm-eval's registry (its data read from
`--data-dir` when the harness knows the dataset, else from the Hugging Face hub).

A suite over many subtasks (BIG-Bench Hard) lists them, each with optional variables; `{subtask}`
and `{VAR}` in task names and `overrides` are replaced per subtask, and each subtask becomes its
own suite named `NAME:SUBTASK` (the group `NAME` is summarised over all of them):

    subtasks:
      navigate: {answer_format: yes_no, chance: 0.5}
    tasks: {cot: "lm-eval:bbh_cot_fewshot_{subtask}", direct: "lm-eval:bbh_fewshot_{subtask}"}
    overrides:                   # deep-merged into the lm-eval task config, per variant or `all`
      all: {filter_list: [...]}

Only `pydantic` and `yaml` are imported here, so listing suites stays fast.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.errors import HarnessError

SUITE_FILE = "suite.yaml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
TASKS_ENV = "HARNESS_TASKS_DIR"
COT_VARIANTS = ("cot", "direct")


class SuiteSpec(BaseModel):
    """What a suite file may say; unknown keys are errors (extra="forbid")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    ability: Literal["icl", "cot", "if"]
    description: str = ""
    chance: float = Field(ge=0.0, le=1.0)
    task: str | None = None
    tasks: dict[str, str] | None = None
    subtasks: dict[str, dict[str, Any]] | None = None
    overrides: dict[str, dict[str, Any]] | None = None
    shots: list[int] | None = None
    draws: int = Field(default=1, ge=1, le=20)
    fewshot_seed: int | None = None
    chat_template: bool = False
    max_tokens: int | dict[str, int] | None = None
    primary_metric: str = Field(min_length=1)
    id_field: str | None = None  # a doc field that names each item; default "id", "key", else its index
    kd_variant: str | None = None  # whose prompts the KD check uses; default: the last variant

    @field_validator("shots")
    @classmethod
    def _shots(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or any(k < 0 for k in value) or len(set(value)) != len(value)):
            raise ValueError("shots must be a non-empty list of distinct counts >= 0, e.g. [0, 1, 2, 4]")
        return value

    @field_validator("max_tokens")
    @classmethod
    def _max_tokens(cls, value: int | dict[str, int] | None) -> int | dict[str, int] | None:
        if value is None:
            return None
        values = value.values() if isinstance(value, dict) else [value]
        if any(v < 1 for v in values):
            raise ValueError("max_tokens must be >= 1")
        return value

    @model_validator(mode="after")
    def _per_ability(self) -> SuiteSpec:
        if self.ability == "cot":
            if self.task is not None or self.tasks is None or set(self.tasks) != set(COT_VARIANTS):
                raise ValueError("a cot suite names `tasks: {cot: FILE, direct: FILE}` (and no `task`)")
        elif self.task is None or self.tasks is not None:
            raise ValueError(f"an {self.ability} suite names one `task: FILE` (and no `tasks`)")
        if (self.shots is not None or self.draws != 1) and self.ability != "icl":
            raise ValueError("`shots` and `draws` are for icl suites only")
        if self.overrides is not None and not set(self.overrides) <= {*self.variants, "all"}:
            raise ValueError(f"overrides name variants {list(self.variants)} or `all`")
        for sub, values in (self.subtasks or {}).items():
            if not _NAME.match(sub):
                raise ValueError(f"subtask name {sub!r} must be letters, digits, _ . -")
            chance = (values or {}).get("chance", self.chance)
            if not isinstance(chance, int | float) or not 0.0 <= chance <= 1.0:
                raise ValueError(f"subtask {sub}: chance must be a number in [0, 1]")
        if isinstance(self.max_tokens, dict) and set(self.max_tokens) != set(self.variants):
            raise ValueError(f"max_tokens per variant must name exactly {list(self.variants)}")
        if self.kd_variant is not None and self.kd_variant not in self.variants:
            raise ValueError(f"kd_variant must be one of {list(self.variants)}")
        return self

    @property
    def variants(self) -> tuple[str, ...]:
        if self.ability == "icl":
            return tuple(f"k={k}" for k in (self.shots or [0, 1, 2, 4]))
        if self.ability == "cot":
            return COT_VARIANTS
        return ("default",)

    @property
    def baseline_variant(self) -> str:
        return {"icl": self.variants[0], "cot": "direct", "if": "default"}[self.ability]

    def max_tokens_for(self, variant: str) -> int | None:
        """None: the task's own budget (its generation_kwargs.max_gen_toks, else lm-eval's 256)."""
        return self.max_tokens[variant] if isinstance(self.max_tokens, dict) else self.max_tokens

    def subtask_vars(self, subtask: str | None) -> dict[str, str]:
        """The placeholders of one subtask: `subtask` plus its own variables."""
        if subtask is None:
            return {}
        values = (self.subtasks or {}).get(subtask) or {}
        return {"subtask": subtask, **{k: str(v) for k, v in values.items()}}

    def chance_for(self, subtask: str | None) -> float:
        values = (self.subtasks or {}).get(subtask or "") or {}
        return float(values.get("chance", self.chance))

    def task_files(self) -> dict[str, str]:
        """Variant -> task YAML path as written (relative to the suite file)."""
        if self.tasks is not None:
            return dict(self.tasks)
        assert self.task is not None
        return {v: self.task for v in self.variants}


def tasks_dir() -> Path:
    """Where the built-in suites live.

    In a source checkout (editable install) that is `<repo>/tasks`, next to the `harness`
    package. A non-editable install has no repo around the package, so $HARNESS_TASKS_DIR
    names the folder instead (it wins when set).
    """
    env = os.environ.get(TASKS_ENV)
    if env:
        return Path(env).expanduser()
    import harness

    return Path(harness.__file__).resolve().parents[1] / "tasks"


def resolve_suite_file(path_or_name: str) -> Path:
    """A path to a suite file (or to a folder holding suite.yaml), or the name of a built-in suite."""
    path = Path(path_or_name).expanduser()
    if path.is_dir():
        path = path / SUITE_FILE
    if path.is_file():
        return path.resolve()
    looks_like_path = path.suffix in (".yaml", ".yml") or os.sep in path_or_name
    builtin = tasks_dir() / path_or_name / SUITE_FILE
    if not looks_like_path and builtin.is_file():
        return builtin.resolve()
    if looks_like_path:
        raise HarnessError(f"suite file {path_or_name} does not exist: check the path")
    known = ", ".join(builtin_names()) or f"none found in {tasks_dir()} (set ${TASKS_ENV})"
    raise HarnessError(
        f"unknown suite {path_or_name!r}: built-in suites are {known}; or give a path to a suite.yaml"
    )


def builtin_names() -> list[str]:
    root = tasks_dir()
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob(f"*/{SUITE_FILE}"))


def _format_error(path: Path, exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(SuiteSpec.model_fields)
        return f"{path}: unknown key {key!r}; allowed keys: {allowed}"
    if err["type"] == "missing":
        return f"{path}: missing required key {key!r}"
    return f"{path}: {key}: {err['msg']}"


def read_suite_spec(path: Path) -> SuiteSpec:
    """Parse a suite file; every problem is a one-line HarnessError naming the file and key."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"cannot read suite file {path}: {exc}") from exc
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise HarnessError(
            f"suite file {path}{where} is not valid YAML: {getattr(exc, 'problem', exc)}"
        ) from exc
    if raw is None:
        raise HarnessError(
            f"suite file {path} is empty: it needs name, ability, chance, task(s), max_tokens, primary_metric"
        )
    if not isinstance(raw, dict):
        raise HarnessError(
            f"suite file {path} must be a mapping of keys to values, not a {type(raw).__name__}"
        )
    try:
        return SuiteSpec.model_validate(raw)
    except ValidationError as exc:
        raise HarnessError(_format_error(path, exc)) from None
