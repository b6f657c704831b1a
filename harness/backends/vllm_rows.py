"""Prompt logprobs of only the scored rows, computed inside vLLM's model runner.

vLLM computes a request's prompt logprobs at every prompt position it prefills: the logits (positions x
vocabulary), their log-softmax, and a copy into a (prompt length x vocabulary + 1) CPU buffer. A scoring
request of a few-shot suite needs 64 rows after a context of ~800 tokens, so most of that work (and a
0.3 GB buffer per request at SmolLM2's 49,152 tokens) is thrown away.

While `scored_rows_only` is active, a request that carries `ROWS_ARG` (the number of trailing prompt
positions it scores) gets logprobs for those rows only, in a buffer of that many rows; every other
request goes through vLLM's own `_get_prompt_logprobs_dict`. The engine's hidden states cover every
prefilled position either way: only the logits and what follows them are restricted. Rows a request
could not compute (its cached prefix reached them) are NaN; `vllm_prefix.usable` already sends such a
request to be scored again with the cache skipped.

This patches GPUModelRunner, which vLLM's CPU runner subclasses, in this process: it applies to the
in-process engine (VLLM_ENABLE_V1_MULTIPROCESSING=0, the harness's default on the CPU). In an engine
core process of its own, vLLM's code runs and `_token_scores` keeps the trailing rows of the full buffer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

ROWS_ARG = "harness_scored_rows"  # SamplingParams.extra_args key: the prompt-logprob rows a request needs
_NEEDED = ("requests", "query_start_loc", "input_batch", "model", "model_config", "sampler")


def scored_rows_of(request_state: Any) -> int | None:
    """The trailing prompt rows a runner request state asks for through ROWS_ARG, or None."""
    params = getattr(request_state, "sampling_params", None)
    extra = getattr(params, "extra_args", None) or {}
    rows = extra.get(ROWS_ARG)
    return int(rows) if rows is not None and int(rows) > 0 else None


def row_window(prompt_len: int, rows: int, computed: int, scheduled: int) -> tuple[int, int, int, bool]:
    """Which of a request's scored rows this step's chunk yields.

    Row i holds the logprobs of prompt token i + 1, from position i; the scored rows are the last
    `rows` of the prompt's `prompt_len - 1`. A step prefills positions computed .. computed+scheduled-1.
    Returns (lo, hi, first_row, last_chunk): rows lo..hi-1 come from this step (lo >= hi: none),
    first_row is the first scored row, and last_chunk says the prompt's rows are complete after it
    (as in vLLM: a chunk that reaches the last prompt token itself waits for the next step).
    """
    first_row = prompt_len - 1 - rows
    remaining = prompt_len - (computed + 1)
    last_chunk = scheduled > remaining
    num_logits = remaining if last_chunk else scheduled
    lo = max(computed, first_row)
    hi = min(computed + max(num_logits, 0), prompt_len - 1)
    return lo, hi, first_row, last_chunk


def _scored_rows(runner: Any, hidden_states: Any, scheduled: dict[str, int], mine: dict[str, int]) -> dict:
    import torch
    from vllm.v1.outputs import LogprobsTensors

    done: dict[str, Any] = {}
    for req_id, n_logprobs in mine.items():
        n_tokens = scheduled.get(req_id)
        state = runner.requests.get(req_id)
        if n_tokens is None or state is None:  # preempted in prefill; it comes back later
            continue
        rows = scored_rows_of(state)
        assert rows is not None
        prompt = state.prompt_token_ids
        lo, hi, first_row, last_chunk = row_window(len(prompt), rows, state.num_computed_tokens, n_tokens)
        buffer = state.in_progress_prompt_logprobs_cpu
        if buffer is None:
            buffer = LogprobsTensors.empty_cpu(rows, n_logprobs + 1)
            # rows before this chunk were cached: never computed (the request is scored again)
            missing = max(0, min(state.num_computed_tokens, first_row + rows) - first_row)
            buffer.logprobs[:missing].fill_(float("nan"))
            state.in_progress_prompt_logprobs_cpu = buffer
        if hi > lo:
            offset = int(runner.query_start_loc.np[runner.input_batch.req_id_to_index[req_id]])
            begin = offset + lo - state.num_computed_tokens
            logits = runner.model.compute_logits(hidden_states[begin : begin + hi - lo])
            if runner.model_config.logprobs_mode in ("raw_logits", "processed_logits"):
                scores = logits.to(torch.float32)
            else:
                scores = runner.sampler.compute_logprobs(logits)
            targets = torch.tensor(prompt[lo + 1 : hi + 1], dtype=torch.int64, device=scores.device)
            ids, logprobs, ranks, *_ = runner.sampler.gather_logprobs(scores, n_logprobs, targets)
            out = slice(lo - first_row, hi - first_row)
            buffer.logprob_token_ids[out].copy_(ids)
            buffer.logprobs[out].copy_(logprobs)
            buffer.selected_token_ranks[out].copy_(ranks)
        if last_chunk:
            done[req_id] = buffer
            runner.num_prompt_logprobs.pop(req_id, None)
            state.in_progress_prompt_logprobs_cpu = None
    return done


@contextlib.contextmanager
def scored_rows_only(active: bool) -> Iterator[bool]:
    """While active, requests carrying ROWS_ARG get prompt logprobs for their scored rows only.

    Yields whether the patch is in place (vLLM's runner has the method and fields it relies on).
    """
    try:
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    except ImportError:
        yield False
        return
    original = GPUModelRunner.__dict__.get("_get_prompt_logprobs_dict")
    if not active or original is None:
        yield False
        return

    def prompt_logprobs(self: Any, hidden_states: Any, num_scheduled_tokens: dict[str, int]) -> Any:
        pending = getattr(self, "num_prompt_logprobs", None)
        if not pending or any(not hasattr(self, name) for name in _NEEDED):
            return original(self, hidden_states, num_scheduled_tokens)
        mine = {r: n for r, n in pending.items() if scored_rows_of(self.requests.get(r)) is not None}
        for req_id in mine:
            del pending[req_id]
        try:
            result = original(self, hidden_states, num_scheduled_tokens)
        finally:
            pending.update(mine)
        result.update(_scored_rows(self, hidden_states, num_scheduled_tokens, mine))
        return result

    GPUModelRunner._get_prompt_logprobs_dict = prompt_logprobs  # type: ignore[method-assign]
    try:
        yield True
    finally:
        GPUModelRunner._get_prompt_logprobs_dict = original  # type: ignore[method-assign]
