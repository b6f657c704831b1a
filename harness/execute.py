"""Run one model's requests through its backend, with the cache in front.

All of a model's requests arrive at once (every suite, every variant), are de-duplicated, looked
up in the cache, and the missing ones go to the engine in large chunks, each committed to the cache
as soon as it returns: a killed run loses at most the chunk in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from harness.backends.base import Backend, GenerationRequest, LoglikelihoodRequest
from harness.store.cache import ResponseCache, request_key
from harness.suites.base import Request, Response

ProgressFn = Callable[[int, int], None]  # (done, total)


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
    import time

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
    # longest prompts first within a kind keeps engine batches homogeneous; order is deterministic
    for kind in ("loglikelihood", "generate"):
        todo = [request for request in missing if request.kind == kind]
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start : start + chunk_size]
            results = _run_chunk(backend, kind, chunk)
            pairs = list(zip(chunk, results, strict=True))
            cache.put_many(fingerprint, ((keys[request], result) for request, result in pairs))
            answers.update(pairs)
            generated_tokens += sum(len(result.token_ids) for result in results)
            done += len(chunk)
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


def _run_chunk(backend: Backend, kind: str, chunk: list[Request]) -> list[Response]:
    if kind == "generate":
        generations = backend.generate(
            [GenerationRequest(prompt=request.prompt, params=request.params) for request in chunk]  # type: ignore[arg-type]
        )
        return [
            Response(text=g.text, token_ids=tuple(g.token_ids), finish_reason=g.finish_reason)
            for g in generations
        ]
    scores = backend.loglikelihood(
        [LoglikelihoodRequest(context=request.prompt, continuation=request.continuation) for request in chunk]
    )
    return [Response(logprob=s.logprob, is_greedy=s.is_greedy) for s in scores]
