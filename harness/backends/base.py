"""The one contract every backend implements, and the values that cross it.

Backends are deliberately small: they turn batches of requests into batches of results and
know nothing about suites, caching or scheduling (the runner owns those). Every method takes a
whole batch so that an engine sees all of a model's work at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Capabilities:
    """What a backend can return; the KD check and the report adapt to it."""

    full_vocab_logprobs: bool  # teacher-forced logprobs over the whole vocabulary
    max_top_k: int  # the largest top-k per position it returns (0 = none)
    hidden_states: bool = False
    chat_template: bool = False
    target_token_logprobs: bool = False  # can score given token ids per position


@dataclass(frozen=True)
class ModelInfo:
    """Identity of a loaded model, recorded in every run manifest."""

    backend: str  # "vllm", "hf", "mock", ...
    model_id: str  # what the user named (path or hub id)
    fingerprint: str  # content hash of the weights+config (cache key component)
    tokenizer_id: str  # hash of the tokenizer's vocabulary; equal ids mean token-level KD is valid
    vocab_size: int
    max_context: int  # context window in tokens
    chat_template: str | None = None
    n_parameters: int | None = None
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SamplingParams:
    """Generation settings. max_tokens is always explicit (never an engine default)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0  # per generated token; 0 = none
    seed: int = 0

    def key(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": list(self.stop),
            "top_logprobs": self.top_logprobs,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str  # fully rendered text (any chat template already applied by the suite layer)
    params: SamplingParams


@dataclass(frozen=True)
class Generation:
    text: str
    token_ids: tuple[int, ...]
    finish_reason: str  # "stop" or "length"
    # per generated token: ((token_id, logprob), ...) sorted by logprob descending; None when not asked
    top_logprobs: tuple[tuple[tuple[int, float], ...], ...] | None = None


@dataclass(frozen=True)
class LoglikelihoodRequest:
    context: str
    continuation: str


@dataclass(frozen=True)
class Loglikelihood:
    logprob: float  # sum of the continuation's token logprobs
    is_greedy: bool  # every continuation token was the argmax
    n_tokens: int


@dataclass(frozen=True)
class ScoreRequest:
    """Teacher forcing: score `token_ids[start:]`, each conditioned on everything before it.

    `start` >= 1 (the first token has no context). `target_ids`, when given, has one row per
    scored position listing extra token ids whose logprobs must be returned exactly (used to
    fetch a student's logprobs for the teacher's top-k tokens).
    """

    token_ids: tuple[int, ...]
    start: int
    top_k: int = 0
    full_vocab: bool = False
    target_ids: tuple[tuple[int, ...], ...] | None = None


@dataclass
class TokenScores:
    """Per scored position p (token_ids[start + p]); all arrays have len n_positions first.

    logprobs are natural-log probabilities at temperature 1 (log_softmax of the logits).
    """

    token_logprobs: np.ndarray  # (n,) float32: logprob of the actual next token
    topk_ids: np.ndarray  # (n, k) int64, by logprob descending
    topk_logprobs: np.ndarray  # (n, k) float32
    full_logprobs: np.ndarray | None = None  # (n, vocab) float32 when full_vocab was asked and supported
    target_logprobs: np.ndarray | None = None  # (n, m) float32 matching ScoreRequest.target_ids

    @property
    def n_positions(self) -> int:
        return int(self.token_logprobs.shape[0])


@runtime_checkable
class Backend(Protocol):
    """A loaded model. Construct through `harness.backends.load_backend`."""

    def info(self) -> ModelInfo: ...

    def capabilities(self) -> Capabilities: ...

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids without special tokens added (the prompt text carries its own BOS if any)."""
        ...

    def detokenize(self, token_ids: list[int]) -> str: ...

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]: ...

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[Loglikelihood]: ...

    def score_tokens(self, requests: list[ScoreRequest]) -> list[TokenScores]: ...

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render a chat with the model's template; raises HarnessError when it has none."""
        ...

    def close(self) -> None:
        """Free the engine (GPU/CPU memory). The object is unusable afterwards."""
        ...
