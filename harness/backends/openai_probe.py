"""What a served model can do, found at load with a few one-token requests (the openai backend).

Probed, in order: the completions endpoint with vLLM's extensions (token ids in responses, prompt
logprobs, `add_special_tokens`), then without them, then the chat endpoint; the largest number of
top logprobs the server allows (vLLM names its `max_logprobs` in the refusal); vLLM's
`logprob_token_ids` (logprobs of given tokens, used to score a teacher's top-k on a served student);
and vLLM's `/tokenize`. `logprobs=0` in the options skips every logprob probe and never asks for one:
a black-box model, as an API that returns no logprobs would be. Also here: which served model a spec
means (from /v1/models), and its local tokenizer.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.backends.openai_client import EndpointPool, RequestRejected
from harness.backends.openai_spec import OpenAIOptions, OpenAISpec
from harness.errors import HarnessError

# vLLM accepts these on /v1/completions: token ids back, no BOS added to text prompts (the harness's
# prompts carry their own special tokens), and top-logprob keys as "token_id:N" instead of text.
VLLM_EXTRAS = {"return_token_ids": True, "add_special_tokens": False}
PROBE_TOP_K = 1 << 16
_MAX_ALLOWED = re.compile(r"max(?:imum)? allowed:? (-?\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Detected:
    api: str  # "completions" or "chat": the endpoint generation uses
    vllm: bool  # vLLM's extensions accepted (token ids, prompt logprobs, add_special_tokens)
    server: str  # the server's system_fingerprint (e.g. "vllm-0.32.0-...") or ""
    generation_top_k: int  # top logprobs per generated token, with token ids (0 = none)
    prompt_logprobs: bool  # teacher-forced logprobs of a prompt (vLLM's prompt_logprobs)
    max_top_k: int  # top-k per position the server allows (0 = no logprobs at all)
    target_ids: bool  # logprobs of given token ids (vLLM's logprob_token_ids)
    tokenize_endpoint: bool  # vLLM's /tokenize and /detokenize

    def record(self) -> dict[str, Any]:
        return asdict(self)


def assumed(options: OpenAIOptions) -> Detected:
    """probe=0: a vLLM server is assumed, with `logprobs` top logprobs (20 when not given)."""
    k = 20 if options.logprobs < 0 else options.logprobs
    api = "chat" if options.api == "chat" else "completions"
    return Detected(api, True, "", k, k > 0, k, k > 0, False)


def _try(pool: EndpointPool, path: str, payload: dict[str, Any], **kw: Any) -> dict[str, Any] | None:
    try:
        return pool.post(path, payload, **kw)
    except RequestRejected:
        return None


def _choice(data: dict[str, Any] | None) -> dict[str, Any]:
    choices = (data or {}).get("choices") or [{}]
    return choices[0] if isinstance(choices[0], dict) else {}


def _completions(pool: EndpointPool, model: str, want_lp: bool) -> tuple[dict[str, Any], bool] | None:
    """(first choice, vllm) of the first accepted completions probe, or None without the endpoint."""
    base = {"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0}
    logprobs = {"logprobs": 1} if want_lp else {}
    extras = {"prompt_logprobs": 1, "return_tokens_as_token_ids": True} if want_lp else {}
    tries = [({**base, **VLLM_EXTRAS, **logprobs, **extras}, True), ({**base, **logprobs}, False)]
    if want_lp:
        tries.append((base, False))
    for payload, vllm in tries:
        data = _try(pool, "/completions", payload)
        if data is not None:
            choice = _choice(data)
            vllm = vllm and ("token_ids" in choice or "prompt_token_ids" in choice)
            return {**choice, "_fingerprint": data.get("system_fingerprint") or ""}, vllm
    return None


def _chat(pool: EndpointPool, model: str, want_lp: bool) -> dict[str, Any] | None:
    base = {"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1}
    tries = [{**base, "logprobs": True, "top_logprobs": 1}] if want_lp else []
    for payload in [*tries, base]:
        data = _try(pool, "/chat/completions", {**payload, "temperature": 0})
        if data is not None:
            return {**_choice(data), "_fingerprint": data.get("system_fingerprint") or ""}
    return None


def _max_top_k(pool: EndpointPool, model: str, chat: bool) -> int:
    """The most top logprobs the server returns per position (it names its limit when refusing)."""
    if chat:
        base: dict[str, Any] = {"messages": [{"role": "user", "content": "Hello"}], "logprobs": True}
        key = "top_logprobs"
        path = "/chat/completions"
    else:
        base, key, path = {"prompt": "Hello"}, "logprobs", "/completions"
    for k in (PROBE_TOP_K, 20, 5, 1):
        payload = {**base, "model": model, "max_tokens": 1, "temperature": 0, key: k}
        try:
            data = pool.post(path, payload)
        except RequestRejected as exc:
            found = _MAX_ALLOWED.search(exc.detail)
            if found and int(found.group(1)) > 0:
                return int(found.group(1))
            continue
        return max(1, _count_top(_choice(data), chat))
    return 0


def _count_top(choice: dict[str, Any], chat: bool) -> int:
    lp = choice.get("logprobs") or {}
    if chat:
        content = lp.get("content") or [{}]
        return len(content[0].get("top_logprobs") or [])
    tops = lp.get("top_logprobs") or [{}]
    return len(tops[0] or {})


def _target_ids(pool: EndpointPool, model: str) -> bool:
    payload = {"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0, "logprobs": 1}
    payload.update({"logprob_token_ids": [0], "return_tokens_as_token_ids": True})
    tops = (_choice(_try(pool, "/completions", payload)).get("logprobs") or {}).get("top_logprobs") or [{}]
    return "token_id:0" in (tops[0] or {})


def _tokenize_endpoint(pool: EndpointPool, model: str) -> bool:
    payload = {"model": model, "prompt": "Hello", "add_special_tokens": False}
    data = _try(pool, "/tokenize", payload, at_root=True)
    return data is not None and isinstance(data.get("tokens"), list)


def detect(pool: EndpointPool, model: str, options: OpenAIOptions) -> Detected:
    """Probe the served model (a few one-token requests); options.logprobs caps what is used."""
    if not options.probe:
        return assumed(options)
    want_lp = options.logprobs != 0
    found = _completions(pool, model, want_lp)
    completion, vllm = found if found is not None else ({}, False)
    use_chat = options.api == "chat" or found is None
    if found is None and options.api == "completions":
        raise HarnessError(f"served model {model!r} has no /v1/completions endpoint: use api=chat")
    generation = completion
    if use_chat:
        chat = _chat(pool, model, want_lp)
        if chat is None:
            raise HarnessError(
                f"served model {model!r} answered neither /v1/completions nor /v1/chat/completions: "
                "check the URL (it should end in /v1) and the model name"
            )
        generation = chat
    gen_lp = want_lp and bool(generation.get("logprobs"))
    prompt_lp = want_lp and vllm and isinstance(completion.get("prompt_logprobs"), list)
    top_k = _max_top_k(pool, model, found is None) if gen_lp or prompt_lp else 0
    if options.logprobs > 0:
        top_k = min(top_k, options.logprobs)
    api = "chat" if use_chat else "completions"
    return Detected(
        api=api,
        vllm=vllm,
        server=str(generation.get("_fingerprint") or ""),
        generation_top_k=top_k if gen_lp and vllm else 0,
        prompt_logprobs=prompt_lp and top_k > 0,
        max_top_k=top_k,
        target_ids=prompt_lp and top_k > 0 and _target_ids(pool, model),
        tokenize_endpoint=vllm and _tokenize_endpoint(pool, model),
    )


_META_KEYS = ("id", "root", "parent", "max_model_len")  # the stable part of /v1/models (the fingerprint's)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def served_model(spec: OpenAISpec, pool: EndpointPool) -> tuple[str, dict[str, Any]]:
    """The served name and its stable /v1/models metadata; every endpoint up must serve the same."""
    chosen: tuple[str, dict[str, Any]] | None = None
    for endpoint, data in pool.get_each("/models"):
        if data is None:
            continue
        entries = {str(m.get("id")): m for m in data.get("data") or [] if isinstance(m, dict)}
        name = spec.model or (next(iter(entries)) if len(entries) == 1 else "")
        if name not in entries:
            listed = ", ".join(sorted(entries)) or "none"
            fix = f"openai:{endpoint.url}#NAME" if not spec.model else f"the name after '#' ({listed})"
            raise HarnessError(
                f"{endpoint.url} serves {listed}, not {spec.model or 'exactly one model'}: use {fix}"
            )
        meta = {k: entries[name].get(k) for k in _META_KEYS}
        if chosen is not None and meta != chosen[1]:
            raise HarnessError(
                f"the endpoints of {spec.label} serve different models ({chosen[1]} vs {meta}): "
                "list only replicas of one model in one spec"
            )
        chosen = (name, meta)
    assert chosen is not None  # get_each raised when every endpoint is down
    return chosen


def local_tokenizer(option: str, meta: dict[str, Any]) -> tuple[Any, str, Path | None]:
    """(tokenizer or None, where it came from, its folder); tokenizer=server skips the local one."""
    if option == "server":
        return None, "", None
    folder = Path(option or str(meta.get("root") or "")).expanduser()
    readable = bool(option or meta.get("root")) and folder.is_dir()
    if not readable or not any((folder / f).exists() for f in _TOKENIZER_FILES):
        if option:
            raise HarnessError(f"tokenizer={option}: not a folder with a tokenizer (tokenizer.json ...)")
        return None, "", None
    try:
        from transformers import AutoTokenizer
    except ImportError:
        if option:
            raise HarnessError(
                "tokenizer=DIR needs transformers: pip install 'distill-harness[hf]'"
            ) from None
        return None, "", None
    return AutoTokenizer.from_pretrained(str(folder)), f"local {folder}", folder
