"""Load, validate and list suites. Every problem surfaces here, before any model loads."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.suites.base import Request, Response, SuiteInfo
from harness.suites.lmeval_bridge import build_task, load_task_config
from harness.suites.spec import builtin_names, read_suite_spec, resolve_suite_file, tasks_dir
from harness.suites.suite import LmEvalSuite, Variant


def load_suite(
    path_or_name: str,
    *,
    limit: int | None,
    data_dir: Path | None = None,
    chat_template: bool | None = None,
    seed: int = 1234,
) -> LmEvalSuite:
    """Load a suite by built-in name (a folder of `tasks/`) or by path to its suite.yaml.

    `limit` keeps the first N items; `data_dir` replaces the task YAMLs' folder as the base of
    relative `data_files`; `chat_template` overrides the suite's default; `seed` is the few-shot
    seed unless the suite file fixes `fewshot_seed`. Builds requests and scores placeholder
    answers for one item, so a broken task, filter or metric fails now, not after generation.
    """
    if limit is not None and limit < 1:
        raise HarnessError(f"limit must be a positive number of items (got {limit}): use --limit 1 or more")
    path = resolve_suite_file(path_or_name)
    spec = read_suite_spec(path)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise HarnessError(f"data folder {data_dir} does not exist: check --data-dir")
    tasks: dict[Path, Any] = {}
    variants = []
    for variant, rel in spec.task_files().items():
        task_file = (path.parent / rel).resolve()
        if task_file not in tasks:
            config = load_task_config(task_file, Path(data_dir) if data_dir is not None else None)
            tasks[task_file] = build_task(config, task_file)
        shots = int(variant.removeprefix("k=")) if spec.ability == "icl" else None
        variants.append(Variant(variant, task_file, shots, spec.max_tokens_for(variant)))
    use_chat = spec.chat_template if chat_template is None else chat_template
    suite = LmEvalSuite(spec, path, tasks, variants, limit=limit, chat_template=use_chat, seed=seed)
    _probe(suite, path)
    return suite


def _fake_render(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
    return text + ("<assistant>" if add_generation_prompt else "")


def _probe(suite: LmEvalSuite, path: Path) -> None:
    """Build and score one item of every variant with placeholder answers (no model)."""
    probe = LmEvalSuite(
        suite.spec,
        suite.path,
        suite.tasks,
        suite.variants,
        limit=1,
        chat_template=suite.chat_template,
        seed=suite.seed,
    )
    try:
        items = probe.item_requests(render=_fake_render)
        answers: Mapping[Request, Response] = {
            r: Response(text="", finish_reason="stop") for item in items for r in item.requests
        }
        results = probe.score("probe", answers, render=_fake_render)
    except HarnessError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HarnessError(f"{path}: lm-eval cannot build or score its requests: {first}") from exc
    for variant in suite.variants:
        if not any(r.variant == variant.name for r in results):
            raise HarnessError(f"{path}: variant {variant.name} has no items")
    if len({t for t in suite.tasks}) > 1:
        _check_same_items(suite, path)


def _check_same_items(suite: LmEvalSuite, path: Path) -> None:
    """A CoT suite's two tasks must run on the same items, or the CoT gain compares apples and pears."""
    ids = []
    for task in suite.tasks.values():
        docs = list(task.eval_docs)[: suite.limit] if suite.limit else list(task.eval_docs)
        ids.append([suite._item_id(doc, i) for i, doc in enumerate(docs)])
    if any(other != ids[0] for other in ids[1:]):
        raise HarnessError(
            f"{path}: the tasks of this suite do not hold the same items in the same order: "
            "point them at the same data_files"
        )


def validate_suite_file(path: str | Path) -> SuiteInfo:
    """For `harness validate`: parse, build the lm-eval task(s), read every data line, build and
    score one item. Raises HarnessError on any problem; returns the suite's info."""
    return load_suite(str(path), limit=None).info()


def list_suites() -> list[SuiteInfo]:
    """The built-in suites in `tasks/` (or $HARNESS_TASKS_DIR)."""
    names = builtin_names()
    if not names:
        raise HarnessError(
            f"no built-in suites found in {tasks_dir()}: set $HARNESS_TASKS_DIR to the "
            "project's tasks/ folder"
        )
    return [load_suite(name, limit=None).info() for name in names]
