"""`LmEvalSuite`: a suite file's variants over lm-eval tasks, implementing the Suite contract.

Requests are rebuilt from the lm-eval tasks on every call (the few-shot sampler re-seeded
each time), so `item_requests()` and `score()` agree request for request, and no
Instance state (`resps`, `filtered_resps`) survives from one model's scoring to the next.

Chat templates: when the suite renders prompts with a chat template, pass the model's renderer
(`backend.apply_chat_template`) as `render=` to `item_requests`, `score` and `kd_prompts`;
lm-eval's own chat handling (`fewshot_as_multiturn`) builds the messages and calls it. Prompts
are then per model, as they must be when teacher and student templates differ. A suite
without a chat template ignores `render`, so a runner may always pass it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.suites.base import ItemRequests, ItemResult, Request, Response, SuiteInfo
from harness.suites.lmeval_bridge import (
    INVALID,
    Renderer,
    build_instances,
    response_value,
    score_instances,
    to_request,
)
from harness.suites.spec import SuiteSpec


@dataclass(frozen=True)
class Variant:
    name: str  # "k=4", "cot", ...; an extra ICL draw is "k=4/d1"
    task_key: str  # key of the lm-eval Task in LmEvalSuite.tasks
    num_fewshot: int | None  # None: the task YAML's own num_fewshot
    max_tokens: int | None  # None: the task's own generation budget
    seed_offset: int = 0  # added to the suite's few-shot seed (ICL draws)
    draw_of: str | None = None  # an extra ICL draw: the main variant it re-draws


@dataclass(frozen=True)
class SuiteItem:
    """One item under one variant: its lm-eval doc and its requests (for re-scoring saved outputs)."""

    variant: str
    item_id: str
    doc: Mapping[str, Any]
    requests: tuple[Request, ...]


class LmEvalSuite:
    """A loaded suite: lm-eval Task objects plus the variants to run them under."""

    def __init__(
        self,
        spec: SuiteSpec,
        path: Path,
        tasks: dict[str, Any],
        variants: list[Variant],
        *,
        limit: int | None,
        chat_template: bool,
        seed: int,
        fewshot_as_multiturn: bool = True,
        subtask: str | None = None,
        name: str | None = None,
        max_tokens_cap: int | None = None,
    ) -> None:
        self.spec = spec
        self.path = path
        self.subtask = subtask
        self.max_tokens_cap = max_tokens_cap  # --max-gen-tokens: caps every generation budget
        self.name = name or (f"{spec.name}:{subtask}" if subtask else spec.name)
        self.tasks = tasks
        self.variants = variants
        self.limit = limit
        self.chat_template = chat_template
        self.seed = spec.fewshot_seed if spec.fewshot_seed is not None else seed
        self.fewshot_as_multiturn = fewshot_as_multiturn
        self.primary_filter = spec.primary_metric.split(",", 1)[1] if "," in spec.primary_metric else "none"
        self._n_items = min(len(t.eval_docs) for t in tasks.values())
        if limit is not None:
            self._n_items = min(self._n_items, limit)

    # -- the Suite contract -------------------------------------------------------------------
    def info(self) -> SuiteInfo:
        return SuiteInfo(
            name=self.name,
            ability=self.spec.ability,
            description=self.spec.description,
            variants=tuple(v.name for v in self.variants if v.draw_of is None),
            baseline_variant=self.spec.baseline_variant,
            primary_metric=self.spec.primary_metric,
            chance=self.spec.chance_for(self.subtask),
            n_items=self._n_items,
            chat_template=self.chat_template,
            group=self.spec.name if self.subtask else None,
            draws={
                v.name: tuple(d.name for d in self.variants if d.draw_of == v.name)
                for v in self.variants
                if any(d.draw_of == v.name for d in self.variants)
            },
        )

    def items(self, render: Renderer | None = None, variants: set[str] | None = None) -> list[SuiteItem]:
        """Every item of every variant (or of `variants`) with its doc and requests."""
        out = []
        for variant, instances in self._build(render, variants):
            for doc_id, group in _by_doc(instances).items():
                out.append(
                    SuiteItem(
                        variant=variant.name,
                        item_id=self._item_id(group[0].doc, doc_id),
                        doc=group[0].doc,
                        requests=tuple(
                            to_request(inst, variant.max_tokens, self.max_tokens_cap) for inst in group
                        ),
                    )
                )
        return out

    def item_requests(self, render: Renderer | None = None) -> list[ItemRequests]:
        return [
            ItemRequests(variant=it.variant, item_id=it.item_id, requests=it.requests)
            for it in self.items(render)
        ]

    def score(
        self,
        model: str,
        responses: Mapping[Request, Response],
        render: Renderer | None = None,
        *,
        variants: set[str] | None = None,
        allow_missing: bool = False,
    ) -> list[ItemResult]:
        """Score one model. `variants` limits scoring to those; `allow_missing` skips items none of
        whose requests has a response (re-scoring a subset of saved outputs) instead of failing."""
        results: list[ItemResult] = []
        for variant, all_instances in self._build(render, variants):
            instances = all_instances
            if allow_missing:
                answered = {
                    inst.doc_id
                    for inst in all_instances
                    if to_request(inst, variant.max_tokens, self.max_tokens_cap) in responses
                }
                instances = [inst for inst in all_instances if inst.doc_id in answered]
                if not instances:
                    continue
            requests = [to_request(inst, variant.max_tokens, self.max_tokens_cap) for inst in instances]
            missing = sum(r not in responses for r in requests)
            if missing:
                raise ValueError(
                    f"suite {self.name} ({variant.name}): {missing} requests have no response "
                    f"for model {model}; score() needs an answer to every request of item_requests()"
                )
            values = [response_value(r, responses[r]) for r in requests]
            task = self.tasks[variant.task_key]
            scored = score_instances(task, instances, values)
            by_doc = _by_doc(list(zip(instances, requests, values, strict=True)), key=lambda x: x[0])
            for doc_id, rows in by_doc.items():
                results.append(self._item_result(model, variant, task, rows, scored[doc_id], responses))
        return results

    def kd_prompts(self, render: Renderer | None = None) -> list[str]:
        """The generate prompts of the KD variant (suite file's kd_variant, else the last variant)."""
        wanted = self.spec.kd_variant or [v for v in self.variants if v.draw_of is None][-1].name
        prompts = [
            r.prompt for item in self.items(render, {wanted}) for r in item.requests if r.kind == "generate"
        ]
        return list(dict.fromkeys(prompts))

    # -- beyond the contract --------------------------------------------------------------------
    def aggregate(self, results: list[ItemResult]) -> dict[str, dict[str, float]]:
        """One model's results -> {variant: {"metric,filter": value}} with lm-eval's own aggregations
        (e.g. IFEval's instruction-level accuracy pools instructions across prompts)."""
        out: dict[str, dict[str, float]] = {}
        for variant in self.variants:
            rows = [r for r in results if r.variant == variant.name]
            if not rows:
                continue
            aggregations = self.tasks[variant.task_key].aggregation()
            out[variant.name] = {}
            for key in rows[0].metrics:
                fn = aggregations.get(key.split(",", 1)[0])
                values = [r.details.get("raw", {}).get(key, r.metrics[key]) for r in rows]
                out[variant.name][key] = float(fn(values)) if fn is not None else float(np.mean(values))
        return out

    # -- internals --------------------------------------------------------------------------------
    def _build(
        self, render: Renderer | None, only: set[str] | None = None
    ) -> list[tuple[Variant, list[Any]]]:
        if self.chat_template and render is None:
            raise HarnessError(
                f"suite {self.name} renders prompts with the model's chat template: pass "
                "render=backend.apply_chat_template, or load it with chat_template=False"
            )
        used = render if self.chat_template else None
        return [
            (
                v,
                build_instances(
                    self.tasks[v.task_key],
                    num_fewshot=v.num_fewshot,
                    seed=self.seed + v.seed_offset,
                    limit=self.limit,
                    render=used,
                    fewshot_as_multiturn=self.fewshot_as_multiturn,
                ),
            )
            for v in self.variants
            if only is None or v.name in only
        ]

    def _item_id(self, doc: Mapping[str, Any], doc_id: int) -> str:
        for name in (self.spec.id_field, "id", "key"):
            if name and name in doc and doc[name] is not None:
                return str(doc[name])
        return str(doc_id)

    def _item_result(
        self,
        model: str,
        variant: Variant,
        task: Any,
        rows: list[tuple[Any, Request, Any]],
        scored: dict[str, Any],
        responses: Mapping[Request, Response],
    ) -> ItemResult:
        instances = [row[0] for row in rows]
        doc = instances[0].doc
        raw = scored["metrics"]
        if self.spec.primary_metric not in raw:
            raise HarnessError(
                f"{self.path}: primary_metric {self.spec.primary_metric!r} is not produced by the "
                f"task; it produces {', '.join(sorted(raw))}"
            )
        generated = [responses[req] for _, req, _ in rows if req.kind == "generate"]
        details: dict[str, Any] = {
            "raw": {k: _jsonable(v) for k, v in raw.items() if isinstance(v, list | tuple)}
        }
        details.update(_instruction_details(doc, raw))
        if rows[0][1].kind == "loglikelihood":
            details["option_logprobs"] = [float(v[0]) for _, _, v in rows]
        if self.subtask:
            details["subtask"] = self.subtask
        if any(g.token_ids for g in generated):  # re-scored saved text has no token ids: no count
            details["generated_tokens"] = sum(len(g.token_ids) for g in generated)
        return ItemResult(
            suite=self.name,
            variant=variant.name,
            item_id=self._item_id(doc, instances[0].doc_id),
            model=model,
            prompt=rows[0][1].prompt,
            output=_output(task, doc, rows),
            target=_target_text(task, doc),
            extracted=self._extracted(scored["filtered"], rows[0][1].kind),
            score=_to_float(raw[self.spec.primary_metric]),
            metrics={k: _to_float(v) for k, v in raw.items() if _numeric(v)},
            truncated=any(g.finish_reason == "length" for g in generated),
            details=details,
        )

    def _extracted(self, filtered: dict[str, Any], kind: str) -> str | None:
        if kind != "generate" or self.primary_filter == "none":
            return None
        value = filtered.get(self.primary_filter)
        if value is None or value == INVALID:
            return None
        return str(value)


def _by_doc(items: list[Any], key: Any = None) -> dict[int, list[Any]]:
    groups: dict[int, list[Any]] = defaultdict(list)
    for item in items:
        inst = key(item) if key else item
        groups[inst.doc_id].append(item)
    for group in groups.values():
        group.sort(key=lambda it: (key(it) if key else it).idx)
    return dict(groups)


def _output(task: Any, doc: Any, rows: list[tuple[Any, Request, Any]]) -> str:
    if rows[0][1].kind == "generate":
        return str(rows[0][2])
    lls = [v[0] for _, _, v in rows]
    choices = (
        task.doc_to_choice(doc)
        if task.config.doc_to_choice is not None
        else [r.continuation for _, r, _ in rows]
    )
    best = int(np.argmax(lls))
    return str(choices[best]) if best < len(choices) else rows[best][1].continuation


def _target_text(task: Any, doc: Any) -> str:
    if "instruction_id_list" in doc:  # IFEval-style items have no target, only instructions
        return "; ".join(doc["instruction_id_list"])
    target = task.doc_to_target(doc)
    if isinstance(target, int) and task.config.doc_to_choice is not None:
        choices = task.doc_to_choice(doc)
        return str(choices[target]) if 0 <= target < len(choices) else str(target)
    if isinstance(target, list):
        return " | ".join(str(t) for t in target)
    return str(target)


def _instruction_details(doc: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """IFEval: one verdict per instruction, strict and loose, so reports can break down by type."""
    ids = doc.get("instruction_id_list") if hasattr(doc, "get") else None
    strict = raw.get("inst_level_strict_acc,none")
    loose = raw.get("inst_level_loose_acc,none")
    if not ids or not isinstance(strict, list) or not isinstance(loose, list):
        return {}
    return {
        "instructions": [
            {"id": i, "strict": bool(s), "loose": bool(lo)}
            for i, s, lo in zip(ids, strict, loose, strict=True)
        ]
    }


def _numeric(value: Any) -> bool:
    if isinstance(value, bool | int | float | np.integer | np.floating):
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(v, bool | int | float) for v in value)


def _to_float(value: Any) -> float:
    if isinstance(value, list):
        return float(np.mean([float(v) for v in value])) if value else 0.0
    return float(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
