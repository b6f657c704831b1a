"""Reading saved responses: the four formats, told apart by their fields, as `Saved` records.

- the harness's own run folder (or its `items.jsonl`): rows matched by suite, variant and item id;
- IFEval's `input_response_data` JSONL, `{"prompt", "response"}`: matched by the doc's `prompt`;
- BBH-style `{"input", "prediction", "target"}` records (JSONL or a JSON list): matched by the doc's
  `input`, the target checked; subtask and mode per record (`subtask`/`task`, `mode`) or given once;
- lm-eval `--log_samples` files (`samples_<task>_<date>.jsonl`, or a folder of them): the lm-eval task
  names the suite and variant (`bbh_cot_fewshot_navigate` -> `bbh:navigate` cot), the doc the item
  (matched by the task's `doc_to_text`), `resps` the raw output (or each option's log-probability).

Every problem is one `HarnessError` line that names the file and the line (or record) at fault.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

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
    """A responses file as read: its format (`RUN_RECORD`, ...) and a run record's manifest."""

    path: Path
    format: str
    records: list[Saved]
    manifest: dict[str, Any] = field(default_factory=dict)


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
