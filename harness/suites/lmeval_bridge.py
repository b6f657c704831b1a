"""The bridge to lm-eval's task machinery: task YAML -> Task, Instances <-> our Requests, scoring.

lm-eval is imported only inside these functions (it is slow to import). We build
`ConfigurableTask` objects straight from a task YAML (lm-eval's own YAML loader resolves
`include:` and `!function`); TaskManager's index of 14k built-in tasks is built only to find a task
by name, and kept between runs (harness.suites.lmeval_index). Prompt
construction, few-shot sampling, filters and metrics all stay lm-eval's; the harness only runs
the requests.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.backends.base import SamplingParams
from harness.errors import HarnessError
from harness.suites.base import Renderer, Request, Response
from harness.suites.ifeval_support import seeded_random

INVALID = "[invalid]"  # lm-eval's RegexFilter fallback: nothing was extracted
_PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")


def check_jsonl(path: Path) -> int:
    """Every non-blank line must be a JSON object; returns how many. Checked before `datasets` sees it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"cannot read data file {path}: {exc}") from exc
    count = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HarnessError(
                f"{path} line {number} is not valid JSON ({exc.msg}): fix or remove that line"
            ) from None
        if not isinstance(record, dict):
            raise HarnessError(
                f"{path} line {number} is a JSON {type(record).__name__}, not an object: "
                "each line must be one item as {{...}}"
            )
        count += 1
    if count == 0:
        raise HarnessError(f"data file {path} has no items: add JSON lines, one item per line")
    return count


def _absolute_data_files(files: Any, bases: Sequence[Path], task_file: Path, check: bool) -> Any:
    """Rewrite data_files (str | list | {split: str | list}) to absolute paths (the first base
    holding the file wins); check JSON lines."""
    if isinstance(files, dict):
        return {split: _absolute_data_files(v, bases, task_file, check) for split, v in files.items()}
    if isinstance(files, list):
        return [_absolute_data_files(v, bases, task_file, check) for v in files]
    if not isinstance(files, str):
        raise HarnessError(
            f"{task_file}: dataset_kwargs.data_files must be a path, a list or a mapping of splits"
        )
    path = Path(files).expanduser()
    candidates = [path] if path.is_absolute() else [base / path for base in bases]
    path = next((p for p in candidates if p.is_file()), candidates[0])
    if not path.is_file():
        looked = " or ".join(str(p) for p in candidates)
        raise HarnessError(
            f"{task_file}: data file {looked} does not exist: check dataset_kwargs.data_files or --data-dir"
        )
    if check and path.suffix == ".jsonl":
        check_jsonl(path)
    return str(path.resolve())


LMEVAL_PREFIX = "lm-eval:"


def resolve_task_ref(ref: str, base: Path) -> Path:
    """A suite's task entry -> a task YAML path: `lm-eval:NAME` (lm-eval's registry) or a path."""
    from harness.suites.lmeval_index import task_index, task_yaml

    if not ref.startswith(LMEVAL_PREFIX):
        return (base / ref).resolve()
    name = ref.removeprefix(LMEVAL_PREFIX)
    found = task_yaml(name)
    if found is None:
        close = sorted(n for n in task_index() if name.split("_")[0] in n)[:8]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise HarnessError(f"lm-eval has no task named {name!r}{hint}: see `lm-eval ls tasks` for names")
    return found


def substitute(value: Any, variables: dict[str, str]) -> Any:
    """Replace `{var}` (single braces, known names only) in every string of a nested value.

    Jinja's `{{ ... }}` is left alone, so overrides may carry lm-eval templates."""
    if not variables:
        return value
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: variables.get(m.group(1), m.group(0)), value)
    if isinstance(value, dict):
        return {k: substitute(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    return value


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` over `base`: mappings merge key by key, anything else (lists too) replaces."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_task_config(
    task_file: Path, data_dir: Path | None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Read a task YAML with lm-eval's loader, apply overrides, find its data.

    Relative `data_files` become absolute (found beside the YAML, else in data_dir); a hub dataset the
    harness knows is read from data_dir instead (see harness.suites.datasets)."""
    from harness.suites.datasets import localize
    from harness.suites.punkt import ensure_punkt

    ensure_punkt()  # importing lm-eval's ifeval utils (a `!function` target) otherwise tries a download
    from lm_eval.tasks._yaml_loader import load_yaml

    import harness.suites.extract  # noqa: F401  (registers the harness's answer filters with lm-eval)

    if not task_file.is_file():
        raise HarnessError(f"task file {task_file} does not exist: check the suite's task/tasks entry")
    try:
        config = load_yaml(task_file, resolve_func=True, recursive=True)
    except Exception as exc:  # yaml errors, missing include, bad !function
        raise HarnessError(f"cannot load task file {task_file}: {str(exc).splitlines()[0]}") from exc
    config.pop("tag", None)
    config.pop("group", None)
    if overrides:
        config = deep_merge(config, overrides)
    if not isinstance(config.get("task"), str):
        config["task"] = task_file.stem
    kwargs = dict(config.get("dataset_kwargs") or {})
    if "data_files" in kwargs:
        bases = [task_file.parent] + ([data_dir] if data_dir is not None else [])
        check = config.get("dataset_path") == "json"
        kwargs["data_files"] = _absolute_data_files(kwargs["data_files"], bases, task_file, check)
        config["dataset_kwargs"] = kwargs
    return localize(config, data_dir, task_file)


def build_task(config: dict[str, Any], task_file: Path) -> Any:
    """A `ConfigurableTask` from a config dict; lm-eval's errors become one-line HarnessErrors."""
    from lm_eval.api.task import ConfigurableTask

    try:
        with _quiet():
            task = ConfigurableTask(config=config)
    except HarnessError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HarnessError(f"lm-eval cannot build the task in {task_file}: {first}") from exc
    if task.OUTPUT_TYPE == "loglikelihood_rolling":
        raise HarnessError(f"{task_file}: output_type loglikelihood_rolling is not supported by suites")
    return task


@contextlib.contextmanager
def _quiet() -> Any:
    """lm-eval draws tqdm bars while building requests; keep the harness's own progress clean."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def build_instances(
    task: Any,
    *,
    num_fewshot: int | None,
    seed: int,
    limit: int | None,
    render: Renderer | None,
    fewshot_as_multiturn: bool,
) -> list[Any]:
    """Fresh Instances for one variant. The few-shot sampler is re-seeded first, so every call
    (each model, each scoring pass) draws exactly the same examples for the same items."""
    if num_fewshot is not None:
        task.set_config(key="num_fewshot", value=num_fewshot)
    elif task.get_config("num_fewshot") is None:
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=seed)
    with _quiet():
        task.build_all_requests(
            limit=limit,
            apply_chat_template=render is not None,
            fewshot_as_multiturn=fewshot_as_multiturn and render is not None,
            chat_template=render,
        )
    instances = list(task.instances)
    task._instances = None  # the task object holds no state between calls
    return instances


LM_EVAL_DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's models generate this much unless the task says


def to_request(instance: Any, max_tokens: int | None, cap: int | None = None) -> Request:
    """An lm-eval Instance as an engine-level Request (greedy generation; stops from `until`).

    `max_tokens` None keeps the task's own budget, as lm-eval would; `cap` lowers any budget."""
    if instance.request_type == "generate_until":
        context, gen_kwargs = instance.args[0], instance.args[1]
        if max_tokens is None:
            max_tokens = int(gen_kwargs.get("max_gen_toks") or LM_EVAL_DEFAULT_MAX_GEN_TOKS)
        if cap is not None:
            max_tokens = min(max_tokens, cap)
        until = gen_kwargs.get("until") or []
        stop = (until,) if isinstance(until, str) else tuple(until)
        return Request(
            kind="generate",
            prompt=context,
            params=SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=stop),
        )
    if instance.request_type == "loglikelihood":  # also what multiple_choice tasks emit, one per option
        context, continuation = instance.args[0], instance.args[1]
        return Request(kind="loglikelihood", prompt=context, continuation=continuation)
    raise HarnessError(f"lm-eval request type {instance.request_type!r} is not supported by suites")


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """What lm-eval's own models do with `until`: keep the text before the first stop string."""
    for term in stop:
        if term:
            text = text.split(term)[0]
    return text


def response_value(request: Request, response: Response) -> Any:
    """The value lm-eval expects in Instance.resps: text for generation, (logprob, is_greedy) otherwise."""
    if request.kind == "generate":
        return cut_at_stop(response.text, request.params.stop if request.params else ())
    return (float(response.logprob), bool(response.is_greedy))


def score_instances(task: Any, instances: list[Any], values: list[Any]) -> dict[int, dict[str, Any]]:
    """Put responses on the Instances, apply lm-eval's filters, run process_results per doc.

    Returns doc_id -> {"metrics": {"metric,filter": raw value}, "filtered": {filter: value}}.
    """
    for instance, value in zip(instances, values, strict=True):
        instance.resps = [value]
        instance.filtered_resps = {}
    task._instances = instances
    try:
        task.apply_filters()
    finally:
        task._instances = None
    by_doc: dict[int, list[Any]] = defaultdict(list)
    for instance in instances:
        by_doc[instance.doc_id].append(instance)
    out: dict[int, dict[str, Any]] = {}
    for doc_id, group in by_doc.items():
        group.sort(key=lambda inst: inst.idx)
        metrics: dict[str, Any] = {}
        filtered: dict[str, Any] = {}
        for filter_key in group[0].filtered_resps:
            with seeded_random(0):  # IFEval's letter-frequency checker draws from the global RNG
                result = task.process_results(
                    group[0].doc, [inst.filtered_resps[filter_key] for inst in group]
                )
            metrics.update({f"{name},{filter_key}": value for name, value in result.items()})
            filtered[filter_key] = group[0].filtered_resps[filter_key]
        out[doc_id] = {"metrics": metrics, "filtered": filtered}
    return out
