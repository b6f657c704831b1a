"""`harness score SUITE --responses FILE`: re-score saved responses without any model.

Reads four formats, told apart by their fields (see `read_responses`):

- the harness's own run folder (or its `items.jsonl`): rows matched by suite, variant and item id;
- IFEval's `input_response_data` JSONL, `{"prompt", "response"}`: matched by the doc's `prompt`;
- BBH-style `{"input", "prediction", "target"}` records (JSONL or a JSON list): matched by the doc's
  `input`, the target checked; subtask and mode per record (`subtask`/`task`, `mode`) or given once;
- lm-eval `--log_samples` files (`samples_<task>_<date>.jsonl`, or a folder of them): the lm-eval task
  names the suite and variant (`bbh_cot_fewshot_navigate` -> `bbh:navigate` cot), the doc the item
  (matched by the task's `doc_to_text`), `resps` the raw output (or each option's log-probability).

Matched responses go through the suite's own `score()` and `summarize_suites`, so the metrics are
those a live run writes. Prompt rendering plays no part in scoring (filters and metrics see only the
doc and the response), so suites are loaded without chat templates and items are matched by content.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.suites.base import ItemResult, Request, Response

if TYPE_CHECKING:
    from harness.suites.suite import LmEvalSuite, SuiteItem

RUN_RECORD, IFEVAL, BBH, LM_EVAL = "run-record", "ifeval-responses", "bbh-records", "lm-eval-samples"
_SAMPLES_NAME = re.compile(r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T[0-9.\-]+)\.jsonl$")
_RUN_FIELDS = ("suite", "variant", "item_id", "model", "output")


@dataclass
class Saved:
    """One saved response, as read from the file, before it is matched to a suite item."""

    where: str  # "FILE line N": every error about it names this
    model: str
    match: str  # how it finds its item: "item_id" | "prompt" | "input" | "doc"
    key: Any  # the item id, prompt or input text, or the lm-eval doc
    text: str | None = None  # generated text
    logprobs: list[tuple[float, bool]] | None = None  # multiple choice: one per option, in option order
    suite: str | None = None  # run records: the exact suite name
    subtask: str | None = None
    variant: str | None = None
    task: str | None = None  # lm-eval task name
    target: str | None = None  # BBH records and lm-eval samples: checked against the doc's
    prompt: str | None = None  # the prompt it ran: kept in the re-scored items; picks among variants
    continuations: list[str] | None = None  # lm-eval multiple choice: the options, checked
    truncated: bool = False
    left_out: bool = False  # of a subtask that --subtask leaves out
    greedy_known: bool = True  # False: a run record keeps option log-probabilities only, not is_greedy
    reference: dict[str, float] = field(default_factory=dict)  # lm-eval's own per-sample metric values


@dataclass
class SavedResponses:
    path: Path
    format: str
    records: list[Saved]
    manifest: dict[str, Any] = field(default_factory=dict)


# -- reading ---------------------------------------------------------------------------------------


def read_responses(path: Path, model: str | None = None) -> SavedResponses:
    """Read and tell apart the four formats; every problem names the file and line."""
    path = Path(path)
    if path.is_dir():
        if (path / "items.jsonl").is_file():
            return _read_run_record(path / "items.jsonl", model)
        files = sorted(p for p in path.rglob("samples_*.jsonl") if p.is_file())
        if not files:
            raise HarnessError(
                f"folder {path} holds neither a harness run record (items.jsonl) nor lm-eval "
                "--log_samples files (samples_<task>_<date>.jsonl): pass one of those"
            )
        records = [r for f in files for r in _lm_eval_records(f, _json_records(f), model)]
        return SavedResponses(path, LM_EVAL, records)
    if not path.is_file():
        raise HarnessError(f"responses file {path} does not exist: check --responses")
    rows = _json_records(path)
    keys = set(rows[0][1])
    if set(_RUN_FIELDS) <= keys:
        return _read_run_record(path, model, rows)
    if {"doc_id", "doc", "resps"} <= keys:
        return SavedResponses(path, LM_EVAL, _lm_eval_records(path, rows, model))
    label = model or path.stem
    if {"prompt", "response"} <= keys:
        return SavedResponses(path, IFEVAL, [_ifeval_record(where, row, label) for where, row in rows])
    if {"input", "prediction"} <= keys:
        return SavedResponses(path, BBH, [_bbh_record(where, row, label) for where, row in rows])
    raise HarnessError(
        f"{rows[0][0]}: unknown record format (fields {', '.join(sorted(keys)) or 'none'}): expected a "
        "harness items.jsonl row, IFEval {prompt, response}, BBH {input, prediction, target} or an "
        "lm-eval --log_samples line"
    )


def _json_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, record) for each record of a JSONL file or of a JSON list."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"cannot read responses file {path}: {exc}") from exc
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{path} line {exc.lineno} is not valid JSON ({exc.msg})") from None
        rows = [(f"{path} record {i}", value) for i, value in enumerate(values, 1)]
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((f"{path} line {number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise HarnessError(
                    f"{path} line {number} is not valid JSON ({exc.msg}): fix or remove that line"
                ) from None
    for where, value in rows:
        if not isinstance(value, dict):
            raise HarnessError(f"{where} is a JSON {type(value).__name__}, not an object: one record each")
    if not rows:
        raise HarnessError(f"responses file {path} holds no records")
    return rows


def _require(where: str, row: Mapping[str, Any], *names: str) -> None:
    for name in names:
        if name not in row or row[name] is None:
            raise HarnessError(f"{where}: missing field {name!r}")
    for name in names:
        if name in ("response", "prediction", "output", "prompt", "input") and not isinstance(row[name], str):
            raise HarnessError(f"{where}: field {name!r} must be text, not {type(row[name]).__name__}")


def _read_run_record(
    items: Path, model: str | None, rows: list[tuple[str, dict[str, Any]]] | None = None
) -> SavedResponses:
    rows = rows if rows is not None else _json_records(items)
    manifest_file = items.parent / "manifest.json"
    manifest: dict[str, Any] = {}
    if manifest_file.is_file():
        try:
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{manifest_file} is not valid JSON ({exc.msg})") from None
    records = []
    for where, row in rows:
        _require(where, row, *_RUN_FIELDS)
        if model is not None and row["model"] != model:
            continue
        logprobs = None
        option_logprobs = (row.get("details") or {}).get("option_logprobs")
        if option_logprobs is not None:
            logprobs = [(float(v), False) for v in option_logprobs]
        records.append(
            Saved(
                where=where,
                model=str(row["model"]),
                match="item_id",
                key=str(row["item_id"]),
                text=str(row["output"]),
                logprobs=logprobs,
                suite=str(row["suite"]),
                variant=str(row["variant"]),
                truncated=bool(row.get("truncated", False)),
                greedy_known=False,
                prompt=row.get("prompt") if isinstance(row.get("prompt"), str) else None,
            )
        )
    if not records:
        models = sorted({str(row.get("model")) for _, row in rows})
        raise HarnessError(f"{items} has no rows of model {model!r}; its models: {', '.join(models)}")
    return SavedResponses(items, RUN_RECORD, records, manifest)


def _ifeval_record(where: str, row: Mapping[str, Any], model: str) -> Saved:
    _require(where, row, "prompt", "response")
    return Saved(where=where, model=model, match="prompt", key=row["prompt"], text=row["response"])


def _bbh_record(where: str, row: Mapping[str, Any], model: str) -> Saved:
    _require(where, row, "input", "prediction", "target")
    return Saved(
        where=where,
        model=model,
        match="input",
        key=row["input"],
        text=row["prediction"],
        target=str(row["target"]),
        subtask=str(row.get("subtask") or row.get("task") or "") or None,
        variant=str(row["mode"]) if row.get("mode") else None,
    )


def _lm_eval_records(path: Path, rows: list[tuple[str, dict[str, Any]]], model: str | None) -> list[Saved]:
    """One record per doc: lm-eval logs each doc once per filter, with the same responses."""
    found = _SAMPLES_NAME.match(path.name)
    task = found.group("task") if found else None
    label = model or path.parent.name
    by_doc: dict[Any, Saved] = {}
    for where, row in rows:
        _require(where, row, "doc_id", "doc", "resps", "arguments")
        arguments = _arguments(where, row["arguments"])
        resps = row["resps"]
        if not isinstance(resps, list) or len(resps) != len(arguments) or not resps:
            raise HarnessError(f"{where}: 'resps' must hold one response per request in 'arguments'")
        saved = Saved(
            where=where,
            model=label,
            match="doc",
            key=row["doc"],
            task=task,
            target=None if row.get("target") is None else str(row["target"]),
            prompt=str(arguments[0][0]) if arguments[0] else None,
        )
        if len(arguments[0]) >= 2 and isinstance(arguments[0][1], str):  # (context, continuation)
            saved.logprobs = [_loglikelihood(where, r) for r in resps]
            saved.continuations = [str(a[1]) for a in arguments]
        else:
            saved.text = _first_text(where, resps[0])
        previous = by_doc.get(row["doc_id"])
        if previous is not None:
            if (previous.text, previous.logprobs) != (saved.text, saved.logprobs):
                raise HarnessError(
                    f"{where}: doc_id {row['doc_id']} was logged before ({previous.where}) with other "
                    "responses: one run's samples per file"
                )
            saved = previous
        by_doc[row["doc_id"]] = saved
        saved.reference.update(_reference(row))
    return list(by_doc.values())


def _arguments(where: str, value: Any) -> list[list[Any]]:
    """lm-eval >= 0.4.3 writes {"gen_args_0": {"arg_0": ..., "arg_1": ...}}; older versions lists."""
    if isinstance(value, dict):
        return [
            [args[k] for k in sorted(args, key=lambda k: int(k.removeprefix("arg_")))]
            for _, args in sorted(value.items(), key=lambda kv: int(kv[0].removeprefix("gen_args_")))
        ]
    if isinstance(value, list) and all(isinstance(a, list) for a in value):
        return value
    raise HarnessError(f"{where}: 'arguments' is neither lm-eval's gen_args mapping nor a list")


def _first_text(where: str, resp: Any) -> str:
    while isinstance(resp, list) and resp:
        resp = resp[0]
    if not isinstance(resp, str):
        raise HarnessError(f"{where}: 'resps' holds no generated text")
    return resp


def _loglikelihood(where: str, resp: Any) -> tuple[float, bool]:
    """lm-eval logs (logprob, is_greedy) as strings (["-1.5", "False"]) inside one more list."""
    pair = resp[0] if isinstance(resp, list) and resp and isinstance(resp[0], list) else resp
    try:
        logprob, greedy = pair[0], pair[1]
        return float(logprob), str(greedy).lower() == "true"
    except (TypeError, ValueError, IndexError, KeyError):
        raise HarnessError(f"{where}: 'resps' holds no (log-probability, is_greedy) pair") from None


def _reference(row: Mapping[str, Any]) -> dict[str, float]:
    """lm-eval's own per-sample metric values on this line's filter, as 'metric,filter'."""
    out = {}
    for name in row.get("metrics") or []:
        value = row.get(name)
        if isinstance(value, list) and value and all(isinstance(v, bool | int | float) for v in value):
            out[f"{name},{row.get('filter', 'none')}"] = sum(float(v) for v in value) / len(value)
        elif isinstance(value, bool | int | float):
            out[f"{name},{row.get('filter', 'none')}"] = float(value)
    return out


# -- which suites to load --------------------------------------------------------------------------


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


def _parts(selection: str, subtask: str | None) -> list[_Part]:
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


def _route(
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
                    f"{record.where}: lm-eval task {record.task!r} is not a task of {_label(parts)} "
                    f"(its tasks: {', '.join(known[:12])}{', ...' if len(known) > 12 else ''})"
                )
        return needed
    if len(parts) != 1:
        raise HarnessError(
            f"{responses.path}: {responses.format} records answer one suite; select one, not {_label(parts)}"
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


def _label(parts: list[_Part]) -> str:
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


def _selections(parts: list[_Part], needed: dict[int, set[str]]) -> list[str]:
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


# -- matching --------------------------------------------------------------------------------------


class _Index:
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
        key = _doc_key(record.match, self.task(variant), doc)
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
class _Matched:
    responses: dict[tuple[str, str], dict[Request, Response]] = field(default_factory=dict)
    variants: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    seen: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    reference: dict[tuple[str, str, str, str], dict[str, float]] = field(default_factory=dict)
    prompts: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    skipped: int = 0
    stop_cut: int = 0


def _match(
    records: list[Saved],
    suites: list[LmEvalSuite],
    *,
    fmt: str,
    mode: str | None,
    lenient: bool,
) -> _Matched:
    by_name = {s.name: s for s in suites}
    indexes = {s.name: _Index(s) for s in suites}
    by_task: dict[str, list[tuple[LmEvalSuite, str]]] = defaultdict(list)
    for suite in suites:
        for v in suite.variants:
            by_task[str(suite.tasks[v.task_key].config.task)].append((suite, v.name))
    out = _Matched()
    for record in records:
        placed = None if record.left_out else _place(record, by_name, by_task, suites, fmt, mode)
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
            raise HarnessError(_unknown(record, suite, variants))
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
        for request, response in _responses(record, item, suite.name, index.task(variant)):
            answers[request] = response
            stops = request.params.stop if request.params else ()
            if response.text and any(s and s in response.text for s in stops):
                out.stop_cut += 1
    return out


def _place(
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


def _unknown(record: Saved, suite: LmEvalSuite, variants: list[str]) -> str:
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


def _check_target(record: Saved, index: _Index, variant: str, item: SuiteItem) -> None:
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


def _responses(record: Saved, item: SuiteItem, suite: str, task: Any) -> Iterable[tuple[Request, Response]]:
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


def _narrowed(suite: LmEvalSuite, records: list[Saved]) -> LmEvalSuite:
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
            keys = [
                suite._item_id(doc, i) if how == "item_id" else _doc_key(how, task, doc) for how in wanted
            ]
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
    wanted: dict[str, set[Any]] = defaultdict(set)
    for record in records:
        if record.match == "item_id":
            wanted["item_id"].add(record.key)
        elif isinstance(record.key, str):
            wanted[record.match].add(record.key.strip())
        else:
            key = _doc_key(record.match, task, record.key)
            if key is not None:
                wanted[record.match].add(key)
    return dict(wanted)


def _doc_key(how: str, task: Any, doc: Any) -> str | None:
    """The text a record is matched on: a doc field, or (lm-eval docs) the task's doc_to_text."""
    try:
        return str(doc[how] if how in ("prompt", "input") else task.doc_to_text(doc)).strip()
    except Exception:  # a doc of another shape: the matching names the record
        return None


# -- the command -----------------------------------------------------------------------------------


def score_responses(
    selection: str,
    responses_file: Path,
    *,
    data_dir: Path | None,
    out_dir: Path | None,
    limit: int | None = None,
    subtask: str | None = None,
    mode: str | None = None,
    model: str | None = None,
    chat_template: bool | None = None,
    seed: int | None = None,
    bootstrap: int | None = None,
) -> dict[str, Any]:
    """Re-score saved responses on `selection` (suite names as for compare, comma-separated).

    `limit`: only the first N items of each suite (records for other items are skipped, not errors).
    `subtask`/`mode` select (and, for records that do not carry them, name) the subtask and variant.
    `model`: the label of outside records (default: the file's name); for run records, the one model
    to re-score. `chat_template`: how the saved prompts were rendered, recorded in the summaries
    (scores do not depend on it). A run record's own limit, seed, bootstrap, shots, draws, chat
    template and data folder are the defaults. Returns the metrics, also written to
    OUT_DIR/metrics.json with the re-scored items in OUT_DIR/items.jsonl.
    """
    from harness.aggregate import summarize_suites

    responses = read_responses(Path(responses_file), model)
    config = responses.manifest.get("config") or {}
    lenient = limit is not None
    if limit is None and responses.format == RUN_RECORD:
        limit = config.get("limit")
    seed = seed if seed is not None else int(config.get("seed", 1234))
    bootstrap = bootstrap if bootstrap is not None else int(config.get("bootstrap", 1000))
    if chat_template is None and config.get("chat_template") is not None:
        chat_template = bool(config["chat_template"])
    if data_dir is None and config.get("data_dir") and Path(config["data_dir"]).is_dir():
        data_dir = Path(config["data_dir"])

    suites = _load(selection, responses, subtask, mode, limit, data_dir, seed, config)
    full_size = {s.name: s.info().n_items for s in suites}
    suites = [_narrowed(s, responses.records) for s in suites]
    matched = _match(responses.records, suites, fmt=responses.format, mode=mode, lenient=lenient)
    if not matched.responses:
        raise HarnessError(
            f"{responses.path}: no record answers an item of {selection}"
            + (f" with --mode {mode}" if mode else "")
            + (f" within --limit {limit}" if lenient else "")
        )
    models = list(dict.fromkeys(m for _, m in matched.responses))
    results = _score(suites, models, matched)
    scored = [s for s in suites if any(r.suite == s.name for r in results)]
    roles = _roles(models, responses.manifest)
    summaries = summarize_suites(scored, results, roles, seed, bootstrap)
    metrics: dict[str, Any] = {
        "suites": _as_run(summaries, scored, chat_template),
        "kd": {},
        "notes": _notes(responses, matched, full_size, results, roles),
        "rescore": {
            "responses": str(responses.path),
            "format": responses.format,
            "selection": selection,
            "records": len(responses.records),
            "scored": len(results),
            "skipped": matched.skipped,
            "models": roles,
            "limit": limit,
            "seed": seed,
            "bootstrap": bootstrap,
            "lm_eval_agreement": _agreement(matched, results),
        },
    }
    metrics = json.loads(json.dumps(metrics, default=_plain))
    if out_dir is not None:
        _write(Path(out_dir), metrics, results)
    return metrics


def _load(
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

    parts = _parts(selection, subtask)
    needed = _route(responses, parts, subtask, mode)
    if responses.format == RUN_RECORD and not needed:
        found = sorted({r.suite or "" for r in responses.records})
        raise HarnessError(
            f"{responses.path} holds no results of {selection} (its suites: {', '.join(found)})"
        )
    run = responses.format == RUN_RECORD
    return [
        suite
        for sel in _selections(parts, needed)
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


def _score(suites: list[LmEvalSuite], models: list[str], matched: _Matched) -> list[ItemResult]:
    """Each suite's own score() on the variants answered; the saved prompts kept in the items."""
    results: list[ItemResult] = []
    for suite in suites:
        for label in models:
            answers = matched.responses.get((suite.name, label))
            if answers:
                variants = matched.variants[(suite.name, label)]
                results.extend(suite.score(label, answers, variants=variants, allow_missing=True))
    for r in results:
        r.prompt = matched.prompts.get((r.suite, r.variant, r.item_id, r.model), r.prompt)
    return results


def _as_run(
    summaries: dict[str, Any], suites: list[LmEvalSuite], chat_template: bool | None
) -> dict[str, Any]:
    """The summaries as the live run wrote them: its chat-template setting, no rows for variants no
    record answers (a file of CoT answers has no "direct" row)."""
    used = {s.name: s.spec.chat_template if chat_template is None else chat_template for s in suites}
    for name, summary in summaries.items():
        summary["variants"] = {v: cells for v, cells in summary["variants"].items() if cells}
        members = summary.get("members") or [name]
        if "chat_template" in summary and members[0] in used:
            summary["chat_template"] = used[members[0]]
    return summaries


def _write(out: Path, metrics: dict[str, Any], results: list[ItemResult]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True), encoding="utf-8")
    lines = [json.dumps(asdict(r), ensure_ascii=False, default=_plain) for r in results]
    (out / "items.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _plain(value: Any) -> Any:
    """numpy scalars (and anything else json cannot write) as plain values."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def _roles(models: list[str], manifest: Mapping[str, Any]) -> dict[str, str]:
    """A run record's own roles; else the first model is the reference ("teacher") of the summary."""
    recorded = {label: str(entry.get("role")) for label, entry in (manifest.get("models") or {}).items()}
    roles = {m: recorded.get(m, "student") for m in models}
    if "teacher" not in roles.values():
        roles[models[0]] = "teacher"
    return roles


def _notes(
    responses: SavedResponses,
    matched: _Matched,
    n_items: dict[str, int],
    results: list[ItemResult],
    roles: dict[str, str],
) -> list[str]:
    notes = [f"re-scored {len(results)} items from {responses.path} ({responses.format}), no model run"]
    if responses.format != RUN_RECORD and len(roles) > 1:
        listed = ", ".join(f"{m} ({r})" for m, r in roles.items())
        notes.append(f"models: {listed}; the first is the reference")
    if matched.skipped:
        notes.append(
            f"{matched.skipped} records left out (other suites, variants, subtasks or beyond --limit)"
        )
    if matched.stop_cut:
        notes.append(
            f"{matched.stop_cut} responses contain a stop string of their task; as in a live run (where the "
            "engine stops there), only the text before it is scored"
        )
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for r in results:
        counts[(r.suite, r.variant, r.model)] += 1
    short = [
        f"{suite} {variant} ({m}): {n} of {n_items[suite]}"
        for (suite, variant, m), n in sorted(counts.items())
        if n < n_items[suite]
    ]
    if short:
        notes.append("items with a response (the others are left out): " + "; ".join(short))
    return notes


def _agreement(matched: _Matched, results: list[ItemResult]) -> dict[str, Any]:
    """lm-eval samples carry lm-eval's own per-sample metric values: how often ours equal them."""
    out: dict[str, Any] = {}
    for r in results:
        reference = matched.reference.get((r.suite, r.variant, r.item_id, r.model)) or {}
        for key, theirs in reference.items():
            if key not in r.metrics:
                continue
            cell = (
                out.setdefault(r.suite, {})
                .setdefault(r.variant, {})
                .setdefault(key, {"n": 0, "agree": 0, "differ": []})
            )
            cell["n"] += 1
            if abs(r.metrics[key] - theirs) < 1e-9:
                cell["agree"] += 1
            elif len(cell["differ"]) < 20:
                cell["differ"].append(r.item_id)
    return out


# -- printing --------------------------------------------------------------------------------------


def format_summary(metrics: Mapping[str, Any]) -> str:
    """A plain-text table, one row per suite, variant and model: score, CI, n, every other metric.

    Metric values are lm-eval's own aggregations (IFEval's instruction-level accuracy pools
    instructions) where the summary has them, else the per-item means."""
    header = ("suite", "variant", "model", "score", "95% CI", "n", "trunc", "metrics")
    rows: list[tuple[str, ...]] = []
    for suite, summary in (metrics.get("suites") or {}).items():
        for variant, per_model in (summary.get("variants") or {}).items():
            for label, row in per_model.items():
                values = row.get("lm_eval") or {k: v for k, v in row.items() if "," in k}
                rows.append(
                    (
                        suite,
                        variant,
                        label,
                        _num(row.get("score")),
                        f"[{_num(row.get('ci_low'))}, {_num(row.get('ci_high'))}]",
                        str(row.get("n", "")),
                        str(row.get("truncated", "")),
                        "  ".join(f"{k}={_num(v)}" for k, v in sorted(values.items())),
                    )
                )
    if not rows:
        return "no scores"
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)), r[-1]]).rstrip()
        for r in (header, *rows)
    ]
    agreement = (metrics.get("rescore") or {}).get("lm_eval_agreement") or {}
    for suite, per_variant in agreement.items():
        for variant, per_key in per_variant.items():
            for key, cell in per_key.items():
                agree = f"{cell['agree']}/{cell['n']}"
                lines.append(f"agrees with lm-eval's logged {key} on {suite} {variant}: {agree} items")
    lines.extend(f"note: {note}" for note in metrics.get("notes") or [])
    return "\n".join(lines)


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"
