"""Load, validate and list suites. Every problem surfaces here, before any model loads.

A suite is named by a built-in name (`gsm8k-cot`), a path to a suite.yaml, one subtask of a
suite with subtasks (`bbh:navigate`), or any task of lm-eval's registry (`lm-eval:arc_easy`,
run as an ICL suite over a shot sweep).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.suites.base import Request, Response, SuiteInfo
from harness.suites.lmeval_bridge import (
    LMEVAL_PREFIX,
    _quiet,
    build_task,
    load_task_config,
    resolve_task_ref,
    substitute,
)
from harness.suites.spec import SuiteSpec, builtin_names, read_suite_spec, resolve_suite_file, tasks_dir
from harness.suites.suite import LmEvalSuite, Variant

DEFAULT_SHOTS = (0, 1, 2, 4, 8)


def load_suites(
    selection: str,
    *,
    limit: int | None,
    data_dir: Path | None = None,
    chat_template: bool | None = None,
    seed: int = 1234,
    shots: Sequence[int] | None = None,
    draws: int | None = None,
    max_gen_tokens: int | None = None,
) -> list[LmEvalSuite]:
    """Every suite a selection names: one, or one per subtask (`bbh` -> 27, `bbh:navigate` -> 1).

    `limit` keeps the first N items (per subtask); `data_dir` holds local copies of datasets (see
    harness.suites.datasets) and is the base of relative `data_files`; `chat_template` overrides the
    suite's default; `seed` is the few-shot seed unless the suite file fixes `fewshot_seed`;
    `shots`/`draws` override an ICL suite's sweep; `max_gen_tokens` caps every generation budget
    (truncations are counted and reported). Each suite builds and scores one item with
    placeholder answers, so a broken task, filter or metric fails now, not after generation.
    """
    if limit is not None and limit < 1:
        raise HarnessError(f"limit must be a positive number of items (got {limit}): use --limit 1 or more")
    if data_dir is None:
        from harness.suites.datasets import default_data_dir

        data_dir = default_data_dir()
    if data_dir is not None and not Path(data_dir).is_dir():
        raise HarnessError(f"data folder {data_dir} does not exist: check --data-dir (or $HARNESS_DATA_DIR)")
    options = _Options(
        limit, Path(data_dir) if data_dir else None, chat_template, seed, shots, draws, max_gen_tokens
    )
    if selection.startswith(LMEVAL_PREFIX):
        return [_load_lm_eval_task(selection, options)]
    name, _, wanted = selection.partition(":")
    path = resolve_suite_file(name if wanted else selection)
    spec = read_suite_spec(path)
    if not spec.subtasks:
        if wanted:
            raise HarnessError(f"suite {spec.name} has no subtasks: select it as {name!r}")
        return [_load_one(spec, path, None, options)]
    subtasks = list(spec.subtasks)
    if wanted:
        unknown = [s for s in wanted.split("+") if s not in spec.subtasks]
        if unknown:
            raise HarnessError(
                f"suite {spec.name} has no subtask {unknown[0]!r}; valid subtasks: {', '.join(subtasks)}"
            )
        subtasks = wanted.split("+")
    return [_load_one(spec, path, sub, options) for sub in subtasks]


def load_suite(
    path_or_name: str,
    *,
    limit: int | None,
    data_dir: Path | None = None,
    chat_template: bool | None = None,
    seed: int = 1234,
) -> LmEvalSuite:
    """One suite (a selection that names exactly one)."""
    suites = load_suites(path_or_name, limit=limit, data_dir=data_dir, chat_template=chat_template, seed=seed)
    if len(suites) != 1:
        raise HarnessError(
            f"{path_or_name} names {len(suites)} subtask suites: pick one as {path_or_name}:SUBTASK"
        )
    return suites[0]


class _Options:
    def __init__(
        self,
        limit: int | None,
        data_dir: Path | None,
        chat_template: bool | None,
        seed: int,
        shots: Sequence[int] | None,
        draws: int | None,
        max_gen_tokens: int | None,
    ) -> None:
        self.limit = limit
        self.data_dir = data_dir
        self.chat_template = chat_template
        self.seed = seed
        self.shots = list(shots) if shots is not None else None
        self.draws = draws
        self.max_gen_tokens = max_gen_tokens
        if max_gen_tokens is not None and max_gen_tokens < 1:
            raise HarnessError(f"--max-gen-tokens {max_gen_tokens}: use a positive number of tokens")
        if self.shots is not None and (not self.shots or any(k < 0 for k in self.shots)):
            raise HarnessError(f"--shots {self.shots}: give distinct counts >= 0, e.g. 0,1,2,4,8")
        if draws is not None and not 1 <= draws <= 20:
            raise HarnessError(f"--icl-draws {draws}: use 1 to 20 seeded draws")


def _load_one(spec: SuiteSpec, path: Path, subtask: str | None, options: _Options) -> LmEvalSuite:
    variables = spec.subtask_vars(subtask)
    shots = options.shots if options.shots is not None and spec.ability == "icl" else None
    if shots is not None:
        spec = spec.model_copy(update={"shots": sorted(set(shots))})
    tasks: dict[str, Any] = {}
    variants: list[Variant] = []
    where = f"{path}{f' (subtask {subtask})' if subtask else ''}"
    overrides = spec.overrides or {}
    for variant, ref in spec.task_files().items():
        extra = substitute({**overrides.get("all", {}), **overrides.get(variant, {})}, variables)
        key = f"{substitute(ref, variables)}|{variant if variant in overrides else ''}"
        if key not in tasks:
            task_file = resolve_task_ref(substitute(ref, variables), path.parent)
            config = load_task_config(task_file, options.data_dir, extra or None)
            tasks[key] = build_task(config, task_file)
        variants.append(Variant(variant, key, _shots_of(spec, variant), spec.max_tokens_for(variant)))
    variants = _with_draws(spec, variants, tasks, options.draws, where)
    use_chat = spec.chat_template if options.chat_template is None else options.chat_template
    suite = LmEvalSuite(
        spec,
        path,
        tasks,
        variants,
        limit=options.limit,
        chat_template=use_chat,
        seed=options.seed,
        subtask=subtask,
        max_tokens_cap=options.max_gen_tokens,
    )
    _check_pool(suite, where)
    _probe(suite, where)
    return suite


def _shots_of(spec: SuiteSpec, variant: str) -> int | None:
    return int(variant.removeprefix("k=")) if spec.ability == "icl" else None


def _with_draws(
    spec: SuiteSpec, variants: list[Variant], tasks: dict[str, Any], draws: int | None, where: str
) -> list[Variant]:
    """ICL: extra seeded draws of the examples (which ones, in which order) for every k > 0.

    A task whose examples are fixed (lm-eval's `first_n` sampler) has nothing to re-draw."""
    n = draws if draws is not None else spec.draws
    if spec.ability != "icl" or n <= 1:
        return variants
    out = list(variants)
    for v in variants:
        sampler = _fewshot_field(tasks[v.task_key], "sampler") or "default"
        if not v.num_fewshot or sampler == "first_n":
            continue
        out.extend(
            Variant(f"{v.name}/d{d}", v.task_key, v.num_fewshot, v.max_tokens, seed_offset=d, draw_of=v.name)
            for d in range(1, n)
        )
    return out


def _fewshot_field(task: Any, name: str) -> Any:
    """A field of the task's fewshot_config (a dataclass or a mapping, by lm-eval version)."""
    config = task.config.fewshot_config
    if config is None:
        return None
    return config.get(name) if isinstance(config, dict) else getattr(config, name, None)


def _fewshot_from_test(task: Any) -> bool:
    """lm-eval falls back to the test split for examples when a task names no other source."""
    split = _fewshot_field(task, "split")
    samples = _fewshot_field(task, "samples")
    if split is not None:
        return bool(split == task.config.test_split)
    return samples is None and not (task.has_training_docs() or task.has_validation_docs())


def _pool_size(task: Any) -> int | None:
    """How many few-shot examples the task can draw from (None: unknown). Examples drawn from the
    test split exclude the item itself, so that pool is one smaller."""
    try:
        with _quiet():
            docs = task.fewshot_docs()
    except Exception:
        return None
    if docs is None:
        return 0
    split = _fewshot_field(task, "split")
    samples = _fewshot_field(task, "samples")
    from_test = (split is not None and split == task.config.test_split) or (
        split is None and samples is None and not (task.has_training_docs() or task.has_validation_docs())
    )
    return len(docs) - (1 if from_test else 0)


def _check_pool(suite: LmEvalSuite, where: str) -> None:
    """A shot count larger than the pool of examples is a user error, not a silent shorter prompt."""
    for variant in suite.variants:
        k = variant.num_fewshot
        if k is None:
            k = suite.tasks[variant.task_key].get_config("num_fewshot") or 0
        if not k:
            continue
        pool = _pool_size(suite.tasks[variant.task_key])
        if pool is not None and k > pool:
            raise HarnessError(
                f"{where}: {variant.name} needs {k} few-shot examples but the task's pool holds {pool}: "
                f"use shots up to {pool} (suite file `shots:` or --shots)"
            )


def _load_lm_eval_task(selection: str, options: _Options) -> LmEvalSuite:
    """Any lm-eval task by name, as an ICL suite over a shot sweep (default 0, 1, 2, 4, 8)."""
    name = selection.removeprefix(LMEVAL_PREFIX)
    task_file = resolve_task_ref(selection, Path.cwd())
    config = load_task_config(task_file, options.data_dir)
    task = build_task(config, task_file)
    metric = (task.config.metric_list or [{}])[0].get("metric")
    if not metric:
        raise HarnessError(f"lm-eval task {name} lists no metric, so the harness has nothing to compare")
    filters = [f["name"] for f in (task.config.filter_list or [])]
    shots = options.shots if options.shots is not None else list(DEFAULT_SHOTS)
    if _pool_size(task) == 0 or _fewshot_from_test(task):
        # no few-shot examples of its own (e.g. ifeval: lm-eval would draw them from the test items
        # themselves, and its doc_to_target cannot even render them): the sweep is zero-shot only
        shots = [0]
    max_gen = (task.config.generation_kwargs or {}).get("max_gen_toks")
    spec = SuiteSpec.model_validate(
        {
            "name": name.replace(":", "_"),
            "ability": "icl",
            "description": f"lm-eval task {name} ({task.OUTPUT_TYPE}) at a shot sweep",
            "chance": _chance(task),
            "task": selection,
            "shots": sorted(set(shots)),
            "draws": options.draws or 3,
            "max_tokens": int(max_gen) if max_gen else None,
            "primary_metric": f"{metric},{filters[0] if filters else 'none'}",
        }
    )
    key = f"{selection}|"
    tasks = {key: task}
    variants = [Variant(v, key, _shots_of(spec, v), spec.max_tokens_for(v)) for v in spec.variants]
    variants = _with_draws(spec, variants, tasks, options.draws, selection)
    suite = LmEvalSuite(
        spec,
        task_file,
        tasks,
        variants,
        limit=options.limit,
        chat_template=bool(options.chat_template),
        seed=options.seed,
        name=selection,
        max_tokens_cap=options.max_gen_tokens,
    )
    _check_pool(suite, selection)
    _probe(suite, selection)
    return suite


def _chance(task: Any) -> float:
    """A random guesser's expected score: mean 1/(number of options) for multiple choice, else 0."""
    if task.OUTPUT_TYPE != "multiple_choice":
        return 0.0
    docs = list(task.eval_docs)
    if not docs:
        return 0.0
    return float(sum(1.0 / max(1, len(task.doc_to_choice(d))) for d in docs) / len(docs))


def _fake_render(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
    return text + ("<assistant>" if add_generation_prompt else "")


def _probe(suite: LmEvalSuite, where: str | Path) -> None:
    """Build and score one item of every variant with placeholder answers (no model)."""
    probe = LmEvalSuite(
        suite.spec,
        suite.path,
        suite.tasks,
        suite.variants,
        limit=1,
        chat_template=suite.chat_template,
        seed=suite.seed,
        subtask=suite.subtask,
        name=suite.name,
        max_tokens_cap=suite.max_tokens_cap,
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
        raise HarnessError(f"{where}: lm-eval cannot build or score its requests: {first}") from exc
    for variant in suite.variants:
        if not any(r.variant == variant.name for r in results):
            raise HarnessError(f"{where}: variant {variant.name} has no items")
    if len(suite.tasks) > 1:
        _check_same_items(suite, where)


def _check_same_items(suite: LmEvalSuite, where: str | Path) -> None:
    """A CoT suite's two tasks must run on the same items, or the CoT gain compares apples and pears."""
    ids = []
    for task in suite.tasks.values():
        docs = list(task.eval_docs)[: suite.limit] if suite.limit else list(task.eval_docs)
        ids.append([suite._item_id(doc, i) for i, doc in enumerate(docs)])
    if any(other != ids[0] for other in ids[1:]):
        raise HarnessError(
            f"{where}: the tasks of this suite do not hold the same items in the same order: "
            "point them at the same data_files"
        )


def validate_suite_file(path: str | Path) -> SuiteInfo:
    """For `harness validate`: parse, build the lm-eval task(s), read every data line, build and
    score one item. Raises HarnessError on any problem; returns the suite's info."""
    return load_suites(str(path), limit=None)[0].info()


@dataclass(frozen=True)
class SuiteListing:
    """A built-in suite as `harness suites` shows it (items only when its data is at hand)."""

    name: str
    ability: str
    variants: tuple[str, ...]
    description: str
    subtasks: tuple[str, ...]
    n_items: int | None
    chance: float | None
    note: str = ""


def list_suites(data_dir: Path | None = None) -> list[SuiteListing]:
    """The built-in suites in `tasks/` (or $HARNESS_TASKS_DIR). A suite with subtasks is listed once;
    one whose data is not at hand is listed with the reason instead of its item count."""
    names = builtin_names()
    if not names:
        raise HarnessError(
            f"no built-in suites found in {tasks_dir()}: set $HARNESS_TASKS_DIR to the "
            "project's tasks/ folder"
        )
    out = []
    for name in names:
        spec = read_suite_spec(resolve_suite_file(name))
        n_items: int | None = None
        chance: float | None = spec.chance
        note = ""
        if spec.subtasks:
            chance = None
            note = f"{len(spec.subtasks)} subtasks; select one as {name}:SUBTASK"
        else:
            try:
                info = load_suites(name, limit=None, data_dir=data_dir)[0].info()
                n_items, chance = info.n_items, info.chance
            except HarnessError as exc:
                note = str(exc)
        out.append(
            SuiteListing(
                spec.name,
                spec.ability,
                spec.variants,
                spec.description,
                tuple(spec.subtasks or ()),
                n_items,
                chance,
                note,
            )
        )
    return out
