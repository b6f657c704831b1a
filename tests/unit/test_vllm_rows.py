"""Which scored prompt-logprob rows each prefill chunk yields (harness.backends.vllm_rows.row_window)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.backends.vllm_rows import ROWS_ARG, row_window, scored_rows_of


def _rows_from_chunks(prompt_len: int, rows: int, chunks: list[int], cached: int = 0) -> list[int]:
    """Run a prompt through prefill chunks as vLLM schedules them; the rows each chunk yields."""
    got: list[int] = []
    computed = cached
    for i, scheduled in enumerate(chunks):
        lo, hi, first_row, last = row_window(prompt_len, rows, computed, scheduled)
        assert first_row == prompt_len - 1 - rows
        got += range(lo, hi)
        assert last == (i == len(chunks) - 1)
        computed += scheduled
    return got


@pytest.mark.parametrize(
    "chunks",
    [[100], [40, 60], [95, 5], [10, 10, 10, 70], [99, 1], [30, 30, 30, 10]],
)
def test_every_scored_row_comes_once_whatever_the_chunks(chunks: list[int]) -> None:
    """A 100-token prompt scoring its last 12 rows (tokens 88..99), prefilled in any chunking."""
    assert _rows_from_chunks(100, 12, chunks) == list(range(87, 99))


def test_a_cached_prefix_short_of_the_scored_rows_loses_nothing() -> None:
    assert _rows_from_chunks(100, 12, [13], cached=87) == list(range(87, 99))


def test_a_cached_prefix_into_the_scored_rows_yields_only_the_rest() -> None:
    """The rows before the cached prefix's end never come (vllm_prefix scores such a request again)."""
    assert _rows_from_chunks(100, 12, [4], cached=96) == [96, 97, 98]


def test_a_chunk_ending_on_the_last_prompt_token_is_not_the_last() -> None:
    """As in vLLM: prefilling exactly the prompt's tokens but the last yields every row, and the
    request completes at the next step (which yields nothing)."""
    lo, hi, _, last = row_window(100, 12, 0, 99)
    assert (lo, hi, last) == (87, 99, False)
    lo, hi, _, last = row_window(100, 12, 99, 1)
    assert lo >= hi and last


def test_scored_rows_of_reads_the_extra_arg() -> None:
    with_rows = SimpleNamespace(sampling_params=SimpleNamespace(extra_args={ROWS_ARG: 7}))
    assert scored_rows_of(with_rows) == 7
    assert scored_rows_of(SimpleNamespace(sampling_params=SimpleNamespace(extra_args=None))) is None
    assert scored_rows_of(SimpleNamespace(sampling_params=None)) is None
    assert scored_rows_of(None) is None
