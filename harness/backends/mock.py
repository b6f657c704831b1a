"""A scripted, deterministic backend for unit tests of logic (never a stand-in for a real engine).

Tokens are bytes (id = byte + 3; 0 pad, 1 bos, 2 eos). Generation answers come from a script: a
dict prompt -> text, or a callable, or (default) a deterministic echo of the prompt's last word.
Teacher-forced distributions are a shared base distribution (a function of the previous token and
the position) plus model-specific noise of size `noise`: two mock models with small noise are close
in KL, large noise far apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from harness.backends.base import (
    Capabilities,
    Generation,
    GenerationRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    ModelInfo,
    ScoreRequest,
    TokenScores,
)
from harness.errors import HarnessError

VOCAB_SIZE = 259
Script = dict[str, str] | Callable[[str], str] | None


def _seed(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class MockBackend:
    """Construct with `MockBackend("name", script=..., noise=0.5, max_context=2048)`."""

    def __init__(
        self,
        path: str,
        *,
        script: Script = None,
        noise: float = 0.5,
        max_context: int = 2048,
        fail_after: int | None = None,
        **_: Any,
    ) -> None:
        self.name = path
        self.script = script
        self.noise = noise
        self.max_context = max_context
        self.fail_after = fail_after  # raise after this many generate calls (kill/resume tests)
        self.calls: dict[str, int] = {"generate": 0, "loglikelihood": 0, "score_tokens": 0}
        self.requests_seen: dict[str, int] = {"generate": 0, "loglikelihood": 0, "score_tokens": 0}
        self.closed = False

    # -- identity -----------------------------------------------------------------------------
    def info(self) -> ModelInfo:
        return ModelInfo(
            backend="mock",
            model_id=self.name,
            fingerprint=hashlib.sha256(f"mock:{self.name}:{self.noise}".encode()).hexdigest()[:16],
            tokenizer_id="mock-bytes-v1",
            vocab_size=VOCAB_SIZE,
            max_context=self.max_context,
            chat_template="{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}",
            n_parameters=1000,
        )

    def capabilities(self) -> Capabilities:
        return Capabilities(
            full_vocab_logprobs=True, max_top_k=VOCAB_SIZE, chat_template=True, target_token_logprobs=True
        )

    # -- tokens -------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [[b + 3 for b in text.encode("utf-8")] for text in texts]

    def detokenize(self, token_ids: list[int]) -> str:
        return bytes(t - 3 for t in token_ids if t >= 3).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        text = "".join(f"<{m['role']}>{m['content']}\n" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    # -- work ---------------------------------------------------------------------------------
    def _answer(self, prompt: str) -> str:
        if isinstance(self.script, dict):
            return self.script.get(prompt, "")
        if callable(self.script):
            return self.script(prompt)
        words = prompt.split()
        return f" {words[-1] if words else ''}"

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        self._check_open()
        self.calls["generate"] += 1
        if self.fail_after is not None and self.calls["generate"] > self.fail_after:
            raise RuntimeError("mock engine crashed (fail_after reached)")
        self.requests_seen["generate"] += len(requests)
        out = []
        for request in requests:
            text = self._answer(request.prompt)
            for stop in request.params.stop:
                if stop and stop in text:
                    text = text[: text.index(stop)]
            ids = self.tokenize([text])[0]
            finish = "stop"
            if len(ids) > request.params.max_tokens:
                ids = ids[: request.params.max_tokens]
                text, finish = self.detokenize(ids), "length"
            out.append(Generation(text=text, token_ids=tuple(ids), finish_reason=finish))
        return out

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[Loglikelihood]:
        self._check_open()
        self.calls["loglikelihood"] += 1
        self.requests_seen["loglikelihood"] += len(requests)
        out = []
        for request in requests:
            ctx = self.tokenize([request.context])[0] or [1]
            cont = self.tokenize([request.continuation])[0]
            scores = self._distributions(ctx + cont, len(ctx))
            picked = scores[np.arange(len(cont)), cont] if cont else np.zeros(0)
            greedy = bool(np.all(scores.argmax(axis=-1) == np.asarray(cont))) if cont else True
            out.append(Loglikelihood(logprob=float(picked.sum()), is_greedy=greedy, n_tokens=len(cont)))
        return out

    def score_tokens(self, requests: list[ScoreRequest]) -> list[TokenScores]:
        self._check_open()
        self.calls["score_tokens"] += 1
        self.requests_seen["score_tokens"] += len(requests)
        results = []
        for request in requests:
            ids = list(request.token_ids)
            if request.start < 1 or request.start > len(ids):
                raise HarnessError(f"score request start {request.start} outside 1..{len(ids)}")
            full = self._distributions(ids, request.start)
            k = request.top_k
            order = np.argsort(-full, axis=-1, kind="stable")[:, :k]
            target = None
            if request.target_ids is not None:
                target = np.take_along_axis(full, np.asarray(request.target_ids, dtype=np.int64), axis=-1)
            results.append(
                TokenScores(
                    token_logprobs=full[np.arange(len(ids) - request.start), ids[request.start :]].astype(
                        np.float32
                    ),
                    topk_ids=order.astype(np.int64),
                    topk_logprobs=np.take_along_axis(full, order, axis=-1).astype(np.float32),
                    full_logprobs=full.astype(np.float32) if request.full_vocab else None,
                    target_logprobs=None if target is None else target.astype(np.float32),
                )
            )
        return results

    def _distributions(self, ids: list[int], start: int) -> np.ndarray:
        """Log-probabilities for positions start..len(ids)-1, each conditioned on the token before it."""
        rows = []
        for pos in range(start, len(ids)):
            base = np.random.default_rng(_seed("base", ids[pos - 1], pos % 7)).normal(0, 3, VOCAB_SIZE)
            own = np.random.default_rng(_seed(self.name, ids[pos - 1], pos)).normal(0, 1, VOCAB_SIZE)
            rows.append(base + self.noise * own)
        if not rows:
            return np.zeros((0, VOCAB_SIZE))
        return _log_softmax(np.stack(rows))

    def close(self) -> None:
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("mock backend used after close()")
