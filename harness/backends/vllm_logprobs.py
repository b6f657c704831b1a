"""vLLM prompt logprobs as arrays: the scored rows of a scoring output, and the fast path that keeps
full-vocabulary prompt logprobs as tensors (see harness.backends.vllm's docstring)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from harness.backends import _common as common
from harness.backends.base import ScoreRequest, TokenScores
from harness.backends.vllm_rows import ROWS_ARG, scored_rows_only
from harness.errors import InfrastructureError


def _as_np(x: Any) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def _trailing_rows(out: Any, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, logprobs), each (n_rows, 1 + k), of the last n_rows prompt positions.

    Column 0 is the prompt token itself, columns 1.. the top-k by rank. Works on both the raw
    tensors of `_raw_prompt_logprobs` and vLLM's FlatLogprobs.
    """
    plp = out.prompt_logprobs
    raw = plp.__dict__.get("harness_raw") if plp is not None else None
    if raw:
        ids = np.concatenate([_as_np(t) for t, _ in raw])[-n_rows:]
        lps = np.concatenate([_as_np(v) for _, v in raw])[-n_rows:]
        if ids.shape[0] < n_rows:
            raise InfrastructureError(
                f"vllm returned {ids.shape[0]} prompt-logprob rows where {n_rows} are scored"
            )
        return ids.astype(np.int64), lps.astype(np.float32)
    if plp is None or not hasattr(plp, "start_indices"):
        raise InfrastructureError("vllm returned no prompt logprobs for a scoring request")
    first = len(plp.start_indices) - n_rows
    if first < 0:
        raise InfrastructureError(
            f"vllm returned {len(plp.start_indices)} prompt-logprob rows where {n_rows} are scored"
        )
    begin, end = plp.start_indices[first], plp.end_indices[-1]
    width, rem = divmod(end - begin, n_rows)
    if rem or plp.end_indices[first] - begin != width:
        raise InfrastructureError("vllm returned ragged prompt logprobs; cannot parse them")
    ids = np.asarray(plp.token_ids[begin:end], dtype=np.int64).reshape(n_rows, width)
    lps = np.asarray(plp.logprobs[begin:end], dtype=np.float32).reshape(n_rows, width)
    return ids, lps


def _token_scores(out: Any, req: ScoreRequest, vocab: int) -> TokenScores:
    n_rows = len(req.token_ids) - req.start
    ids, lps = _trailing_rows(out, n_rows)
    k = req.top_k
    scores = TokenScores(
        token_logprobs=lps[:, 0].copy(), topk_ids=ids[:, 1 : 1 + k], topk_logprobs=lps[:, 1 : 1 + k]
    )
    full = None
    if ids.shape[1] - 1 >= vocab:  # the whole vocabulary came back, in any order (_unsorted_full_rows)
        full = np.full((n_rows, vocab), -np.inf, dtype=np.float32)
        np.put_along_axis(full, ids[:, 1:], lps[:, 1:], axis=1)
        scores.topk_ids, scores.topk_logprobs = top_k_of(full, k)
        if req.full_vocab:
            scores.full_logprobs = full
    if req.target_ids is not None:
        targets = common.target_matrix(req.target_ids)
        direct = getattr(out, "prompt_token_id_logprobs", None)
        if direct is not None:
            scores.target_logprobs = _as_np(direct).astype(np.float32)[:, : targets.shape[1]]
        elif full is not None:
            picked = np.take_along_axis(full, np.maximum(targets, 0), axis=1)
            scores.target_logprobs = np.where(targets >= 0, picked, -np.inf).astype(np.float32)
    return scores


def top_k_of(full: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, logprobs), each (rows, k), of every row's k largest entries, largest first."""
    if k <= 0:
        return np.zeros((full.shape[0], 0), np.int64), np.zeros((full.shape[0], 0), np.float32)
    part = np.argpartition(-full, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(full, part, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64), np.take_along_axis(values, order, axis=1)


@contextlib.contextmanager
def _unsorted_full_rows(active: bool) -> Iterator[bool]:
    """While active, a request for the whole vocabulary's logprobs gets them in token-id order.

    vLLM's Sampler.gather_logprobs ranks the top `num_logprobs` tokens with torch.topk; asked for the
    whole vocabulary that is a full sort of every row of every prompt position, the context's
    included, and it was a fifth of a KD run (py-spy of bench_engine's nightly setup: 17.5 of 89 s).
    Here such a request gets the rows as they are (ids 0..V-1) and `_token_scores` ranks only the
    rows it keeps. Smaller requests (a top-k, sampled-token logprobs) go through vLLM's own code.
    """
    try:
        import torch
        from vllm.v1.outputs import LogprobsTensors
        from vllm.v1.sample.sampler import Sampler
    except ImportError:
        yield False
        return
    original = Sampler.__dict__.get("gather_logprobs")
    if not active or not isinstance(original, staticmethod):
        yield False
        return

    def gather(logprobs: Any, num_logprobs: Any, token_ids: Any) -> Any:
        vocab = logprobs.shape[-1]
        if num_logprobs is None or num_logprobs < vocab:
            return original.__func__(logprobs, num_logprobs, token_ids)
        chosen = token_ids.unsqueeze(-1)
        chosen_logprobs = logprobs.gather(-1, chosen)
        ranks = (logprobs >= chosen_logprobs).sum(-1)  # vLLM's rank: 1 for the most likely token
        every = torch.arange(vocab, device=logprobs.device, dtype=torch.int64).expand(
            logprobs.shape[0], vocab
        )
        ids = torch.cat((chosen, every), dim=1).to(torch.int32)
        return LogprobsTensors(ids, torch.cat((chosen_logprobs, logprobs), dim=1), ranks)

    Sampler.gather_logprobs = staticmethod(gather)  # type: ignore[method-assign]
    try:
        yield True
    finally:
        Sampler.gather_logprobs = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _raw_prompt_logprobs(active: bool) -> Iterator[bool]:
    """While active, full-vocabulary prompt logprobs are kept as tensors (see the module docstring).

    Yields whether the fast path is in place. It applies only to requests that asked for
    `prompt_logprobs=-1` with `flat_logprobs=True` and `detokenize=False`, which only this backend
    sends; everything else goes through vLLM's own code.
    """
    try:
        from vllm.logprobs import FlatLogprobs
        from vllm.v1.engine.logprobs import LogprobsProcessor
    except ImportError:
        yield False
        return
    original = getattr(LogprobsProcessor, "_update_prompt_logprobs", None)
    original_new = getattr(LogprobsProcessor, "from_new_request", None)
    if not active or original is None or original_new is None:
        yield False
        return

    def new(cls: Any, tokenizer: Any, request: Any) -> Any:
        processor = original_new.__func__(cls, tokenizer, request)
        extra = getattr(request.sampling_params, "extra_args", None) or {}
        if isinstance(processor.prompt_logprobs, FlatLogprobs) and ROWS_ARG in extra:
            processor.prompt_logprobs.__dict__[ROWS_ARG] = int(extra[ROWS_ARG])
        return processor

    def update(self: Any, tensors: Any) -> None:
        plp = self.prompt_logprobs
        if self.num_prompt_logprobs == -1 and self.tokenizer is None and isinstance(plp, FlatLogprobs):
            token_ids, logprobs = tensors[0], tensors[1]
            # only the rows the request scores: the rest (its context's positions) is never copied
            rows = plp.__dict__.get(ROWS_ARG) or token_ids.shape[0]
            chunks = plp.__dict__.setdefault("harness_raw", [])
            chunks.append((token_ids[-rows:].clone(), logprobs[-rows:].clone()))
            return
        original(self, tensors)

    LogprobsProcessor._update_prompt_logprobs = update  # type: ignore[method-assign,assignment]
    LogprobsProcessor.from_new_request = classmethod(new)  # type: ignore[method-assign,assignment]
    try:
        with _unsorted_full_rows(True), scored_rows_only(True):
            yield True
    finally:
        LogprobsProcessor._update_prompt_logprobs = original  # type: ignore[method-assign]
        LogprobsProcessor.from_new_request = original_new  # type: ignore[method-assign]
