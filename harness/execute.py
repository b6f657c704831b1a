"""Run one model's requests through its backend, with the cache in front.

All of a model's requests arrive at once (every suite, every variant), are de-duplicated, looked
up in the cache, and the missing ones go to the engine in large chunks, each committed to the cache
as soon as it returns: a killed run loses at most the chunk in flight. A backend that can stream
(`generate_stream`, vLLM) gets all of its generations in one queue instead, and the answers are
committed in small groups as they finish: the engine's batch stays full to the end, and a killed run
loses at most a few seconds of work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from harness.backends.base import Backend, Generation, GenerationRequest, LoglikelihoodRequest
from harness.store.cache import ResponseCache, request_key
from harness.suites.base import Request, Response

ProgressFn = Callable[[int, int], None]  # (done, total)
COMMIT_SECONDS = 10.0  # a streaming run commits finished answers at least this often


@runtime_checkable
class StreamingBackend(Protocol):
    """An optional backend method: answers in the order they finish, as (request index, generation)."""

    def generate_stream(self, requests: list[GenerationRequest]) -> Iterator[tuple[int, Generation]]: ...


@dataclass(frozen=True)
class ExecutionStats:
    total: int
    from_cache: int
    computed: int
    generated_tokens: int
    seconds: float


def run_requests(
    backend: Backend,
    fingerprint: str,
    requests: Iterable[Request],
    cache: ResponseCache,
    *,
    chunk_size: int = 256,
    progress: ProgressFn | None = None,
) -> tuple[dict[Request, Response], ExecutionStats]:
    """Answer every request, from the cache where possible; returns the answers and what it cost."""
    started = time.perf_counter()
    unique = list(dict.fromkeys(requests))
    keys = {request: request_key(fingerprint, request) for request in unique}
    cached = cache.get_many(keys.values())
    answers = {request: cached[keys[request]] for request in unique if keys[request] in cached}
    missing = [request for request in unique if request not in answers]
    done = len(answers)
    if progress:
        progress(done, len(unique))
    generated_tokens = 0
    # every loglikelihood first, then every generation, in the order the suites asked
    for kind in ("loglikelihood", "generate"):
        todo = [request for request in missing if request.kind == kind]
        if kind == "generate" and _streams(backend):
            groups: Iterable[list[tuple[Request, Response]]] = _streamed(backend, todo, chunk_size)  # type: ignore[arg-type]
        else:
            groups = _chunked(backend, kind, todo, chunk_size)
        for pairs in groups:
            cache.put_many(fingerprint, ((keys[request], result) for request, result in pairs))
            answers.update(pairs)
            generated_tokens += sum(len(result.token_ids) for _, result in pairs)
            done += len(pairs)
            if progress:
                progress(done, len(unique))
    stats = ExecutionStats(
        total=len(unique),
        from_cache=len(unique) - len(missing),
        computed=len(missing),
        generated_tokens=generated_tokens,
        seconds=time.perf_counter() - started,
    )
    return answers, stats


def _streams(backend: Backend) -> bool:
    """A backend that may or may not stream says so (`can_stream`); others stream when they can."""
    can = getattr(backend, "can_stream", None)
    return can if isinstance(can, bool) else isinstance(backend, StreamingBackend)


def _chunked(
    backend: Backend, kind: str, todo: list[Request], chunk_size: int
) -> Iterator[list[tuple[Request, Response]]]:
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        yield list(zip(chunk, _run_chunk(backend, kind, chunk), strict=True))


def _streamed(
    backend: StreamingBackend, todo: list[Request], group_size: int
) -> Iterator[list[tuple[Request, Response]]]:
    """Groups of finished generations: `group_size` of them, or what finished in COMMIT_SECONDS."""
    if not todo:
        return
    stream = backend.generate_stream(
        [GenerationRequest(prompt=request.prompt, params=request.params) for request in todo]  # type: ignore[arg-type]
    )
    group: list[tuple[Request, Response]] = []
    last = time.monotonic()
    try:
        for index, g in stream:
            group.append((todo[index], _response(g)))
            if len(group) >= group_size or time.monotonic() - last >= COMMIT_SECONDS:
                yield group
                group, last = [], time.monotonic()
    except Exception:
        if group:  # what finished before the engine or server failed is kept
            yield group
        raise
    if group:
        yield group


def _response(g: Generation) -> Response:
    return Response(text=g.text, token_ids=tuple(g.token_ids), finish_reason=g.finish_reason)


def _run_chunk(backend: Backend, kind: str, chunk: list[Request]) -> list[Response]:
    if kind == "generate":
        generations = backend.generate(
            [GenerationRequest(prompt=request.prompt, params=request.params) for request in chunk]  # type: ignore[arg-type]
        )
        return [_response(g) for g in generations]
    scores = backend.loglikelihood(
        [LoglikelihoodRequest(context=request.prompt, continuation=request.continuation) for request in chunk]
    )
    return [Response(logprob=s.logprob, is_greedy=s.is_greedy) for s in scores]
