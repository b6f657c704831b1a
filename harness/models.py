"""Loading the models of a compare: engine arguments per role, lazy local engines, what each load cost
(the manifest's model entries), and the context-window check before any generation."""

from __future__ import annotations

import functools
import time
from dataclasses import asdict
from typing import Any

from harness.backends import ModelSpec, backend_class, load_backend
from harness.backends.base import Backend, ModelInfo
from harness.backends.lazy import LAZY_BACKENDS, LazyBackend
from harness.config import CompareConfig
from harness.cost import _rss_bytes, _weights_bytes
from harness.errors import HarnessError
from harness.store.cache import ResponseCache
from harness.suites.base import Request


def _model_entry(
    role: str,
    spec: ModelSpec,
    info: ModelInfo,
    load_seconds: float,
    rss_delta: int | None = None,
    backend: Backend | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "role": role,
        "spec": str(spec),
        "info": asdict(info),
        "timings": {"load_seconds": load_seconds},
        "memory": {"load_rss_delta_bytes": rss_delta, "weights_bytes": _weights_bytes(info)},
    }
    if isinstance(backend, LazyBackend):
        entry["timings"]["engine_started"] = backend.started
        if not backend.started:  # filled in if a request misses the cache and starts it
            backend.on_start = functools.partial(_engine_started, entry)
    return entry


def _engine_started(entry: dict[str, Any], seconds: float, rss_delta: int | None) -> None:
    entry["timings"].update(load_seconds=seconds, engine_started=True)
    entry["memory"]["load_rss_delta_bytes"] = rss_delta


def check_context(label: str, backend: Backend, requests: list[Request]) -> None:
    """A prompt longer than the model's context window is a user error, caught before any generation."""
    if not backend.info().extra.get("can_tokenize", True):
        return  # a served model without a tokenizer here: its server refuses an overlong prompt itself
    limit = backend.info().max_context
    generate = [r for r in requests if r.kind == "generate"]
    lengths = [len(ids) for ids in backend.tokenize([r.prompt for r in generate])] if generate else []
    for request, length in zip(generate, lengths, strict=False):
        budget = request.params.max_tokens if request.params else 0
        if length + budget > limit:
            raise HarnessError(
                f"a prompt of {length} tokens plus max_tokens {budget} exceeds {label}'s context window "
                f"of {limit} tokens: use fewer shots, a shorter max_tokens, "
                "or pass --engine-arg max_model_len=N"
            )


def _engine_args(role: str, spec: ModelSpec, config: CompareConfig) -> dict[str, Any]:
    engine_args = dict(config.engine_args)
    if spec.backend == "vllm" and config.kd:
        if config.kd_mode == "lower-bound" and role == "teacher":
            # the teacher's top-K: vLLM refuses prompt_logprobs above the engine's max_logprobs
            engine_args.setdefault("max_logprobs", max(config.kd_top_k, 20))
        else:
            # exact KD (both), or a student scored on its full distribution at its turn (lower bound):
            # vLLM returns the full vocabulary per position only when started with max_logprobs=-1
            engine_args.setdefault("max_logprobs", -1)
    return engine_args


def _start(spec: ModelSpec, engine_args: dict[str, Any]) -> tuple[Backend, float, int | None]:
    """The started backend, the start's seconds and the resident memory it added."""
    started = time.perf_counter()
    before = _rss_bytes()
    backend = load_backend(spec, **engine_args)
    after = _rss_bytes()
    rss_delta = after - before if before is not None and after is not None else None
    return backend, time.perf_counter() - started, rss_delta


def _load(role: str, spec: ModelSpec, config: CompareConfig) -> tuple[Backend, ModelInfo, float, int | None]:
    """The backend, its info, the load's seconds and the resident memory it added.

    A local-weights model is a LazyBackend: its engine starts only when a request misses the cache
    (a re-run starts none), and `_model_entry` records the start's cost when it happens.
    """
    engine_args = _engine_args(role, spec, config)
    if spec.backend not in LAZY_BACKENDS:
        backend, seconds, rss = _start(spec, engine_args)
        return backend, backend.info(), seconds, rss
    started = time.perf_counter()
    lazy = LazyBackend(
        spec.backend,
        spec.path,
        engine_args,
        functools.partial(_start, spec, engine_args),
        backend_class(spec.backend),
        ResponseCache(config.cache_dir / "responses.sqlite"),
    )
    info = lazy.info()
    if lazy.started:
        return lazy, info, lazy.load_seconds or 0.0, lazy.rss_delta
    return lazy, info, time.perf_counter() - started, None
