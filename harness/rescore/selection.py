"""Which suites to load for the records: the selection read from its suite files, each record routed
to a suite's subtask (and variant, where its lm-eval task names one), only the subtasks some record
needs loaded, each suite cut to the items the records reach."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.rescore.formats import LM_EVAL, RUN_RECORD, Saved, SavedResponses
from harness.rescore.match import doc_key

if TYPE_CHECKING:
    from harness.suites.suite import LmEvalSuite


@dataclass
class _Part:
    """One comma-separated part of the selection, read from its suite file before anything loads."""

    text: str
    base: str  # what load_suites takes, before ":SUBTASKS"
    group: str  # the suite's name (the group name of subtask suites)
    subtasks: tuple[str, ...]  # all subtasks of the suite (empty: none)
    wanted: tuple[str, ...]  # the subtasks the selection (or --subtask) names; empty: all
    task_names: dict[str, tuple[str | None, str | None]]  # lm-eval task -> (subtask, variant), pre-load
    variants: tuple[str, ...] = ()  # the suite's variants (empty: known once loaded)

    def allowed(self) -> tuple[str, ...]:
        return self.wanted or self.subtasks


def _parse_selection(selection: str, subtask: str | None) -> list[_Part]:
    """The selection's parts, their lm-eval task names read from the suite files; --subtask narrows."""
    from harness.suites.lmeval_bridge import LMEVAL_PREFIX, substitute
    from harness.suites.spec import read_suite_spec, resolve_suite_file

    parts = []
    for text in (t.strip() for t in selection.split(",")):
        if not text:
            continue
        if text.startswith(LMEVAL_PREFIX):
            names: dict[str, tuple[str | None, str | None]] = {text.removeprefix(LMEVAL_PREFIX): (None, None)}
            parts.append(_Part(text, text, text, (), (), names))
            continue
        name, _, wanted = text.partition(":")
        base = name if wanted else text
        spec = read_suite_spec(resolve_suite_file(base))
        subtasks = tuple(spec.subtasks or ())
        chosen = tuple(w for w in re.split(r"[+]", wanted) if w) if wanted else ()
        if chosen and not subtasks:
            raise HarnessError(f"suite {spec.name} has no subtasks: select it as {name!r}")
        names = {}
        overrides = spec.overrides or {}
        for sub in subtasks or (None,):
            variables = spec.subtask_vars(sub)
            for variant, ref in spec.task_files().items():
                override = {**overrides.get("all", {}), **overrides.get(variant, {})}
                task = override.get("task") or (
                    ref.removeprefix(LMEVAL_PREFIX) if ref.startswith(LMEVAL_PREFIX) else None
                )
                if isinstance(task, str):
                    task = substitute(task, variables)
                    names[task] = (sub, None if task in names else variant)
        parts.append(_Part(text, base, spec.name, subtasks, chosen, names, spec.variants))
    if not parts:
        raise HarnessError("no suite selected: name one, e.g. gsm8k-cot, bbh, bbh:navigate or ifeval")
    if subtask is not None:
        with_subtasks = [p for p in parts if p.subtasks]
        if not with_subtasks:
            raise HarnessError(f"--subtask {subtask}: the selected suite(s) have no subtasks; drop --subtask")
        for part in with_subtasks:
            wanted_now = tuple(s for s in subtask.replace(",", "+").split("+") if s)
            for sub in wanted_now:
                _check_subtask(part, sub, "--subtask")
            if part.wanted and not set(wanted_now) <= set(part.wanted):
                raise HarnessError(f"--subtask {subtask} is not among those {part.text} selects")
            part.wanted = wanted_now
    for part in parts:
        for sub in part.wanted:
            _check_subtask(part, sub, part.text)
    return parts


def _check_subtask(part: _Part, subtask: str, where: str) -> None:
    if subtask not in part.subtasks:
        raise HarnessError(
            f"{where}: suite {part.group} has no subtask {subtask!r}; "
            f"valid subtasks: {', '.join(part.subtasks)}"
        )


def _resolve_bbh_task(part: _Part, record: Saved) -> None:
    """A record's `subtask`/`task` field: a subtask name, `bbh:NAME`, or an lm-eval task name
    (`bbh_cot_fewshot_NAME`, which also names the variant)."""
    value = record.subtask
    if value is None or value in part.subtasks:
        return
    sub, variant = part.task_names.get(value, (None, None))
    if sub is not None:
        record.subtask = sub
        record.variant = record.variant or variant
        return
    if value.startswith(f"{part.group}:") and value.split(":", 1)[1] in part.subtasks:
        record.subtask = value.split(":", 1)[1]
        return
    _check_subtask(part, value, record.where)


def _route_records(
    responses: SavedResponses, parts: list[_Part], subtask: str | None, mode: str | None
) -> dict[int, set[str]]:
    """Which subtasks (per part index) the records need; sets each record's subtask where it can."""
    needed: dict[int, set[str]] = defaultdict(set)
    records = responses.records
    if responses.format == RUN_RECORD:
        for record in records:
            for i, part in enumerate(parts):
                sub = _subtask_of_suite(part, record.suite or "")
                if sub is not None:
                    record.subtask = sub or None
                    needed[i].add(sub)
                    break
        return needed
    if responses.format == LM_EVAL:
        for i, part in enumerate(parts):
            if _unknown_task_names(part) or any(r.task is None for r in records):
                needed[i].update(part.allowed() or ("",))
        for record in records:
            hits = [(i, p) for i, p in enumerate(parts) if record.task in p.task_names]
            if hits:
                i, part = hits[0]
                sub = part.task_names[record.task or ""][0]
                record.subtask = sub
                record.left_out = bool(sub and part.wanted and sub not in part.wanted)
                if not record.left_out:
                    needed[i].add(sub or "")
            elif record.task is not None and not any(_unknown_task_names(p) for p in parts):
                known = sorted({n for p in parts for n in p.task_names})
                raise HarnessError(
                    f"{record.where}: lm-eval task {record.task!r} is not a task of {_selection_text(parts)} "
                    f"(its tasks: {', '.join(known[:12])}{', ...' if len(known) > 12 else ''})"
                )
        return needed
    if len(parts) != 1:
        raise HarnessError(
            f"{responses.path}: {responses.format} records answer one suite; "
            f"select one, not {_selection_text(parts)}"
        )
    part = parts[0]
    for record in records:
        if not part.subtasks:
            if record.subtask is not None and record.subtask not in (*part.task_names, part.group):
                raise HarnessError(
                    f"{record.where}: the record names subtask {record.subtask!r} but suite {part.group} "
                    "has no subtasks"
                )
            record.subtask = None
            needed[0].add("")
            continue
        _resolve_bbh_task(part, record)
        if record.subtask is None:
            if len(part.allowed()) == 1:
                record.subtask = part.allowed()[0]
            else:
                raise HarnessError(
                    f"{record.where}: which BBH subtask does it answer? pass --subtask NAME or give each "
                    f"record a 'subtask' field; valid subtasks: {', '.join(part.subtasks)}"
                )
        elif part.wanted and record.subtask not in part.wanted:
            raise HarnessError(
                f"{record.where}: subtask {record.subtask!r} is not the selected "
                f"{'+'.join(part.wanted)}{' (--subtask)' if subtask else ''}"
            )
        needed[0].add(record.subtask or "")
    for record in records:
        if record.variant is None and mode is None and len(part.variants) > 1:
            raise HarnessError(
                f"{record.where}: which variant does it answer? pass --mode {'|'.join(part.variants)} "
                "or give each record a 'mode' field"
            )
    return needed


def _selection_text(parts: list[_Part]) -> str:
    return ",".join(p.text for p in parts)


def _unknown_task_names(part: _Part) -> bool:
    """True when some variant's task is a YAML file (its lm-eval task name is known only once loaded)."""
    return not part.task_names


def _subtask_of_suite(part: _Part, suite: str) -> str | None:
    """The subtask a run record's suite name means in this part ("" when none); None: not this part."""
    if not part.subtasks:
        return "" if suite == part.group else None
    group, _, sub = suite.partition(":")
    return sub if group == part.group and sub in part.allowed() else None


def _selections_to_load(parts: list[_Part], needed: dict[int, set[str]]) -> list[str]:
    """What to load: only the parts (and subtasks) some record needs."""
    out = []
    for i, part in enumerate(parts):
        if i not in needed:
            continue
        if not part.subtasks:
            out.append(part.text)
            continue
        subs = [s for s in part.allowed() if s in needed[i]]
        if subs:
            out.append(f"{part.base}:{'+'.join(subs)}")
    return out


def load_answered_suites(
    selection: str,
    responses: SavedResponses,
    subtask: str | None,
    mode: str | None,
    limit: int | None,
    data_dir: Path | None,
    seed: int,
    config: Mapping[str, Any],
) -> list[LmEvalSuite]:
    """The suites (and only the subtasks) the records answer. Prompts are built without chat
    templates: no model is at hand to render them, and scoring does not depend on them."""
    from harness.suites import load_suites

    parts = _parse_selection(selection, subtask)
    needed = _route_records(responses, parts, subtask, mode)
    if responses.format == RUN_RECORD and not needed:
        found = sorted({r.suite or "" for r in responses.records})
        raise HarnessError(
            f"{responses.path} holds no results of {selection} (its suites: {', '.join(found)})"
        )
    run = responses.format == RUN_RECORD
    return [
        suite
        for sel in _selections_to_load(parts, needed)
        for suite in load_suites(
            sel,
            limit=limit,
            data_dir=data_dir,
            chat_template=False,
            seed=seed,
            shots=config.get("shots") if run else None,
            draws=config.get("icl_draws") if run else None,
        )
    ]


def narrowed_to_answered(suite: LmEvalSuite, records: list[Saved]) -> LmEvalSuite:
    """The suite cut to its first N items, N just past the last item a record answers.

    Building every prompt of GSM8K (1319 items, 8 exemplars each) takes most of a re-score; a file of
    a few answers needs only the items up to the last one it answers. Records that match nothing are
    reported by the matching that follows."""
    from harness.suites.suite import LmEvalSuite

    mine = [r for r in records if r.suite in (None, suite.name) and r.subtask in (None, suite.subtask)]
    if not mine:
        return suite
    last = -1
    for task in suite.tasks.values():
        docs = list(task.eval_docs)[: suite.info().n_items]
        wanted, keys = _wanted_keys(mine, task), []
        for i, doc in enumerate(docs):
            keys = [suite._item_id(doc, i) if how == "item_id" else doc_key(how, task, doc) for how in wanted]
            if any(k in wanted[how] for how, k in zip(wanted, keys, strict=True)):
                last = max(last, i)
    if last < 0 or last + 1 >= suite.info().n_items:
        return suite
    return LmEvalSuite(
        suite.spec,
        suite.path,
        suite.tasks,
        suite.variants,
        limit=last + 1,
        chat_template=suite.chat_template,
        seed=suite.seed,
        fewshot_as_multiturn=suite.fewshot_as_multiturn,
        subtask=suite.subtask,
        name=suite.name,
    )


def _wanted_keys(records: list[Saved], task: Any) -> dict[str, set[Any]]:
    """The keys the records are matched on, per way of matching ("item_id", "prompt", ...)."""
    wanted: dict[str, set[Any]] = defaultdict(set)
    for record in records:
        if record.match == "item_id":
            wanted["item_id"].add(record.key)
        elif isinstance(record.key, str):
            wanted[record.match].add(record.key.strip())
        else:
            key = doc_key(record.match, task, record.key)
            if key is not None:
                wanted[record.match].add(key)
    return dict(wanted)
