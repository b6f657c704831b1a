"""The prefix-cache scoring plan (harness.backends.vllm_prefix) with a stand-in engine call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.backends.vllm_prefix import SCORING_SALT, score_with_prefix_cache, usable


@dataclass
class _Params:
    skip_reading_prefix_cache: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Out:
    prompt: list[int]
    num_cached_tokens: int


class _Engine:
    """A prefix cache of whole 4-token blocks, per salt; a skipping request reads nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[list[int]], str | None, list[bool]]] = []
        self.blocks: set[tuple[str | None, tuple[int, ...]]] = set()

    def __call__(self, prompts: list[list[int]], params: list[Any], salt: str | None) -> list[Any]:
        self.calls.append((prompts, salt, [p.skip_reading_prefix_cache for p in params]))
        outs = []
        for ids, p in zip(prompts, params, strict=True):
            hit = 0
            while not p.skip_reading_prefix_cache and (salt, tuple(ids[: hit + 4])) in self.blocks:
                if hit + 4 > len(ids) - 1:
                    break
                hit += 4
            outs.append(_Out(ids, hit))
        for ids in prompts:  # blocks are cached once the call has run (same call: no sharing)
            for end in range(4, len(ids) + 1, 4):
                self.blocks.add((salt, tuple(ids[:end])))
        return outs


def test_usable_needs_the_cache_to_end_before_the_first_scored_context() -> None:
    assert usable(_Out([], 7), start=8) and not usable(_Out([], 8), start=8)
    assert usable(object(), start=1)  # no count reported: nothing was read


def test_later_texts_of_a_context_run_in_a_second_wave_and_read_it() -> None:
    engine = _Engine()
    context = list(range(100, 110))  # 10 tokens: 2 whole blocks
    prompts = [context + [1, 2, 3], context + [4, 5], list(range(200, 213))]
    starts = [10, 10, 10]
    outs, again, cached = score_with_prefix_cache(engine, prompts, [_Params() for _ in prompts], starts)
    assert [c[0] for c in engine.calls] == [[prompts[0], prompts[2]], [prompts[1]]]
    assert all(salt == SCORING_SALT for _, salt, _ in engine.calls)
    assert [o.prompt for o in outs] == prompts and [o.num_cached_tokens for o in outs] == [0, 8, 0]
    assert again == 0 and cached == 8


def test_a_request_cached_into_its_scored_rows_is_scored_again_without_the_cache() -> None:
    engine = _Engine()
    prompt = list(range(20))
    score_with_prefix_cache(engine, [prompt], [_Params()], [5])
    params = _Params()
    outs, again, cached = score_with_prefix_cache(engine, [prompt], [params], [5])
    assert again == 1 and outs[0].num_cached_tokens == 0 and cached == 0
    assert engine.calls[-1][1:] == (None, [True]) and not params.skip_reading_prefix_cache  # a copy


class _Rows:
    """Stands for ContextRows: completes outputs of context 8 only; records what it was shown."""

    def __init__(self) -> None:
        self.remembered: list[int] = []

    def remember(self, out: Any, prompt: list[int], start: int) -> None:
        self.remembered.append(out.num_cached_tokens)

    def complete(self, out: Any, prompt: list[int], start: int) -> bool:
        return start == 8


def test_an_output_the_context_rows_complete_is_not_scored_again() -> None:
    """A block-aligned context (8 tokens, blocks of 4): the later text finds all of it cached; the
    kept row completes it. Another aligned context with no kept row is scored again."""
    engine, rows = _Engine(), _Rows()
    context = list(range(100, 108))
    score_with_prefix_cache(engine, [context + [1]], [_Params()], [8], rows)  # type: ignore[arg-type]
    outs, again, _ = score_with_prefix_cache(engine, [context + [2, 3]], [_Params()], [8], rows)  # type: ignore[arg-type]
    assert again == 0 and outs[0].num_cached_tokens == 8 and len(engine.calls) == 2
    other = list(range(300, 304))
    score_with_prefix_cache(engine, [other + [1]], [_Params()], [4], rows)  # type: ignore[arg-type]
    _, again, _ = score_with_prefix_cache(engine, [other + [2]], [_Params()], [4], rows)  # type: ignore[arg-type]
    assert again == 1 and engine.calls[-1][1] is None
    assert rows.remembered == [0, 0, 0]  # only complete outputs are offered: the first texts, the re-score


def test_top_k_of_unsorted_full_rows_matches_a_full_sort() -> None:
    import numpy as np

    from harness.backends.vllm_logprobs import top_k_of

    rng = np.random.default_rng(3)
    full = rng.normal(size=(6, 500)).astype(np.float32)
    ids, values = top_k_of(full, 7)
    expected = np.argsort(-full, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(values, np.take_along_axis(full, expected, axis=1))
    assert top_k_of(full, 0)[0].shape == (6, 0)
