"""`harness run nightly.yaml`: a compare described in a file, committed into a run store, then gated.

The file says everything `harness compare` flags can say, by CompareConfig's own field names (so the
two cannot drift: the keys are built from CompareConfig's fields), plus where the run goes and what it
is gated against:

    teacher: hf:./models/teacher            # or {path: ..., backend: hf, label: teacher}
    students: [{path: ./models/student-nightly, label: student}]
    backend: hf                             # default backend of models without a prefix
    suites: [icl-basic, cot-basic]
    limit: 48
    kd_max_sequences: 24
    engine_args: {max_model_len: 2048}
    store: /var/lib/distill-harness/store   # the run store (default $HARNESS_STORE)
    tags: [nightly]                         # given to every run
    tags_on_pass: [nightly-good]            # given when the gate passes (or there is no baseline yet)
    baseline: {tag: nightly-good}           # or {run: RUN_ID_OR_FOLDER}; if_missing: skip | error;
                                            # test: non-inferiority (default) | regression
    margins: {score: 0.02, forward_kl: 10%}
    alpha: 0.05
    formats: html

Relative paths are relative to the file; $VARS are expanded. Errors name the file, the key and what
is allowed. A killed `harness run` resumes when started again (same file): the run id is kept in the
store until the run is committed, and the response cache holds everything computed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from harness.backends import BACKENDS
from harness.config import DEFAULT_SUITES, CompareConfig
from harness.errors import HarnessError, InfrastructureError

# CompareConfig fields the file says in its own way (models, suites, the output folder).
SPECIAL = ("teacher", "students", "base", "suites")
# Nicer types than CompareConfig's plain ones, so errors list the allowed values.
OVERRIDES: dict[str, Any] = {
    "kd_mode": Literal["auto", "exact", "lower-bound"],
    "chat_template": Literal["auto", "on", "off"] | bool | None,
    "limit": int | None,
}


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)
    backend: Literal["vllm", "hf", "mock"] | None = None
    label: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class BaselinePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tag: str | None = None
    run: str | None = None
    if_missing: Literal["skip", "error"] = "skip"
    # the gate's hypotheses (harness.regress): H0 drop >= margin (non-inferiority) or drop <= margin
    test: Literal["non-inferiority", "regression"] = "non-inferiority"

    def ref(self) -> str:
        if (self.tag is None) == (self.run is None):
            raise ValueError("give exactly one of tag or run")
        return str(self.tag or self.run)


def _compare_fields() -> dict[str, Any]:
    """(type, default) of every CompareConfig field but the SPECIAL ones, for pydantic."""
    hints = typing.get_type_hints(CompareConfig)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(CompareConfig):
        if f.name in SPECIAL:
            continue
        kind = OVERRIDES.get(f.name, hints[f.name])
        out[f.name] = (kind | None if f.name in ("cache_dir", "out_dir") else kind, None)
    return out


_CompareKeys: type[BaseModel] = create_model(
    "_CompareKeys", __config__=ConfigDict(extra="forbid"), **_compare_fields()
)


class RunFile(_CompareKeys):  # type: ignore[misc, valid-type]
    """What a run file may say; unknown keys are errors (extra="forbid")."""

    name: str | None = None
    teacher: str | ModelEntry
    students: list[str | ModelEntry] = Field(min_length=1)
    base: str | ModelEntry | None = None
    backend: Literal["vllm", "hf", "mock"] | None = None
    suites: list[str] = Field(default_factory=lambda: list(DEFAULT_SUITES), min_length=1)
    report: bool = True
    formats: str = "html"
    store: Path | None = None
    tags: list[str] = Field(default_factory=list)
    tags_on_pass: list[str] = Field(default_factory=list)
    baseline: BaselinePolicy | None = None
    margins: dict[str, float | str] = Field(default_factory=dict)
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)

    @field_validator("baseline")
    @classmethod
    def _one_ref(cls, value: BaselinePolicy | None) -> BaselinePolicy | None:
        if value is not None:
            value.ref()
        return value


def _format_error(path: Path, exc: ValidationError) -> str:
    """One line: the key (dotted, list positions as numbers), what is wrong and what is allowed."""
    errors = exc.errors()
    # "str | ModelEntry" fails twice for a mapping: report the mapping's problem, not "not a string"
    err = next((e for e in errors if e["type"] != "string_type"), errors[0])
    loc = [str(p) for p in err["loc"]]
    key = ".".join(p for p in loc if p not in ("str", "ModelEntry", "BaselinePolicy")) or "(top)"
    if err["type"] == "extra_forbidden":
        model = ModelEntry if "ModelEntry" in loc else BaselinePolicy if "baseline" in loc else RunFile
        return f"{path}: unknown key {key!r}; allowed keys: {', '.join(model.model_fields)}"
    if err["type"] == "missing":
        return f"{path}: missing required key {key!r}"
    return f"{path}: key {key!r}: {err['msg']}"


def load_run_file(path: Path | str) -> RunFile:
    """Parse and validate a run file; every problem is a one-line HarnessError naming the file and key."""
    path = Path(path)
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"cannot read run file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise HarnessError(
            f"run file {path}{where} is not valid YAML: {getattr(exc, 'problem', exc)}"
        ) from exc
    if not isinstance(raw, dict):
        raise HarnessError(f"run file {path} must be a mapping of keys (teacher, students, ...) to values")
    try:
        return RunFile.model_validate(raw)
    except ValidationError as exc:
        raise HarnessError(_format_error(path, exc)) from None


# -- the file as a CompareConfig -------------------------------------------------------------------------
def _local(base_dir: Path, text: str) -> str:
    text = os.path.expandvars(os.path.expanduser(text))
    if text.startswith(("./", "../")) or (not os.path.isabs(text) and (base_dir / text).exists()):
        return str((base_dir / text).resolve())
    return text


def _path(base_dir: Path, value: Path | str) -> Path:
    """A folder key (cache_dir, out_dir, data_dir, store): relative to the file's folder, $VARS expanded."""
    path = Path(os.path.expandvars(os.path.expanduser(str(value))))
    return path if path.is_absolute() else (base_dir / path).resolve()


def _spec(entry: str | ModelEntry, default: str | None, base_dir: Path) -> Any:
    from harness.backends import parse_model_spec

    if isinstance(entry, str):
        backend, sep, rest = entry.partition(":")
        if sep and backend in BACKENDS:
            return parse_model_spec(f"{backend}:{_local(base_dir, rest)}", default)
        return parse_model_spec(_local(base_dir, entry), default)
    path = _local(base_dir, entry.path)
    return parse_model_spec(f"{entry.backend}:{path}" if entry.backend else path, default, label=entry.label)


def _flag_to_key(message: str) -> str:
    """CompareConfig.validate() speaks in CLI flags; a file's user needs the key."""
    return re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), message)


def to_compare_config(run: RunFile, base_dir: Path) -> CompareConfig:
    from harness.config import default_cache_dir

    values: dict[str, Any] = {}
    for name in _compare_fields():
        value = getattr(run, name)
        if value is None:
            continue
        if name == "chat_template":
            value = (
                {"on": True, "off": False, "auto": None}.get(value, value)
                if isinstance(value, str)
                else value
            )
        if isinstance(value, Path):
            value = _path(base_dir, value)
        values[name] = value
    values.setdefault("cache_dir", default_cache_dir())
    config = CompareConfig(
        teacher=_spec(run.teacher, run.backend, base_dir),
        students=tuple(_spec(s, run.backend, base_dir) for s in run.students),
        base=_spec(run.base, run.backend, base_dir) if run.base is not None else None,
        suites=tuple(_local(base_dir, s) if s.endswith((".yaml", ".yml")) else s for s in run.suites),
        **values,
    )
    try:
        config.validate()
    except HarnessError as exc:
        raise HarnessError(f"run file: {_flag_to_key(str(exc))}") from None
    return config


# -- running: compare, gate, report, commit ----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Plan:
    """What to do around the compare: where it goes and what it is gated against."""

    store: Path | None = None
    baseline: str | None = None
    baseline_if_missing: str = "error"
    margins: dict[str, str] = dataclasses.field(default_factory=dict)
    alpha: float = 0.05
    test: str = "non-inferiority"  # the gate's mode: non-inferiority or regression (harness.regress)
    report: bool = True
    formats: str = "html"
    tags: tuple[str, ...] = ()
    tags_on_pass: tuple[str, ...] = ()
    json_out: Path | None = None
    pending_key: str | None = None  # resume a killed `harness run` of the same file
    move_into_store: bool = False  # the run folder is a staging folder of the store


def _baseline_path(plan: Plan) -> Path | None:
    from harness.store.index import resolve

    if plan.baseline is None:
        return None
    try:
        return resolve(plan.store, plan.baseline)
    except HarnessError as exc:
        if plan.baseline_if_missing == "skip" and not isinstance(exc, InfrastructureError):
            print(f"no baseline yet ({exc}); the gate is skipped this time")
            return None
        raise


def _gate(plan: Plan, baseline: Path, run_dir: Path, current_name: str) -> Any:
    from harness.regress import format_verdict, gate, load_for_gate, write_verdict

    verdict = gate(
        load_for_gate(baseline),
        load_for_gate(run_dir),
        margins=plan.margins,
        alpha=plan.alpha,
        names=(plan.baseline or str(baseline), current_name),
        test=plan.test,
    )
    write_verdict(verdict, run_dir, plan.json_out)
    print(format_verdict(verdict))
    return verdict


def _compute(config: CompareConfig, plan: Plan, baseline: Path | None, run_id: str | None) -> tuple[Any, ...]:
    """The compare, the gate and the reports: (run folder, verdict or None, {format: path})."""
    import sqlite3

    from harness.api import compare, report_formats

    try:
        run_dir = compare(config, report=False, console=True)
        verdict = _gate(plan, baseline, run_dir, run_id or str(run_dir)) if baseline is not None else None
        written = report_formats(run_dir, plan.formats) if plan.report else {}
    except OSError as exc:  # a full disk, a vanished folder: the run is not committed
        raise InfrastructureError(
            f"writing the run failed ({exc.strerror or exc}): nothing was committed"
        ) from exc
    except sqlite3.OperationalError as exc:  # the response cache: "database or disk is full", I/O errors
        raise InfrastructureError(f"the response cache failed ({exc}): nothing was committed") from exc
    return run_dir, verdict, written


def compare_and_gate(config: CompareConfig, plan: Plan) -> int:
    """Compare, gate against the baseline, render the reports, commit into the store; the gate's exit code."""
    from harness.store.index import RunStore, new_run_id

    baseline = _baseline_path(plan)  # an unknown baseline fails before any model loads
    if plan.store is None:
        _, verdict, written = _compute(config, plan, baseline, None)
        _print_reports(written)
        return 0 if verdict is None else int(verdict.exit_code)
    with RunStore(plan.store) as store, store.job_lock(plan.pending_key):
        run_id = store.pending(plan.pending_key) if plan.pending_key else new_run_id()
        if store.is_committed(run_id):
            return _already_committed(store, run_id, plan)  # killed after its commit: finish the bookkeeping
        if plan.move_into_store:
            config = dataclasses.replace(config, out_dir=store.staging(run_id))
        run_dir, verdict, written = _compute(config, plan, baseline, run_id)
        code = 0 if verdict is None else int(verdict.exit_code)
        tags = plan.tags + (plan.tags_on_pass if code == 0 else ())
        entry = store.commit(
            run_dir,
            run_id=run_id,
            tags=tags,
            move=plan.move_into_store,
            verdict=None if verdict is None else verdict.verdict,
            baseline=plan.baseline if verdict is not None else None,
        )
        if plan.pending_key:
            store.finish_pending(plan.pending_key, run_id)
    print(f"committed: {entry.run_id} ({entry.path}){' tags: ' + ', '.join(tags) if tags else ''}")
    if plan.move_into_store:  # the reports moved with the run folder
        moved = {f: Path(p) for f, p in written.items() if Path(p).is_relative_to(run_dir)}
        written.update({f: entry.path / p.relative_to(run_dir) for f, p in moved.items()})
    _print_reports(written)
    return code


def _print_reports(written: dict[str, Path]) -> None:
    for fmt, path in written.items():
        print(f"{'report' if fmt == 'html' else fmt}: {path}")


def _already_committed(store: Any, run_id: str, plan: Plan) -> int:
    import json

    path = store.run_path(run_id) / "regress.json"
    verdict = json.loads(path.read_text())["verdict"] if path.exists() else None
    code = 1 if verdict == "regression" else 0
    for tag in plan.tags + (plan.tags_on_pass if code == 0 else ()):
        store.tag(run_id, tag)
    if plan.pending_key:
        store.finish_pending(plan.pending_key, run_id)
    print(f"run {run_id} was already committed (a resumed run); verdict: {verdict or 'no gate'}")
    return code


def run_file(path: Path | str, *, store: Path | None = None) -> int:
    """`harness run FILE`: load, compare into the store, gate; the exit code (0 pass, 1 regression)."""
    from harness.store.index import check_tag, default_store

    path = Path(path)
    run = load_run_file(path)
    base_dir = path.resolve().parent
    for tag in run.tags + run.tags_on_pass:
        try:
            check_tag(tag)
        except HarnessError as exc:
            raise HarnessError(f"{path}: key 'tags': {exc}") from None
    config = to_compare_config(run, base_dir)
    root = store or (_path(base_dir, run.store) if run.store else default_store())
    key = hashlib.sha256(str(path.resolve()).encode() + path.read_bytes()).hexdigest()[:16]
    plan = Plan(
        store=root,
        baseline=run.baseline.ref() if run.baseline else None,
        baseline_if_missing=run.baseline.if_missing if run.baseline else "error",
        margins={k: str(v) for k, v in run.margins.items()},
        alpha=run.alpha,
        test=run.baseline.test if run.baseline else "non-inferiority",
        report=run.report,
        formats=run.formats,
        tags=tuple(run.tags),
        tags_on_pass=tuple(run.tags_on_pass),
        pending_key=key,
        move_into_store=True,
    )
    return compare_and_gate(config, plan)
