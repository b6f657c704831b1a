"""Gold references as a third text for the KD check (next to the teacher's and the student's generations).

For each suite, the prompts of its KD variant (the same ones the teacher generated on) are paired with
the item's gold continuation: the target formatted as the suite's few-shot exemplars are (e.g. "Noah
starts with 2 ... so 2 + 4 = 6. The answer is 6." when the exemplars show reasoning), else the task's
plain target ("6", "right"); lm-eval's target delimiter goes in front. Suites without a reference text
(instruction following) are skipped with the reason. Both models then score prompt + gold under
teacher forcing, exactly as they score the teacher's text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.backends._common import encode_pair
from harness.backends.base import Backend
from harness.kd import KDSequence
from harness.suites.base import Renderer, Suite

GOLD_TEXT = "gold references (off-policy)"
NO_ITEMS = "the suite exposes no items with a gold text (only lm-eval task suites do)"
NO_REFERENCE = "its items have no reference text (e.g. instruction following is checked, not compared)"


@dataclass(frozen=True)
class GoldPlan:
    """The gold sequences (teacher tokenization), the suite of each, and the suites skipped with why."""

    sequences: list[KDSequence] = field(default_factory=list)
    suite_of: dict[str, str] = field(default_factory=dict)  # seq_id -> suite
    skipped: dict[str, str] = field(default_factory=dict)  # suite -> reason


def _template_fields_present(template: str, doc: Mapping[str, Any]) -> bool:
    import jinja2
    from jinja2 import meta

    try:
        names = meta.find_undeclared_variables(jinja2.Environment().parse(template))
    except jinja2.TemplateSyntaxError:
        return False
    return all(name in doc for name in names)


def _as_text(task: Any, doc: Mapping[str, Any], target: Any) -> str:
    if isinstance(target, list):
        target = target[0] if target else ""
    if isinstance(target, int) and not isinstance(target, bool) and task.config.doc_to_choice is not None:
        choices = task.doc_to_choice(doc)
        return str(choices[target]) if 0 <= target < len(choices) else ""
    return "" if target is None else str(target)


def gold_text(task: Any, doc: Mapping[str, Any]) -> str | None:
    """The item's reference continuation (without delimiter), formatted like the few-shot exemplars'
    targets when that template applies to the item, else the task's target; None when there is none."""
    if "instruction_id_list" in doc:  # IFEval-style: instructions to follow, no reference answer
        return None
    template = getattr(getattr(task, "fewshot_cfg", None), "doc_to_target", None)
    attempts: list[Any] = []
    if isinstance(template, str) and _template_fields_present(template, doc):
        attempts.append(template)
    attempts.append(None)
    for attempt in attempts:
        try:
            target = task.doc_to_target(doc, attempt) if attempt else task.doc_to_target(doc)
        except Exception:  # noqa: BLE001 - a template that does not fit this item: try the next
            continue
        text = _as_text(task, doc, target).strip()
        if text:
            return text
    return None


def _delimiter(task: Any) -> str:
    fewshot = getattr(getattr(task, "fewshot_cfg", None), "target_delimiter", None)
    return str(fewshot if fewshot is not None else task.config.target_delimiter)


def gold_pairs(suite: Suite, render: Renderer | None, limit: int) -> tuple[list[tuple[str, str]], str | None]:
    """(prompt, delimiter + gold) for the first `limit` KD prompts of the suite, or ([], why not)."""
    from harness.suites.suite import LmEvalSuite

    if not isinstance(suite, LmEvalSuite):
        return [], NO_ITEMS
    mains = [v for v in suite.variants if v.draw_of is None]
    wanted = suite.spec.kd_variant or mains[-1].name
    variant = next((v for v in suite.variants if v.name == wanted), None)
    if variant is None:
        return [], f"its KD variant {wanted!r} is not one of its variants"
    task = suite.tasks[variant.task_key]
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in suite.items(render, {wanted}):
        prompt = next((r.prompt for r in item.requests if r.kind == "generate"), None)
        if prompt is None or prompt in seen:
            continue
        seen.add(prompt)
        if len(seen) > limit:
            break
        text = gold_text(task, item.doc)
        if text:
            pairs.append((prompt, _delimiter(task) + text))
    if not seen:
        return [], "it has no generation prompts (multiple choice: its gold choice is scored by the suite)"
    return pairs, None if pairs else NO_REFERENCE


def build_gold(suites: Sequence[Suite], backend: Backend, per_suite: int, max_tokens: int) -> GoldPlan:
    """Gold sequences for every suite (the backend's tokenizer and chat template); a gold continuation
    longer than `max_tokens` tokens is cut there, like the teacher's generations."""
    plan = GoldPlan()

    def encode(text: str) -> list[int]:
        return backend.tokenize([text])[0]

    for suite in suites:
        name = suite.info().name
        pairs, reason = gold_pairs(suite, backend.apply_chat_template, per_suite)
        if reason:
            plan.skipped[name] = reason
        for prompt, continuation in pairs:
            context, gold = encode_pair(encode, prompt, continuation, 0)
            if context and gold:
                seq_id = f"kd-gold-{len(plan.sequences)}"
                plan.sequences.append(KDSequence(seq_id, tuple(context + gold[:max_tokens]), len(context)))
                plan.suite_of[seq_id] = name
    return plan
