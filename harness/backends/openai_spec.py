"""The `openai:` model spec: endpoints, served model name and options, parsed without any HTTP import.

Grammar: `openai:URL[,URL...][#NAME][?KEY=VALUE&...]`, e.g.

    openai:http://127.0.0.1:8000/v1#teacher
    openai:http://10.0.0.1:8000/v1,http://10.0.0.2:8000/v1#teacher?max_concurrency=16
    openai:http://127.0.0.1:8000/v1#teacher?logprobs=0          (a black-box teacher, simulated)

Several URLs are replicas of one model (requests are spread across them). NAME is the served
model name (`/v1/models` id); without it the server must serve exactly one model. Options may also
come as keyword arguments (`--engine-arg KEY=VALUE`); the spec's own options win. API keys are never
part of a spec: they are read from an environment variable (`OPENAI_API_KEY`, or `api_key_env=VAR`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from harness.errors import HarnessError

DEFAULT_KEY_ENV = "OPENAI_API_KEY"


@dataclass(frozen=True)
class OpenAIOptions:
    """Client settings of one served model; every value has a safe default."""

    max_concurrency: int = 8  # requests in flight at once (all endpoints together)
    timeout: float = 120.0  # seconds per HTTP request (connect + read)
    retries: int = 4  # attempts per endpoint for a retryable failure before it is marked down
    backoff: float = 0.5  # first retry delay in seconds; doubles per attempt, with jitter
    backoff_max: float = 8.0  # longest single delay
    logprobs: int = -1  # -1: whatever the server returns; 0: none (black box); K: at most K
    api: str = "auto"  # auto | completions | chat
    api_key_env: str = DEFAULT_KEY_ENV
    tokenizer: str = ""  # local folder; "" = the server's model folder if readable; "server" = its /tokenize
    probe: bool = True  # detect capabilities with small requests at load

    def __post_init__(self) -> None:
        problems = []
        if self.max_concurrency < 1:
            problems.append(f"max_concurrency={self.max_concurrency} (use >= 1)")
        if not self.timeout > 0:
            problems.append(f"timeout={self.timeout} (use seconds > 0)")
        if self.retries < 1:
            problems.append(f"retries={self.retries} (use >= 1 attempts)")
        if self.backoff < 0 or self.backoff_max < 0:
            problems.append("backoff and backoff_max must be >= 0")
        if self.logprobs < -1:
            problems.append(f"logprobs={self.logprobs} (use -1 for the server's maximum, 0 for none, or K)")
        if self.api not in ("auto", "completions", "chat"):
            problems.append(f"api={self.api!r} (use auto, completions or chat)")
        if not self.api_key_env.replace("_", "").isalnum():
            problems.append(f"api_key_env={self.api_key_env!r} (give an environment variable's name)")
        if problems:
            raise HarnessError("openai backend option " + "; ".join(problems))


_OPTION_TYPES = {f.name: f.type for f in fields(OpenAIOptions)}
_SECRETS = ("api_key", "key", "token", "password", "secret", "authorization")


def _convert(key: str, value: Any) -> Any:
    kind = str(_OPTION_TYPES[key])
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
    except (TypeError, ValueError):
        raise HarnessError(f"openai backend option {key}={value!r}: expected a {kind}") from None
    return str(value)


def build_options(
    spec_options: dict[str, str], engine_args: dict[str, Any]
) -> tuple[OpenAIOptions, list[str]]:
    """Options from engine args overridden by the spec's; returns them and the ignored engine-arg keys.

    Engine args reach every backend of a compare run (dtype, max_model_len, ...): the ones that mean
    nothing to a served model are ignored and listed. An unknown key in the spec itself is an error.
    """
    for key in list(spec_options) + list(engine_args):
        if key.lower() in _SECRETS:
            raise HarnessError(
                f"openai backend option {key!r}: API keys are read from the environment only; "
                f"set {DEFAULT_KEY_ENV} or name another variable with api_key_env=VAR"
            )
    unknown = sorted(set(spec_options) - set(_OPTION_TYPES))
    if unknown:
        raise HarnessError(
            f"openai spec option {unknown[0]!r} is not known: use {', '.join(sorted(_OPTION_TYPES))}"
        )
    values = {k: _convert(k, v) for k, v in engine_args.items() if k in _OPTION_TYPES}
    values.update({k: _convert(k, v) for k, v in spec_options.items()})
    ignored = sorted(k for k in engine_args if k not in _OPTION_TYPES)
    return OpenAIOptions(**values), ignored


@dataclass(frozen=True)
class OpenAISpec:
    urls: tuple[str, ...]  # base URLs ending in /v1 (no trailing slash)
    model: str  # served model name; "" = the server's only model
    options: dict[str, str]

    @property
    def label(self) -> str:
        if self.model:
            return self.model.rstrip("/").split("/")[-1] or self.model
        parts = urlsplit(self.urls[0])
        return f"{parts.hostname}-{parts.port}" if parts.port else str(parts.hostname)


def _check_url(url: str, text: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HarnessError(
            f"openai spec {text!r}: {url!r} is not an http(s) URL; write "
            "openai:http://HOST:PORT/v1#MODEL_NAME"
        )
    if parts.username or parts.password:
        raise HarnessError(
            f"openai spec {text!r}: credentials in the URL are not allowed; "
            f"put the API key in ${DEFAULT_KEY_ENV} (or api_key_env=VAR)"
        )
    if parts.query or parts.fragment:
        raise HarnessError(f"openai spec {text!r}: put options after the model name: URL#NAME?KEY=VALUE")
    return url.rstrip("/")


def parse_openai_spec(text: str) -> OpenAISpec:
    """Parse the part after `openai:`; raises HarnessError naming what is wrong and the fix."""
    head, _, tail = text.partition("#")
    if "?" in head and not tail:  # options without a model name: URL?opts
        head, _, query = head.partition("?")
        name = ""
    else:
        name, _, query = tail.partition("?")
    urls = tuple(_check_url(u.strip(), text) for u in head.split(",") if u.strip())
    if not urls:
        raise HarnessError(f"openai spec {text!r} names no URL: write openai:http://HOST:PORT/v1#MODEL_NAME")
    if len(set(urls)) != len(urls):
        raise HarnessError(f"openai spec {text!r} lists the same URL twice")
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        options[key] = value
    if query and not options:
        raise HarnessError(f"openai spec {text!r}: options must be KEY=VALUE pairs joined by '&'")
    return OpenAISpec(urls=urls, model=name.strip(), options=options)
