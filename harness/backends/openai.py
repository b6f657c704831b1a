"""A model served over the OpenAI-compatible HTTP API (vLLM's server, or any other): `openai:URL#NAME`.

Generation goes to /v1/completions (the suites render prompts as text; `api=chat` uses
/v1/chat/completions for servers without completions). Teacher-forced scoring and loglikelihood
send token ids with vLLM's `prompt_logprobs`; logprobs of given tokens (a teacher's top-k scored on
a served student) use vLLM's `logprob_token_ids`, one request per position (prefix caching keeps
that cheap). Full-vocabulary logprobs are never requested over HTTP: KD against a served teacher is
the top-k + tail lower bound, and a teacher without logprobs gets sequence-level checks only.

Identity: a served model's fingerprint (the response-cache key) is a hash of its served name and
its /v1/models metadata (id, root, parent, max_model_len) - not of its weights, which the client
cannot read. Serve changed weights under a new name, or the cache returns the old answers.

The tokenizer is a local transformers tokenizer (`tokenizer=DIR`, or the server's model folder when
it is readable here, as with `harness serve`), else vLLM's /tokenize endpoint, else none (then
only text-level checks work).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from harness.backends import _common as common
from harness.backends.base import (
    Capabilities,
    Generation,
    GenerationRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    ModelInfo,
    SamplingParams,
    ScoreRequest,
    TokenScores,
)
from harness.backends.openai_client import EndpointPool
from harness.backends.openai_parse import (
    first_choice,
    generation_top,
    ids_from_logprobs,
    prompt_scores,
    token_id_map,
)
from harness.backends.openai_probe import VLLM_EXTRAS, Detected, detect, local_tokenizer, served_model
from harness.backends.openai_spec import DEFAULT_KEY_ENV, build_options, parse_openai_spec
from harness.errors import HarnessError, InfrastructureError

CHAT_PREFIX = "\x00harness-chat:"  # apply_chat_template's output in api=chat mode: the messages as JSON


def api_key(env_name: str) -> str | None:
    """The key from the environment; a variable named explicitly must be set."""
    value = os.environ.get(env_name) or None
    if value is None and env_name != DEFAULT_KEY_ENV:
        raise HarnessError(
            f"api_key_env={env_name} but ${env_name} is not set: export it, or drop the option"
        )
    return value


class OpenAIBackend:
    """A served model; construct through `load_backend(parse_model_spec("openai:URL#NAME"))`."""

    name = "openai"

    def __init__(self, path: str, **engine_args: Any) -> None:
        spec = parse_openai_spec(path)
        self._path = path
        self._options, self._ignored = build_options(spec.options, engine_args)
        env = self._options.api_key_env
        self._pool = EndpointPool(spec.urls, self._options, api_key(env), spec.model or spec.label)
        try:
            self._model, self._meta = served_model(spec, self._pool)
            self._pool.model = self._model
            self._tok, self._tok_source, self._folder = local_tokenizer(self._options.tokenizer, self._meta)
            self._det: Detected = detect(self._pool, self._model, self._options)
        except BaseException:
            self._pool.close()
            raise
        if self._tok is None and self._det.tokenize_endpoint:
            self._tok_source = "server /tokenize"
        self._vocab = self._vocab_size()
        self._info: ModelInfo | None = None

    # ---- identity ---------------------------------------------------------------------------
    def _vocab_size(self) -> int:
        config = self._folder / "config.json" if self._folder else None
        if config is not None and config.exists():
            cfg = json.loads(config.read_text())
            size = cfg.get("vocab_size") or cfg.get("text_config", {}).get("vocab_size")
            if isinstance(size, int):
                return size
        return len(self._tok) if self._tok is not None else 0

    def info(self) -> ModelInfo:
        if self._info is None:
            served = json.dumps({"served": self._model, **self._meta}, sort_keys=True, default=str)
            tok_id = (
                common.tokenizer_id(self._tok)
                if self._tok is not None
                else "served:" + hashlib.sha256(served.encode()).hexdigest()
            )
            self._info = ModelInfo(
                backend=self.name,
                model_id=self._path,
                fingerprint=hashlib.sha256(served.encode()).hexdigest(),
                tokenizer_id=tok_id,
                vocab_size=self._vocab,
                max_context=int(self._meta.get("max_model_len") or 0) or 1 << 30,
                chat_template=getattr(self._tok, "chat_template", None),
                dtype="served",
                extra=self._extra(),
            )
        return self._info

    def _extra(self) -> dict[str, Any]:
        opts = self._options
        return {
            "fingerprint_method": "served name + /v1/models metadata (not the weights)",
            "served_model": self._model,
            "endpoints": [e.url for e in self._pool.endpoints],
            "metadata": self._meta,
            "capabilities": self._det.record(),
            "black_box": self.capabilities().max_top_k == 0,  # no teacher-forced logprobs
            "tokenizer": self._tok_source or None,
            "can_tokenize": self._can_tokenize(),
            "options": {
                "max_concurrency": opts.max_concurrency,
                "timeout": opts.timeout,
                "retries": opts.retries,
            },
            "logprobs_option": opts.logprobs,
            "api_key_env": opts.api_key_env,  # the variable's name only, never its value
            "ignored_engine_args": self._ignored,
        }

    def capabilities(self) -> Capabilities:
        det = self._det
        top_k = det.max_top_k if det.prompt_logprobs else 0
        return Capabilities(
            full_vocab_logprobs=False,
            max_top_k=top_k,
            hidden_states=False,
            chat_template=bool(getattr(self._tok, "chat_template", None)) or det.api == "chat",
            target_token_logprobs=det.target_ids and top_k > 0,
        )

    def endpoint_status(self) -> list[dict[str, Any]]:
        """Each endpoint's state (down or up, attempts sent, last error), for logs and tests."""
        return [
            {"url": e.url, "down": e.down, "requests": e.requests, "last_error": e.last_error}
            for e in self._pool.endpoints
        ]

    # ---- text -------------------------------------------------------------------------------
    def _can_tokenize(self) -> bool:
        return self._tok is not None or self._det.tokenize_endpoint

    def _need_tokenizer(self, what: str) -> None:
        if not self._can_tokenize():
            raise HarnessError(
                f"{what} needs the tokenizer of {self._model}: pass tokenizer=DIR in the spec "
                f"(openai:URL#{self._model}?tokenizer=DIR) or serve it with vLLM (which has /tokenize)"
            )

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        if self._tok is not None:
            return [list(self._tok.encode(t, add_special_tokens=False)) for t in texts]
        self._need_tokenizer("tokenizing")
        payloads = [{"model": self._model, "prompt": t, "add_special_tokens": False} for t in texts]
        return [
            list(r["tokens"]) for r in self._pool.map("/tokenize", payloads, at_root=True, expect="tokens")
        ]

    def detokenize(self, token_ids: list[int]) -> str:
        if self._tok is not None:
            return str(self._tok.decode(token_ids, skip_special_tokens=True))
        self._need_tokenizer("detokenizing")
        payload = {"model": self._model, "tokens": list(token_ids)}
        return str(self._pool.post("/detokenize", payload, at_root=True, expect="prompt")["prompt"])

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if self._det.api == "chat":  # the server applies its own template; the messages travel as JSON
            return CHAT_PREFIX + json.dumps(messages, ensure_ascii=False)
        if not getattr(self._tok, "chat_template", None):
            raise HarnessError(
                f"served model {self._model} has no chat template here: pass tokenizer=DIR, use api=chat, "
                "or run with --chat-template off"
            )
        out = self._tok.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return str(out)

    # ---- generation -------------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        common.check_max_tokens(requests)
        chat = self._det.api == "chat"
        path = "/chat/completions" if chat else "/completions"
        outs = self._pool.map(path, [self._gen_payload(r, chat) for r in requests], expect="choices")
        return [self._to_generation(o, r.params, chat) for o, r in zip(outs, requests, strict=True)]

    def generate_stream(self, requests: list[GenerationRequest]) -> Iterator[tuple[int, Generation]]:
        """(index, generation) as each request completes: the caller caches what finished, so a server
        lost mid-run costs only the requests in flight."""
        common.check_max_tokens(requests)
        chat = self._det.api == "chat"
        path = "/chat/completions" if chat else "/completions"
        payloads = [self._gen_payload(r, chat) for r in requests]
        for index, out in self._pool.imap(path, payloads, expect="choices"):
            yield index, self._to_generation(out, requests[index].params, chat)

    def _gen_payload(self, r: GenerationRequest, chat: bool) -> dict[str, Any]:
        p = r.params
        payload: dict[str, Any] = {
            "model": self._model,
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "seed": p.seed,
        }
        if p.stop:
            payload["stop"] = list(p.stop)
        if chat:
            text = r.prompt
            messages = json.loads(text[len(CHAT_PREFIX) :]) if text.startswith(CHAT_PREFIX) else None
            payload["messages"] = messages or [{"role": "user", "content": text}]
        else:
            payload["prompt"] = r.prompt
        if self._det.vllm:
            payload.update(VLLM_EXTRAS)
            if chat:
                payload.pop("add_special_tokens")  # the chat template decides
        k = min(p.top_logprobs, self._det.generation_top_k)
        if k:
            payload.update({"return_tokens_as_token_ids": True, "logprobs": True, "top_logprobs": k})
            if not chat:
                payload.pop("top_logprobs")
                payload["logprobs"] = k
        return payload

    def _to_generation(self, data: dict[str, Any], p: SamplingParams, chat: bool) -> Generation:
        choice = first_choice(data, self._model)
        text = (
            str((choice.get("message") or {}).get("content") or "") if chat else str(choice.get("text") or "")
        )
        ids = choice.get("token_ids")
        top = generation_top(choice, p.top_logprobs, chat) if p.top_logprobs else None
        if ids is None and top is not None:
            ids = ids_from_logprobs(choice, chat)
        if ids is None:
            ids = self.tokenize([text])[0] if self._can_tokenize() else []
        elif self._tok is not None:  # as the local backends do: decoded ids, cut before a stop string
            text = common.final_text(self.detokenize, ids, p.stop)
        reason = "length" if choice.get("finish_reason") == "length" else "stop"
        return Generation(
            text=text, token_ids=tuple(int(i) for i in ids), finish_reason=reason, top_logprobs=top
        )

    # ---- scoring ----------------------------------------------------------------------------
    def score_tokens(self, requests: list[ScoreRequest]) -> list[TokenScores]:
        caps = self.capabilities()
        for r in requests:
            common.validate_score_request(r, self._vocab or 1 << 62)
            self._check_score(r, caps)
        payloads = [self._score_payload(r) for r in requests]
        outs = self._pool.map("/completions", payloads, expect="choices")
        scores = [prompt_scores(first_choice(o, self._model), r) for o, r in zip(outs, requests, strict=True)]
        if any(r.target_ids is not None for r in requests):
            for sc, targets in zip(scores, self._target_logprobs(requests), strict=True):
                sc.target_logprobs = targets
        return scores

    def _check_score(self, r: ScoreRequest, caps: Capabilities) -> None:
        if caps.max_top_k == 0:
            raise HarnessError(
                f"served model {self._model} returns no prompt logprobs (black box): token-level scoring "
                "and loglikelihood need a vLLM server with logprobs enabled"
            )
        if r.full_vocab:
            raise HarnessError(
                "full-vocabulary logprobs are not fetched over HTTP: use --kd-mode lower-bound "
                "(the default for served models)"
            )
        if r.top_k > caps.max_top_k:
            raise HarnessError(
                f"top_k={r.top_k} exceeds the {caps.max_top_k} top logprobs {self._model} returns: "
                "lower --kd-top-k or restart the server with a larger --max-logprobs"
            )
        if r.target_ids is not None and not caps.target_token_logprobs:
            raise HarnessError(f"served model {self._model} cannot return logprobs of given tokens")

    def _score_payload(self, r: ScoreRequest) -> dict[str, Any]:
        return {
            "model": self._model,
            "prompt": list(r.token_ids),
            "max_tokens": 1,
            "temperature": 0,
            "prompt_logprobs": r.top_k,
        }

    def _target_payloads(self, r: ScoreRequest) -> list[dict[str, Any]]:
        """One request per scored position: the prefix, and the ids whose logprobs are wanted next."""
        assert r.target_ids is not None
        payloads = []
        for p, row in enumerate(common.target_matrix(r.target_ids)):
            wanted = [int(t) for t in row if t >= 0] or [int(r.token_ids[r.start + p])]
            payloads.append(
                {
                    "model": self._model,
                    "prompt": list(r.token_ids[: r.start + p]),
                    "max_tokens": 1,
                    "temperature": 0,
                    "logprobs": 1,
                    "logprob_token_ids": wanted,
                    "return_tokens_as_token_ids": True,
                }
            )
        return payloads

    def _target_logprobs(self, requests: list[ScoreRequest]) -> list[np.ndarray | None]:
        """Logprobs of the given ids at each scored position, all positions of all requests at once."""
        wanted = [r for r in requests if r.target_ids is not None]
        payloads = [p for r in wanted for p in self._target_payloads(r)]
        answers = iter(self._pool.map("/completions", payloads, expect="choices"))
        out: list[np.ndarray | None] = []
        for r in requests:
            if r.target_ids is None:
                out.append(None)
                continue
            targets = common.target_matrix(r.target_ids)
            values = np.full(targets.shape, -np.inf, dtype=np.float32)
            for p, row in enumerate(targets):
                choice = first_choice(next(answers), self._model)
                found = token_id_map(((choice.get("logprobs") or {}).get("top_logprobs") or [{}])[0])
                for j, t in enumerate(row):
                    if t >= 0:
                        if int(t) not in found:
                            raise InfrastructureError(f"{self._model} returned no logprob for token {int(t)}")
                        values[p, j] = found[int(t)]
            out.append(values)
        return out

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """lm-eval semantics (as the local backends): continuation tokens follow the context's."""
        self._need_tokenizer("loglikelihood")
        prefix = common.prefix_token_id(self._tok) if self._tok is not None else None

        def enc(text: str) -> list[int]:
            return self.tokenize([text])[0]

        pairs = []
        for r in requests:
            if not r.context and prefix is None:
                raise HarnessError(
                    "an empty loglikelihood context needs a local tokenizer: pass tokenizer=DIR"
                )
            pairs.append(
                common.encode_pair(enc, r.context, r.continuation, prefix if prefix is not None else 0)
            )
        score_reqs = [ScoreRequest(token_ids=tuple(c + x), start=len(c), top_k=1) for c, x in pairs]
        results = []
        for (_, cont), s in zip(pairs, self.score_tokens(score_reqs), strict=True):
            greedy = bool(np.all(s.topk_ids[:, 0] == np.asarray(cont)))
            results.append(Loglikelihood(float(s.token_logprobs.sum()), greedy, len(cont)))
        return results

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()
