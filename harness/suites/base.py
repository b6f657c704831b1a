"""The contract between suites and the runner.

A suite turns its items into engine-level `Request`s (one list for all its variants, so the
runner can batch a model's whole workload into one engine call), and later turns one model's
responses back into per-item scores. Suites never call a backend themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from harness.backends.base import SamplingParams

Ability = Literal["icl", "cot", "if"]
RequestKind = Literal["generate", "loglikelihood"]
# Renders chat messages with a model's chat template: (messages, add_generation_prompt=True) -> prompt text.
# `Backend.apply_chat_template` is one. Suites whose info().chat_template is True need it.
Renderer = Callable[..., str]


@dataclass(frozen=True)
class Request:
    """One engine call's worth of work; hashable, so equal requests run once per model."""

    kind: RequestKind
    prompt: str  # the full rendered prompt (generate) or the context (loglikelihood)
    continuation: str = ""  # loglikelihood only
    params: SamplingParams | None = None  # generate only


@dataclass(frozen=True)
class Response:
    """What a model answered to a Request (the cached unit)."""

    text: str = ""  # generate
    token_ids: tuple[int, ...] = ()  # generate: generated token ids
    finish_reason: str = ""  # generate: "stop" | "length"
    logprob: float = 0.0  # loglikelihood
    is_greedy: bool = False  # loglikelihood


@dataclass(frozen=True)
class ItemRequests:
    """The requests of one item under one variant (several for multiple choice)."""

    variant: str  # e.g. "k=0", "k=4", "cot", "direct", "default"
    item_id: str
    requests: tuple[Request, ...]


@dataclass
class ItemResult:
    """One model's outcome on one item under one variant; a row of items.jsonl."""

    suite: str
    variant: str
    item_id: str
    model: str  # model label
    prompt: str
    output: str  # generated text, or the chosen option for multiple choice
    target: str
    extracted: str | None  # the answer the filter extracted (None when nothing was found)
    score: float  # the suite's primary metric for this item, in [0, 1]
    metrics: dict[str, float] = field(default_factory=dict)  # every per-item metric lm-eval returned
    truncated: bool = False  # generation hit max_tokens
    details: dict[str, Any] = field(default_factory=dict)  # checker verdicts, option logprobs, ...


@dataclass(frozen=True)
class SuiteInfo:
    name: str
    ability: Ability
    description: str
    variants: tuple[str, ...]
    baseline_variant: str  # the variant gains are measured against ("k=0", "direct")
    primary_metric: str
    chance: float  # the score of a random guesser on the primary metric
    n_items: int
    chat_template: bool = False  # prompts are rendered per model: pass render= to the Suite methods
    group: str | None = None  # a subtask's group (e.g. "bbh" for "bbh:navigate"), summarised over its members
    draws: dict[str, tuple[str, ...]] = field(default_factory=dict)  # ICL: variant -> its extra seeded draws


class Suite(Protocol):
    """A loaded suite (items already read and limited)."""

    def info(self) -> SuiteInfo: ...

    def item_requests(self, render: Renderer | None = None) -> list[ItemRequests]:
        """`render`: the model's chat-template renderer; used only when info().chat_template."""
        ...

    def score(
        self, model: str, responses: Mapping[Request, Response], render: Renderer | None = None
    ) -> list[ItemResult]:
        """Score one model; `responses` holds an answer for every request of item_requests(render)."""
        ...

    def kd_prompts(self, render: Renderer | None = None) -> list[str]:
        """Prompts whose teacher generations the KD check scores (usually the generate prompts)."""
        ...
