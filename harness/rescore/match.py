"""Matching records to suite items: each record placed in a suite and its candidate variants, found
among the items by item id, prompt, input or lm-eval doc, its target checked, and turned into the
(request, response) pairs the suite's own `score()` takes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.rescore.formats import LM_EVAL, RUN_RECORD, Saved
from harness.suites.base import Request, Response

if TYPE_CHECKING:
    from harness.suites.suite import LmEvalSuite, SuiteItem


class _ItemIndex:
    """Each suite's items per variant, looked up by item id, prompt, input or lm-eval doc."""

    def __init__(self, suite: LmEvalSuite) -> None:
        self.suite = suite
        self._items: dict[str, list[SuiteItem]] = {}
        self._keys: dict[tuple[str, str], dict[Any, list[SuiteItem]]] = {}

    def items(self, variant: str) -> list[SuiteItem]:
        if variant not in self._items:
            self._items[variant] = self.suite.items(variants={variant})
        return self._items[variant]

    def find(self, variant: str, record: Saved) -> list[SuiteItem]:
        """The items the record may answer (several only when items repeat the same text)."""
        key = (variant, record.match)
        if key not in self._keys:
            table: dict[Any, list[SuiteItem]] = defaultdict(list)
            for item in self.items(variant):
                found = item.item_id if record.match == "item_id" else self._key(variant, record, item.doc)
                table[found].append(item)
            self._keys[key] = table
        found = record.key if record.match == "item_id" else self._key(variant, record, record.key)
        return self._keys[key].get(found, [])

    def _key(self, variant: str, record: Saved, doc: Any) -> Any:
        if isinstance(doc, str):  # a record's prompt or input
            return doc.strip()
        key = doc_key(record.match, self.task(variant), doc)
        if key is not None:
            return key
        if record.match in ("prompt", "input"):
            raise HarnessError(
                f"{record.where}: suite {self.suite.name}'s items have no {record.match!r} field, so records "
                f"matched by {record.match} do not fit it: pick the suite the responses answer"
            )
        raise HarnessError(f"{record.where}: the logged doc does not fit suite {self.suite.name}'s task")

    def _variant(self, name: str) -> Any:
        return next(v for v in self.suite.variants if v.name == name)

    def task(self, variant: str) -> Any:
        return self.suite.tasks[self._variant(variant).task_key]

    def target(self, variant: str, doc: Mapping[str, Any], where: str) -> str:
        try:
            return str(self.task(variant).doc_to_target(doc))
        except Exception:  # a logged doc of another shape
            raise HarnessError(
                f"{where}: the doc has no target that suite {self.suite.name} can read"
            ) from None


@dataclass
class Matched:
    """The matched responses per (suite, model), and per (suite, variant, item id, model) slot the
    record that answered it, lm-eval's logged metric values and the prompt the record ran."""

    responses: dict[tuple[str, str], dict[Request, Response]] = field(default_factory=dict)
    variants: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    seen: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    reference: dict[tuple[str, str, str, str], dict[str, float]] = field(default_factory=dict)
    prompts: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    skipped: int = 0
    stop_cut: int = 0


def match_records(
    records: list[Saved],
    suites: list[LmEvalSuite],
    *,
    fmt: str,
    mode: str | None,
    lenient: bool,
) -> Matched:
    """Each record to its item; `lenient` (a --limit was given): records for no item are skipped."""
    by_name = {s.name: s for s in suites}
    indexes = {s.name: _ItemIndex(s) for s in suites}
    by_task: dict[str, list[tuple[LmEvalSuite, str]]] = defaultdict(list)
    for suite in suites:
        for v in suite.variants:
            by_task[str(suite.tasks[v.task_key].config.task)].append((suite, v.name))
    out = Matched()
    for record in records:
        placed = None if record.left_out else _place_record(record, by_name, by_task, suites, fmt, mode)
        if placed is None:
            out.skipped += 1
            continue
        suite, variants = placed
        index = indexes[suite.name]
        item, variant = None, variants[0]
        for variant in variants:
            hits = [
                it
                for it in index.find(variant, record)
                if len(variants) == 1 or record.prompt is None or it.requests[0].prompt == record.prompt
            ]
            free = [it for it in hits if (suite.name, variant, it.item_id, record.model) not in out.seen]
            item = (free or hits)[0] if hits else None
            if item is not None:
                break
        if item is None:
            if lenient:
                out.skipped += 1
                continue
            raise HarnessError(_unknown_item(record, suite, variants))
        _check_target(record, index, variant, item)
        slot = (suite.name, variant, item.item_id, record.model)
        if slot in out.seen:
            raise HarnessError(
                f"{record.where}: a second response for item {item.item_id} of {suite.name} ({variant}), "
                f"model {record.model}; the first is at {out.seen[slot]}"
            )
        out.seen[slot] = record.where
        out.reference[slot] = record.reference
        if record.prompt is not None:
            out.prompts[slot] = record.prompt
        answers = out.responses.setdefault((suite.name, record.model), {})
        out.variants.setdefault((suite.name, record.model), set()).add(variant)
        for request, response in _item_responses(record, item, suite.name, index.task(variant)):
            answers[request] = response
            stops = request.params.stop if request.params else ()
            if response.text and any(s and s in response.text for s in stops):
                out.stop_cut += 1
    return out


def _place_record(
    record: Saved,
    by_name: dict[str, LmEvalSuite],
    by_task: dict[str, list[tuple[LmEvalSuite, str]]],
    suites: list[LmEvalSuite],
    fmt: str,
    mode: str | None,
) -> tuple[LmEvalSuite, list[str]] | None:
    """The suite and candidate variants of a record; None when --mode/--subtask leave it out."""
    if fmt == RUN_RECORD:
        suite = by_name.get(record.suite or "")
        if suite is None:
            return None
        names = [v.name for v in suite.variants]
        if record.variant not in names:
            raise HarnessError(
                f"{record.where}: suite {suite.name} has no variant {record.variant!r} (variants: "
                f"{', '.join(names)}); the run used other --shots/--icl-draws than the record's manifest says"
            )
        if mode is not None and (record.variant or "").split("/")[0] != mode:
            return None
        return suite, [str(record.variant)]
    if fmt == LM_EVAL and record.task is not None and record.task in by_task:
        hits = [(s, v) for s, v in by_task[record.task] if record.subtask in (None, s.subtask)]
        if not hits:
            return None
        if mode is not None:
            hits = [(s, v) for s, v in hits if v.split("/")[0] == mode]
            if not hits:
                return None
        return hits[0][0], [v for s, v in hits if s is hits[0][0]]
    if fmt == LM_EVAL and record.task is not None:
        known = ", ".join(sorted(by_task))
        raise HarnessError(
            f"{record.where}: lm-eval task {record.task!r} is not a task of the suites (their tasks: {known})"
        )
    candidates = [s for s in suites if s.subtask == record.subtask] if record.subtask else suites
    if len(candidates) != 1:
        raise HarnessError(
            f"{record.where}: cannot tell which suite it answers ({', '.join(s.name for s in suites)}): "
            "select one suite, or keep lm-eval's file name samples_<task>_<date>.jsonl"
        )
    suite = candidates[0]
    main = list(suite.info().variants)
    wanted = record.variant or mode
    if wanted is None:
        if len(main) != 1:
            raise HarnessError(
                f"{record.where}: which variant does it answer? pass --mode {'|'.join(main)} or give each "
                "record a 'mode' field"
            )
        wanted = main[0]
    if wanted not in [v.name for v in suite.variants]:
        raise HarnessError(
            f"{record.where}: mode {wanted!r} is not a variant of {suite.name} (variants: {', '.join(main)})"
        )
    if record.variant is not None and mode is not None and record.variant != mode:
        return None
    return suite, [wanted]


def _unknown_item(record: Saved, suite: LmEvalSuite, variants: list[str]) -> str:
    what = {
        "item_id": f"item id {record.key!r}",
        "prompt": f"prompt {str(record.key)[:60]!r}",
        "input": f"input {str(record.key)[:60]!r}",
        "doc": "doc",
    }[record.match]
    hint = "the records come from other data, a different --limit, or another suite"
    if record.match == "doc" and len(variants) > 1:
        hint = (
            f"its prompt matches none of variants {', '.join(variants)} (lm-eval's --num_fewshot and "
            "seed must be those of a variant)"
        )
    return f"{record.where}: unknown {what}: no item of {suite.name} ({'/'.join(variants)}) has it; {hint}"


def _check_target(record: Saved, index: _ItemIndex, variant: str, item: SuiteItem) -> None:
    if record.target is None:
        return
    ours = index.target(variant, item.doc, record.where)
    # an lm-eval doc goes through the same doc_to_target, so versions that print targets differently agree
    theirs = index.target(variant, record.key, record.where) if record.match == "doc" else record.target
    if theirs.strip() != ours.strip():
        raise HarnessError(
            f"{record.where}: target {theirs!r} differs from the suite item's target {ours!r} "
            f"(item {item.item_id} of {index.suite.name}): the records come from other data"
        )


def _item_responses(
    record: Saved, item: SuiteItem, suite: str, task: Any
) -> Iterable[tuple[Request, Response]]:
    kind = item.requests[0].kind
    if kind == "generate":
        if record.text is None:
            raise HarnessError(
                f"{record.where}: item {item.item_id} of {suite} is answered with generated text, but the "
                "record holds option log-probabilities"
            )
        finish = "length" if record.truncated else "stop"
        return [(item.requests[0], Response(text=record.text, finish_reason=finish))]
    if record.logprobs is None:
        raise HarnessError(
            f"{record.where}: item {item.item_id} of {suite} is scored by option log-probabilities "
            "(multiple choice), which the record does not hold"
        )
    if len(record.logprobs) != len(item.requests):
        raise HarnessError(
            f"{record.where}: {len(record.logprobs)} option log-probabilities for item {item.item_id} of "
            f"{suite}, which has {len(item.requests)} options"
        )
    if not record.greedy_known and task.OUTPUT_TYPE == "loglikelihood":
        raise HarnessError(
            f"{record.where}: {suite} scores whether the continuation is the greedy one, which a run "
            "record does not keep: re-run compare instead"
        )
    if record.continuations is not None:
        ours = [r.continuation for r in item.requests]
        if record.continuations != ours:
            raise HarnessError(
                f"{record.where}: the logged options {record.continuations} differ from the suite's {ours}"
            )
    return [
        (request, Response(logprob=lp, is_greedy=greedy))
        for request, (lp, greedy) in zip(item.requests, record.logprobs, strict=True)
    ]


def doc_key(how: str, task: Any, doc: Any) -> str | None:
    """The text a record is matched on: a doc field, or (lm-eval docs) the task's doc_to_text."""
    try:
        return str(doc[how] if how in ("prompt", "input") else task.doc_to_text(doc)).strip()
    except Exception:  # a doc of another shape: the matching names the record
        return None
