"""Completing a scoring output that lacks the row after its block-aligned context
(harness.backends.vllm_context_rows), on stand-in outputs shaped like `_raw_prompt_logprobs`'s."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from harness.backends.vllm_context_rows import ContextRows  # noqa: E402

VOCAB = 6
BLOCK = 4


def _full_rows(prompt: list[int], start: int, seed: int) -> tuple[Any, Any]:
    """Unsorted full-vocabulary rows for prompt[start:]: column 0 the token, then ids 0..V-1."""
    gen = torch.Generator().manual_seed(seed)
    n = len(prompt) - start
    lps = torch.log_softmax(torch.randn(n, VOCAB, generator=gen), dim=1)
    tokens = torch.tensor(prompt[start:]).unsqueeze(1)
    ids = torch.cat((tokens, torch.arange(VOCAB).expand(n, VOCAB)), dim=1).to(torch.int32)
    return ids, torch.cat((lps.gather(1, tokens), lps), dim=1)


def _out(prompt: list[int], start: int, cached: int, seed: int) -> Any:
    ids, lps = _full_rows(prompt, start, seed)
    plp = SimpleNamespace()
    plp.__dict__["harness_raw"] = [(ids, lps)]
    return SimpleNamespace(prompt_logprobs=plp, num_cached_tokens=cached)


CONTEXT = [1, 2, 3, 4, 5, 0, 1, 2]  # 8 tokens: two whole blocks


def test_a_later_text_gets_the_row_its_cached_context_skipped() -> None:
    rows = ContextRows(BLOCK, VOCAB)
    first = _out(CONTEXT + [3, 4], start=8, cached=0, seed=0)
    rows.remember(first, CONTEXT + [3, 4], 8)
    later = _out(CONTEXT + [5, 1, 1], start=8, cached=8, seed=1)
    assert rows.complete(later, CONTEXT + [5, 1, 1], 8) and rows.completed == 1
    kept_ids, kept_lps = first.prompt_logprobs.harness_raw[0]
    ids, lps = later.prompt_logprobs.harness_raw[0]
    assert ids[0, 0] == 5 and torch.equal(ids[0, 1:], kept_ids[0, 1:])
    assert lps[0, 0] == kept_lps[0, 1 + 5] and torch.equal(lps[0, 1:], kept_lps[0, 1:])
    assert torch.equal(lps[1:], _full_rows(CONTEXT + [5, 1, 1], 8, seed=1)[1][1:])  # the rest untouched


@pytest.mark.parametrize(
    ("prompt", "start", "cached", "why"),
    [
        (CONTEXT + [5, 1], 8, 4, "cached short of the context: nothing is missing"),
        (CONTEXT[:7] + [5, 1], 7, 4, "a context off the block boundary"),
        ([9, 9, 9, 9, 9, 9, 9, 9, 5, 1], 8, 8, "another context: no row kept for it"),
    ],
)
def test_only_the_one_missing_row_of_a_known_aligned_context_is_filled(
    prompt: list[int], start: int, cached: int, why: str
) -> None:
    rows = ContextRows(BLOCK, VOCAB)
    rows.remember(_out(CONTEXT + [3], 8, 0, seed=0), CONTEXT + [3], 8)
    assert not rows.complete(_out(prompt, start, cached, seed=2), prompt, start), why


def test_cached_past_the_context_is_not_completed() -> None:
    """Texts that agree for a whole block after the context: more than one row is missing."""
    rows = ContextRows(BLOCK, VOCAB)
    prompt = CONTEXT + [3, 4, 5, 0, 1]
    rows.remember(_out(prompt, 8, 0, seed=0), prompt, 8)
    assert not rows.complete(_out(prompt, 8, 12, seed=1), prompt, 8)


def test_top_k_rows_are_not_kept() -> None:
    rows = ContextRows(BLOCK, VOCAB)
    top = _out(CONTEXT + [3], 8, 0, seed=0)
    ids, lps = top.prompt_logprobs.harness_raw[0]
    top.prompt_logprobs.__dict__["harness_raw"] = [(ids[:, :3], lps[:, :3])]
    rows.remember(top, CONTEXT + [3], 8)
    assert not rows.complete(_out(CONTEXT + [4], 8, 8, seed=1), CONTEXT + [4], 8)


def test_kept_rows_are_bounded_least_recently_used_first() -> None:
    one_row = 2 * VOCAB * 4  # int32 ids and float32 logprobs
    rows = ContextRows(BLOCK, VOCAB, max_bytes=2 * one_row)
    contexts = [[c] * 8 for c in range(3)]
    for c in contexts:
        rows.remember(_out(c + [1], 8, 0, seed=0), c + [1], 8)
    assert not rows.complete(_out(contexts[0] + [2], 8, 8, seed=1), contexts[0] + [2], 8)  # evicted
    assert rows.complete(_out(contexts[2] + [2], 8, 8, seed=1), contexts[2] + [2], 8)
